"""The tempo estimator on a corpus's labelled loops and pieces (first 10 s, every split), by their tempo.

    .venv/bin/python scripts/diag/tempo_by_bpm.py [CORPUS]   (default data/corpus)

Prints, per tempo band, how often ``sa3.eval.music.estimate_tempo`` reads the clip's own bpm
tag within 4 %, and up to an octave: the ceiling a generated take at that tempo is judged against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sa3.eval import music
from sa3core import timebase
from sa3core.audio import load_audio

BANDS = ((0, 80, "<= 80"), (80, 100, "81-100"), (100, 130, "101-130"), (130, 1000, "> 130"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default="data/corpus")
    args = parser.parse_args()
    folder = Path(args.corpus)
    with open(folder / "manifest.jsonl") as manifest:
        rows = [json.loads(line) for line in manifest]
    rows = [r for r in rows if r["tags"].get("bpm") and r["tags"]["kind"] in ("loop", "music")]
    counts = {label: [0, 0, 0] for _, _, label in BANDS}  # clips, within 4 %, up to an octave
    for row in rows:
        audio = load_audio(folder / row["path"])[:, : timebase.seconds_to_samples(10.0)]
        target, found = row["tags"]["bpm"], music.estimate_tempo(audio)
        label = next(label for low, high, label in BANDS if low < target <= high)
        counts[label][0] += 1
        counts[label][1] += music.tempo_correct(found, target)
        counts[label][2] += music.tempo_correct(found, target, octave_errors=True)
    for label, (clips, exact, octave) in counts.items():
        if clips:
            print(
                f"{label:>8} bpm: {clips:4d} clips, within 4 % {exact / clips:.0%}, up to an octave {octave / clips:.0%}"
            )


if __name__ == "__main__":
    main()
