"""How far sa3's default precision moves the audio from its ``--fp32`` audio: ``python -m bench.precision``.

    python -m bench.precision [--model DIR] [--seconds 10 30] [--write-docs]

sa3's default on a CPU with native bf16 runs the released DiT's matmuls in bf16 (under autocast,
from bf16 weight copies) and SAME's encoder and decoder blocks in bf16; on an x86 CPU without native
bf16 it runs the text encoder in float32 instead of the official (emulated, slow) bf16, the DiT's
block linears in int8 (:mod:`sa3core.modules.int8`) and everything else as ``--fp32``. ``--fp32`` is what the parity tests hold to the official audio. For each length this bench
makes the same take (prompt, seed 0, 8 steps) both ways and compares them over the request:

- ``corr``: Pearson correlation of the two takes' samples (1 = identical shape);
- ``max |diff|``: largest sample difference (full scale 1);
- ``log-mel L1``: mean |log10 mel(fp32) - log10 mel(default)| (:func:`sa3.eval.metrics.log_mel_l1`,
  the distance ``sa3 eval`` reports), in log10 units: 0.01 is a 2.3 % level change per band.

For scale, the same measures between the float32 take and the float32 take of the next seed (a
different take of the same prompt) come with each row: a precision change should sit orders of
magnitude below it. The ``decode`` rows compare SAME's decode alone (the same random latents and
noise seed; for scale, other random latents) to separate the autoencoder's share. The default checkpoint holds random weights of
the released small shapes (:mod:`bench.released_shapes`; nothing is downloaded), so what the
figures bound is numerical drift, not how a trained model's music sounds; ``--embedded`` adds the
same rows for sa3's embedded default model, whose weights are trained.

``--write-docs`` replaces the precision table in docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import common

PROMPT = "deep house groove with warm chords and a rolling bassline, 122 BPM"


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """corr, max |diff| and log-mel L1 of two takes [channels, samples] (or [1, channels, samples])."""
    from sa3.eval.metrics import log_mel_l1

    reference, other = np.asarray(reference), np.asarray(other)
    reference, other = reference.reshape(-1, reference.shape[-1]), other.reshape(-1, other.shape[-1])
    corr = float(np.corrcoef(reference.ravel(), other.ravel())[0, 1])
    return {
        "corr": corr,
        "max_abs": float(np.abs(reference - other).max()),
        "log_mel_l1": float(log_mel_l1(reference, other)),
    }


def released_rows(model: Path, label: str, seconds: list[float], steps: int) -> list[dict]:
    from sa3core.families.released import padded_frames
    from sa3core.pipeline import Pipeline
    from sa3core.timebase import seconds_to_samples

    fast, exact = Pipeline.load(model), Pipeline.load(model, bf16=False)
    default = default_label(fast.backend)
    rows = []
    for length in seconds:
        n = seconds_to_samples(length)
        ref = exact.generate(PROMPT, n, steps=steps, seed=0)[0]
        other = exact.generate(PROMPT, n, steps=steps, seed=1)[0]
        ours = fast.generate(PROMPT, n, steps=steps, seed=0)[0]
        rows.append({"model": label, "default": default, "part": "end to end", "seconds": length, **compare(ref, ours),
                     **{f"other_take_{k}": v for k, v in compare(ref, other).items()}})  # fmt: skip
        frames = padded_frames(n, fast.settings)  # what generate decodes for this request
        latents = torch.randn(1, fast.backend.latent_channels, frames, generator=torch.Generator().manual_seed(0))
        ref = exact.backend.decode_latents(latents, torch.Generator().manual_seed(1))[0].numpy()
        ours = fast.backend.decode_latents(latents, torch.Generator().manual_seed(1))[0].numpy()
        others = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))  # other latents
        other = exact.backend.decode_latents(others, torch.Generator().manual_seed(1))[0].numpy()
        rows.append({"model": label, "default": default, "part": "decode", "seconds": length,
                     **compare(ref[..., :n], ours[..., :n]),
                     **{f"other_take_{k}": v for k, v in compare(ref[..., :n], other[..., :n]).items()}})  # fmt: skip
        print(_line(rows[-2]), _line(rows[-1]), sep="\n", flush=True)
    return rows


def default_label(backend) -> str:
    """What sa3's default precision is on this CPU for a released backend, against ``--fp32``."""
    if backend.bf16:
        return "bf16 DiT matmuls and SAME blocks"
    if backend.int8:
        return "int8 DiT block and SAME transformer linears (rows scaled one by one, rotated), float32 text"
    return "float32 text (no native bf16: emulated bf16 text is slow); DiT and SAME float32 as --fp32"


def embedded_rows(seconds: list[float]) -> list[dict]:
    from sa3core.pipeline import Pipeline, default_model_dir
    from sa3core.timebase import seconds_to_samples

    folder = default_model_dir()
    fast, exact = Pipeline.load(folder, bf16=True), Pipeline.load(folder, bf16=False)
    rows = []
    for length in seconds:
        n = seconds_to_samples(length)
        ref = exact.generate(PROMPT, n, seed=0)[0]
        other = exact.generate(PROMPT, n, seed=1)[0]
        ours = fast.generate(PROMPT, n, seed=0)[0]
        rows.append({"model": "embedded default", "default": "bf16", "part": "end to end", "seconds": length, **compare(ref, ours),
                     **{f"other_take_{k}": v for k, v in compare(ref, other).items()}})  # fmt: skip
        print(_line(rows[-1]), flush=True)
    return rows


def _line(row: dict) -> str:
    return (
        f"{row['model']:<20} {row['part']:<10} {row['seconds']:>5g} s  corr {row['corr']:.6f}  max {row['max_abs']:.4f}"
        f"  log-mel {row['log_mel_l1']:.4f}   (next seed: corr {row['other_take_corr']:.3f},"
        f" log-mel {row['other_take_log_mel_l1']:.3f})"
    )


def markdown(rows: list[dict], info: dict, threads: int) -> str:
    lines = [
        f"Machine: {info['cpu_model']}, {info['physical_cores']} cores, {threads} torch threads, torch {info['torch']}, "
        f"load {info['load_average']} at the start. Same prompt, seed 0, the model's default steps; "
        f"`sa3` default precision ({rows[0]['default']}) against `--fp32`, over the request.",
        "",
        "| model | part | length | corr | max abs diff | log-mel L1 | next seed's take: corr / log-mel L1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['part']} | {r['seconds']:g} s | {r['corr']:.6f} | {r['max_abs']:.4f} | "
            f"{r['log_mel_l1']:.4f} | {r['other_take_corr']:.3f} / {r['other_take_log_mel_l1']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = common.parser("precision", __doc__)
    p.add_argument("--model", type=Path, help="released-layout folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--seconds", type=float, nargs="+", default=None, help="lengths (default 10 30; --quick 2)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--embedded", action="store_true", help="also sa3's embedded default model")
    p.add_argument("--write-docs", action="store_true", help="replace the table in docs/benchmarks.md")
    args = p.parse_args()
    threads = common.set_threads(args.threads)
    seconds = args.seconds or ([2.0] if args.quick else [10.0, 30.0])
    if args.model is None:
        from .released_shapes import build

        model, label = build("small", common.REPO / args.shapes_dir), "released small shapes (random)"
    else:
        model, label = args.model, args.model.name
    info = common.machine()
    rows = released_rows(model, label, seconds, args.steps)
    if args.embedded:
        rows += embedded_rows(seconds)
    path = common.write_json(args.out, "precision", rows, info, model=str(model))
    text = markdown(rows, info, threads)
    common.publish("precision", text, path, args.write_docs, per_cpu_class=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
