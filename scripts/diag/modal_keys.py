"""How much of the generated audio's pitch-class energy lies in the scale a modal prompt names.

    .venv/bin/python scripts/diag/modal_keys.py [--corpus data/corpus] [--seeds 3] [--seconds 8]

`sa3 eval`'s key estimator only knows major and minor keys, so modal prompts ("in E phrygian",
"A dorian", "C# harmonic minor") get another measure: the share of the chroma energy
(sa3.eval.music.chroma_profile, 55 Hz - 1 kHz) on the seven pitch classes of the named scale.
A flat chroma gives 7/12 = 0.58. Rows: the corpus's held-out (test + valid) clips whose tags name a
mode other than major/minor, then generations from their captions (first --seconds, --seeds
seeds each) with the model's scale lock and with the lock off.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sa3.eval import music
from sa3core import musical
from sa3core.pipeline import Pipeline


def in_scale(audio: np.ndarray, tonic: int, mode: str) -> float:
    profile = music.chroma_profile(audio)
    pitches = [(tonic + step) % 12 for step in musical.SCALES[mode]]
    total = float(profile.sum())
    return float(profile[pitches].sum() / total) if total > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in (Path(args.corpus) / "manifest.jsonl").read_text().splitlines()]
    rows = [
        r for r in rows if r["split"] in ("test", "valid") and r["tags"].get("mode") not in (None, "major", "minor")
    ]
    pipeline = Pipeline.load()
    samples = round(args.seconds * 44_100)
    results: dict[str, list[float]] = {"real": [], "locked": [], "unlocked": []}
    for row in rows:
        tonic, mode = musical.pitch_class(row["tags"]["key"]), row["tags"]["mode"]
        audio, _ = sf.read(str(Path(args.corpus) / row["path"]), dtype="float32", always_2d=True)
        results["real"].append(in_scale(audio.T[:, :samples], tonic, mode))
        line = [f"{row['tags']['key']} {mode}: real {results['real'][-1]:.2f}"]
        for name, lock in (("locked", None), ("unlocked", 0.0)):
            values = []
            for seed in range(args.seeds):
                generated = pipeline.generate(row["caption"], samples, seed=seed, scale_lock_db=lock)[0]
                values.append(in_scale(generated, tonic, mode))
            results[name].extend(values)
            line.append(f"{name} {np.mean(values):.2f}")
        print(", ".join(line), flush=True)
    print(
        f"{len(rows)} modal clips; share of chroma energy in the named scale (flat: 0.58): "
        + ", ".join(f"{k} {np.nanmean(v):.3f} (n={len(v)})" for k, v in results.items())
    )


if __name__ == "__main__":
    main()
