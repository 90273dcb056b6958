"""A released model on the onnx backend against the torch backend: peak memory and time of one
DiT step and of one SAME decode, per length. ``python -m bench.released_onnx``.

    python -m bench.released_onnx --model runs/shapes-small [--lengths 10 30 120]
        [--backends onnx torch-fp32] [--parts step decode] [--repeats 2] [--sequence 10 120 10 30]
        [--threads N]

``--model`` is a released folder whose ``onnx/`` holds its export (``sa3 export onnx --model
FOLDER -o FOLDER/onnx``), or an export folder itself; ``runs/shapes-small`` (random weights of
the released small model's shapes, ``python -m bench.released_shapes small runs/shapes-small``)
has the real sizes. ``--threads`` sets torch's and onnxruntime's intra-op threads alike.

Each (backend, part, length) runs in a fresh child process that loads the backend, reports its
peak resident set (VmHWM) once loaded, runs the part once and reports the peak again, then
times ``--repeats`` more runs (median). ``peak - loaded`` is what the part itself needed: flat
in the length for the windowed SAME decode, linear (the activations, not the weights) for the
DiT step (its attention is onnxruntime's flash attention: no [B, H, N, N] scores). ``--sequence``
runs one process through several lengths and reports its resident memory after each (what a
long-lived daemon holds: no growth from shape to shape, since the sessions plan no memory
pattern and keep no arena). Lengths are the request's seconds; the DiT sees the released padded
length (seconds + 6 s, in frames).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import common

LENGTHS = [10.0, 30.0, 120.0]
BACKENDS = ["onnx", "torch-fp32"]
PARTS = ["step", "decode"]


def load(backend_name: str, folder: str, threads: int):
    """-> (backend, settings); ``threads`` intra-op threads for torch and onnxruntime alike."""
    import torch

    from sa3core.families.released import ReleasedFamily

    if backend_name == "onnx":
        return ReleasedFamily().load(Path(folder), backend="onnx", threads=threads)
    bf16 = backend_name == "torch-bf16"
    return ReleasedFamily().load(Path(folder), bf16=bf16, text_dtype=torch.float32)


def part_run(backend, settings, part: str, seconds: float):
    """-> (frames, a function running ``part`` once at ``seconds``)."""
    import torch

    from sa3core import timebase
    from sa3core.families.released import padded_frames

    samples = timebase.seconds_to_samples(seconds)
    gen = torch.Generator().manual_seed(0)
    if part == "step":
        frames = padded_frames(samples, settings)
        context = torch.randn(1, 257, backend.diffusion.config.cond_token_dim, generator=gen)
        cond = backend.condition(context, torch.randn(1, backend.diffusion.config.global_cond_dim, generator=gen))
        x = torch.randn(1, backend.latent_channels, frames, generator=gen)
        mask = torch.ones(1, frames, dtype=torch.bool)
        return frames, lambda: backend.velocity(x, torch.tensor([0.7]), cond, None, mask)
    frames = timebase.samples_to_frames(samples)
    latents = torch.randn(1, backend.latent_channels, frames, generator=gen)
    return frames, lambda: backend.decode_latents(latents, torch.Generator().manual_seed(1))


def child(backend_name: str, folder: str, part: str, seconds: str, repeats: int, threads: int) -> None:
    backend, settings = load(backend_name, folder, threads)
    loaded = common.peak_rss_mib()
    if "," in seconds:  # --sequence: one process through several lengths, resident memory after each
        steps = []
        for length in (float(s) for s in seconds.split(",")):
            frames, run = part_run(backend, settings, part, length)
            run()
            steps.append({"seconds": length, "frames": frames, "rss_mib": round(common.status_mib("VmRSS") or float("nan"), 1),
                          "peak_mib": round(common.peak_rss_mib(), 1)})  # fmt: skip
        print(json.dumps({"loaded_mib": round(loaded, 1), "sequence": steps}))
        return
    frames, run = part_run(backend, settings, part, float(seconds))
    started = time.perf_counter()
    run()
    first = time.perf_counter() - started
    peak = common.peak_rss_mib()
    timing = common.measure(run, repeats=repeats, warmup=0)
    print(
        json.dumps(
            {
                "frames": frames,
                "loaded_mib": round(loaded, 1),
                "peak_mib": round(peak, 1),
                "first_s": round(first, 3),
                "wall_s": round(timing.wall_s, 3),
                "cpu_s": round(timing.cpu_s, 3),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = common.parser("released_onnx", __doc__)
    p.add_argument("--model", default="runs/shapes-small", help="a released folder with its export in onnx/")
    p.add_argument("--lengths", nargs="+", type=float, default=LENGTHS, help=f"seconds (default {LENGTHS})")
    p.add_argument("--backends", nargs="+", default=BACKENDS, help=f"of onnx, torch-fp32, torch-bf16 ({BACKENDS})")
    p.add_argument("--parts", nargs="+", default=PARTS, help=f"step and/or decode (default {PARTS})")
    p.add_argument("--sequence", nargs="+", type=float, help="one process through these lengths: RSS after each")
    p.add_argument("--child", nargs=3, metavar=("BACKEND", "PART", "SECONDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        threads = common.set_threads(args.threads)
        child(args.child[0], args.model, args.child[1], args.child[2], args.repeats or 2, threads)
        return 0
    if args.sequence:
        for part in args.parts:
            for backend in args.backends:
                lengths = ",".join(f"{s:g}" for s in args.sequence)
                child_args = ["--child", backend, part, lengths, "--model", args.model, "--threads", str(args.threads)]
                _, stdout = common.run_child("bench.released_onnx", child_args)
                print(f"{part} {backend} one process through {lengths} s: {stdout.strip().splitlines()[-1]}")
        return 0
    info = common.machine()
    print(common.describe(info), flush=True)
    rows = []
    for part in args.parts:
        for backend in args.backends:
            for seconds in args.lengths:
                child_args = ["--child", backend, part, str(seconds), "--model", args.model]
                child_args += ["--repeats", str(args.repeats or 2), "--threads", str(args.threads)]
                _, stdout = common.run_child("bench.released_onnx", child_args)
                report = json.loads(stdout.strip().splitlines()[-1])
                row = {"part": part, "backend": backend, "seconds": seconds, **report}
                row["part_mib"] = round(report["peak_mib"] - report["loaded_mib"], 1)
                row["load_average"] = common.load_average()
                rows.append(row)
                print(f"  {part} {backend} {seconds:g} s: {row['part_mib']:.0f} MiB, {row['wall_s']:.2f} s", flush=True)
    print(
        common.table(
            rows,
            [
                ("part", "part", ""),
                ("backend", "backend", ""),
                ("seconds", "audio s", "g"),
                ("frames", "frames", "d"),
                ("loaded_mib", "loaded MiB", ".0f"),
                ("peak_mib", "peak MiB", ".0f"),
                ("part_mib", "peak - loaded", ".0f"),
                ("wall_s", "wall s", ".2f"),
            ],
        )
    )
    out = common.write_json(args.out, "released_onnx", rows, info, settings=vars(args))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
