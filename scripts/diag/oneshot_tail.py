"""How one-shot takes end with the last frames held at silence (the one-shot tail), per tail length.

    .venv/bin/python scripts/diag/oneshot_tail.py [--corpus data/corpus] [--split valid]
        [--seeds 0,1,2,3,4] [--tails 0,0.1,0.2]

For each one-shot caption of the split (at its clip's length) and each seed, one take per tail
length (``Pipeline.generate(tail_seconds=)``; 0 = none). Rows per tail: clean endings as `sa3 eval`
judges them (the last 100 ms 50 dB under the loudest 50 ms), key hits on the keyed captions, and
how far the sound has decayed before the silence: the level of the 50 ms before the first held
frame relative to the loudest 50 ms (median and quartiles), with the real clips' level at the
same place (for tail 0, measured where 0.1 s would start). docs/notes/2026-12-03-one-shot-tail.md
quotes its numbers.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from sa3.eval import runner
from sa3.eval.metrics import one_shot_ending
from sa3.eval.runner import EvalSettings
from sa3core import timebase
from sa3core.families.sa3 import tail_frames
from sa3core.pipeline import Pipeline

WINDOW = timebase.seconds_to_samples(0.05)


def _db(audio: np.ndarray) -> float:
    return 10.0 * math.log10(max(float(np.mean(audio.astype(np.float64) ** 2)), 1e-20))


def level_before(audio: np.ndarray, boundary: int) -> float:
    """dB of the 50 ms before ``boundary`` relative to the loudest 50 ms of the take."""
    loudest = max(_db(audio[:, i : i + WINDOW]) for i in range(0, max(1, audio.shape[1] - WINDOW), WINDOW // 2))
    return _db(audio[:, max(0, boundary - WINDOW) : boundary]) - loudest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--tails", default="0,0.1,0.2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    tails = [float(t) for t in args.tails.split(",")]
    clips = runner._manifest_clips(EvalSettings(corpus=args.corpus, split=args.split, items=10_000))
    pairs = [(clip, case) for clip, case in zip(clips, runner.cases_from_clips(clips, 10.0)) if case.one_shot]
    pipeline = Pipeline.load(None)
    stats = {t: {"clean": 0, "key": [0, 0], "before": [], "real": []} for t in tails}
    for clip, case in pairs:
        for tail in tails:
            held = tail_frames(tail or 0.1, case.samples)
            boundary = (timebase.samples_to_frames(case.samples) - held) * timebase.SAMPLES_PER_FRAME
            stats[tail]["real"].append(level_before(clip.audio[:, : case.samples], boundary))
            for seed in seeds:
                audio = pipeline.generate(case.prompt, case.samples, seed=seed, tail_seconds=tail)[0]
                judged = runner._judge(audio, case)
                if judged.get("key_correct") is not None:
                    stats[tail]["key"][0] += bool(judged["key_correct"])
                    stats[tail]["key"][1] += 1
                stats[tail]["clean"] += one_shot_ending(audio).clean
                stats[tail]["before"].append(level_before(audio, boundary))
    takes = len(pairs) * len(seeds)
    print(f"{len(pairs)} one-shot captions in {args.split!r}, seeds {args.seeds}")
    for tail, s in stats.items():
        before, real = np.array(s["before"]), np.array(s["real"])
        print(
            f"tail {tail:g} s: clean {s['clean']}/{takes}, key {s['key'][0]}/{s['key'][1]}; 50 ms before the "
            f"silence: median {np.median(before):.1f} dB [{np.percentile(before, 25):.1f}, "
            f"{np.percentile(before, 75):.1f}] (real clips {np.median(real):.1f})"
        )


if __name__ == "__main__":
    main()
