"""How loud a model's takes come out against the real clips they are prompted from, per kind.

    .venv/bin/python scripts/diag/student_level.py MODEL_DIR [MODEL_DIR ...] [--corpus data/corpus]
        [--split valid] [--items 24] [--seeds 0,1] [--runs SAMPLER:STEPS,...]

For the first ``--items`` captions of the split (at their clips' lengths, at most 10 s) and each
seed, one take per model (and per ``SAMPLER:STEPS`` override of its model.json, e.g.
``pingpong:4,dpmpp:8``). Rows: the median level (RMS dBFS over the take) of the takes and of
the real clips, per kind, the takes' level minus their clip's (median), and how many takes are
near-silent (under -50 dBFS). The distilled students of earlier runs made near-silent drums and
one-shots; this is the check that a student keeps the teacher's levels.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from sa3.eval import runner
from sa3.eval.runner import EvalSettings
from sa3core.pipeline import Pipeline


def rms_dbfs(audio: np.ndarray) -> float:
    return 10.0 * math.log10(max(float(np.mean(audio.astype(np.float64) ** 2)), 1e-20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", default="", help="SAMPLER:STEPS overrides of model.json, comma-separated")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    clips = runner._manifest_clips(EvalSettings(corpus=args.corpus, split=args.split, items=args.items))
    cases = runner.cases_from_clips(clips, 10.0)
    runs = [tuple(r.split(":")) for r in args.runs.split(",") if r] or [(None, None)]
    for folder in args.models:
        for sampler, steps in runs:
            pipeline = Pipeline.load(folder)
            if sampler is not None:
                pipeline.settings.sampler = sampler
            rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for clip, case in zip(clips, cases):
                kind = (clip.tags or {}).get("kind", "?")
                real = rms_dbfs(clip.audio[:, : case.samples])
                for seed in seeds:
                    take = pipeline.generate(
                        case.prompt, case.samples, seed=seed, steps=None if steps is None else int(steps)
                    )[0]
                    level = rms_dbfs(take)
                    for group in (kind, "all"):
                        rows[group]["take"].append(level)
                        rows[group]["real"].append(real)
                        rows[group]["diff"].append(level - real)
            name = (
                f"{folder} {pipeline.settings.sampler}:{steps or pipeline.settings.steps} cfg {pipeline.settings.cfg:g}"
            )
            print(name)
            for group, r in sorted(rows.items()):
                take = np.array(r["take"])
                print(
                    f"  {group:9s} takes {len(take):3d}: median {np.median(take):6.1f} dBFS (real {np.median(r['real']):6.1f}), "
                    f"take - clip {np.median(r['diff']):+5.1f} dB, under -50 dBFS {int((take < -50).sum())}"
                )


if __name__ == "__main__":
    main()
