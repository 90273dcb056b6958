"""Peak resident memory of one generation per backend and length: ``python -m bench.memory``.

Each (backend, length) runs in a fresh ``python -m bench.memory --child ...`` process, which
loads the model, generates once and reports its own peak resident set size (VmHWM, see
bench/common.py: ``ru_maxrss`` would include this parent's peak) before generating (imports +
model) and after, so ``peak - loaded`` is what the generation itself needed.

Backends: ``torch-fp32`` and ``torch-bf16`` (random weights of ``--preset``, or ``--model``: a
model folder of any family, a released name, or ``released-small`` / ``released-medium`` for random
weights of the released shapes) and ``onnx`` when ``--onnx FOLDER`` names an export (``sa3 export
onnx``; its model is the export's, whatever the preset); ``same-decode`` decodes random latents
with a released ``--model``'s SAME alone (windowed as released: its peak should not grow with length). Peak memory does not depend on the number of steps (every step does the same
work on the same shapes), so the default is 1 step to keep the long lengths affordable.
"""

from __future__ import annotations

import argparse
import json
import time

from sa3core import timebase

from . import common

LENGTHS = [10.0, 60.0, 380.0]
BACKENDS = ["torch-fp32", "torch-bf16"]


def child(backend: str, preset: str, seconds: float, steps: int, onnx: str | None, threads: int) -> None:
    """In the fresh process: load, generate once (``same-decode``: decode only), print one JSON line.

    ``preset`` is a random preset's name, or ``model:FOLDER`` for a model folder of any family."""
    from sa3core.pipeline import Pipeline

    common.set_threads(threads)
    folder = preset[len("model:") :] if preset.startswith("model:") else None
    if backend == "same-decode":
        return decode_child(folder, seconds)
    if backend == "onnx":
        pipeline = Pipeline.load(onnx, backend="onnx")
    elif folder is not None:
        pipeline = Pipeline.load(folder, bf16=backend == "torch-bf16")
    else:
        pipeline = Pipeline.random(preset, seed=0, text_encoder="hash", bf16=backend == "torch-bf16")
    loaded = common.peak_rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    audio = pipeline.generate("a bench prompt", timebase.seconds_to_samples(seconds), steps=steps)
    report = {
        "peak_mib": round(common.peak_rss_mib(), 1),
        "loaded_peak_mib": round(loaded, 1),
        "generate_wall_s": round(time.perf_counter() - started, 3),
        "generate_cpu_s": round(time.process_time() - cpu, 3),
        "samples": int(audio.shape[-1]),
    }
    print(json.dumps(report))


def decode_child(folder: str | None, seconds: float) -> None:
    """A released SAME decoding ``seconds`` of random latents, windowed as released (flat memory)."""
    import torch

    from sa3core.released.checkpoint import load_autoencoder

    if folder is None:
        raise SystemExit("same-decode needs --model (a released folder)")
    autoencoder, _ = load_autoencoder(folder)
    loaded = common.peak_rss_mib()
    frames = -(-timebase.seconds_to_samples(seconds) // timebase.SAMPLES_PER_FRAME)
    latents = torch.randn(1, autoencoder.config.latent_dim, frames, generator=torch.Generator().manual_seed(0))
    started, cpu = time.perf_counter(), time.process_time()
    audio = autoencoder.decode(latents, torch.Generator().manual_seed(1))
    report = {
        "peak_mib": round(common.peak_rss_mib(), 1),
        "loaded_peak_mib": round(loaded, 1),
        "generate_wall_s": round(time.perf_counter() - started, 3),
        "generate_cpu_s": round(time.process_time() - cpu, 3),
        "samples": int(audio.shape[-1]),
    }
    print(json.dumps(report))


def resolve_model(name: str) -> str:
    """``--model``: ``released-small`` / ``released-medium`` (random weights of the released shapes,
    built once under runs/), a model folder, or a released name from the Hugging Face cache."""
    if name.startswith("released-"):
        from .released_shapes import build

        return str(build(name[len("released-") :], common.REPO / "runs" / f"shapes-{name[len('released-') :]}"))
    from sa3core.hub import resolve_model as resolve

    return str(resolve(name))


def main(argv: list[str] | None = None) -> int:
    p = common.parser("memory", __doc__)
    p.add_argument("--preset", default=None, help="random model preset (default small; --quick: tiny)")
    p.add_argument("--lengths", nargs="+", type=float, default=None, help=f"seconds (default {LENGTHS})")
    p.add_argument("--backends", nargs="+", default=None, help=f"default {BACKENDS} (+ onnx with --onnx)")
    p.add_argument("--onnx", help="an ONNX export folder for the onnx backend")
    p.add_argument(
        "--model",
        help="a model folder or released name instead of a random preset; released-small / released-medium: "
        "random weights of the released shapes (built under runs/); backend same-decode: its SAME decoding alone",
    )
    p.add_argument("--steps", type=int, default=1, help="sampler steps (peak memory does not depend on them)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child process")
    p.add_argument("--child", nargs=3, metavar=("BACKEND", "PRESET", "SECONDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], float(args.child[2]), args.steps, args.onnx, args.threads)
        return 0
    common.set_threads(args.threads)  # for the machine description; each child sets its own
    preset = args.preset or ("tiny" if args.quick else "small")
    if args.model:
        preset = "model:" + resolve_model(args.model)
    lengths = args.lengths or ([1.0, 4.0] if args.quick else LENGTHS)
    backends = args.backends or (BACKENDS + (["onnx"] if args.onnx else []))
    info = common.machine()
    print(common.describe(info), flush=True)
    rows = []
    for backend in backends:
        for seconds in lengths:
            extra = ["--onnx", args.onnx] if args.onnx else []
            child_args = ["--child", backend, preset, str(seconds), "--steps", str(args.steps)]
            upper_bound, stdout = common.run_child(
                "bench.memory", child_args + ["--threads", str(args.threads)] + extra, args.timeout
            )
            report = json.loads(stdout.strip().splitlines()[-1])
            row = {
                "backend": backend,
                "preset": "export" if backend == "onnx" else (args.model or preset),
                "seconds": seconds,
                "steps": args.steps,
                **report,
                "ru_maxrss_mib": round(upper_bound, 1),
            }
            row["generation_mib"] = round(report["peak_mib"] - report["loaded_peak_mib"], 1)
            rows.append(row)
            print(f"  {backend} {seconds:g} s: peak {report['peak_mib']:.0f} MiB", flush=True)
    print(
        common.table(
            rows,
            [
                ("backend", "backend", ""),
                ("preset", "model", ""),
                ("seconds", "audio s", "g"),
                ("loaded_peak_mib", "loaded MiB", ".0f"),
                ("peak_mib", "peak MiB", ".0f"),
                ("generation_mib", "peak - loaded", ".0f"),
                ("generate_cpu_s", "cpu s", ".1f"),
            ],
        )
    )
    settings = {"preset": preset, "lengths": lengths, "backends": backends, "steps": args.steps, "onnx": args.onnx}
    out = common.write_json(args.out, "memory", rows, info, settings=settings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
