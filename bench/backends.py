"""onnxruntime vs torch eager vs torch.compile: DiT step and SAME decoder, median wall time.

    python -m bench.backends [--presets tiny small] [--seconds 10 60] [--repeats 5]
        [--memory-seconds 10 60 380] [--json bench-backends.json]

For each preset (random weights) the parts are exported once to a temporary folder (ONNX, no
self-check), then timed in this one process: torch eager, ``torch.compile(dynamic=True)`` and
onnxruntime (the backend's session settings). Peak memory of ORT decoding (chunked, as the
backend runs it) is measured in a fresh subprocess per length from ``ru_maxrss``. The machine
may be shared: medians of ``--repeats`` runs after one warm-up.
"""

# ruff: noqa: B023  (each timing lambda runs inside the loop iteration that defines it)

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from sa3core import timebase


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up (compilation, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_preset(preset: str, seconds_list, repeats: int, threads: int, variants=("torch", "compile", "onnx")):
    from export.onnx_export import export_onnx
    from sa3core.onnx_backend import OnnxBackend
    from sa3core.pipeline import Pipeline

    torch.set_num_threads(threads)
    pipeline = Pipeline.random(preset, seed=0, text_encoder="hash")
    same, dit = pipeline.backend.autoencoder, pipeline.backend.dit
    folder = Path(tempfile.mkdtemp(prefix=f"sa3-bench-{preset}-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(same, dit, pipeline.settings, folder, force=True, check=False, progress=lambda _: None)
    onnx = OnnxBackend(folder, threads=threads)
    tokens, mask = pipeline.backend.encode_text(["warm analog pad"])
    compiled_dit = torch.compile(dit, dynamic=True)
    compiled_decode = torch.compile(same._decode_frames, dynamic=True)
    rows = []
    for seconds in seconds_list:
        frames = timebase.samples_to_frames(timebase.seconds_to_samples(seconds))
        x, t = torch.randn(1, timebase.LATENT_CHANNELS, frames), torch.tensor([0.7])
        keep, frame_mask = torch.zeros(1, 1, frames), torch.ones(1, frames, dtype=torch.bool)
        with torch.inference_mode():
            cond = dit.encode_condition(tokens, mask, torch.tensor([float(seconds)]))
        onnx_cond = onnx.condition(tokens, mask, torch.tensor([float(seconds)]))
        latents = torch.randn(1, timebase.LATENT_CHANNELS, frames)

        def chunked(decode):
            return lambda: same._chunked(decode, latents, frames, 1, timebase.SAMPLES_PER_FRAME, None)

        cases = {
            "dit_step": {
                "torch": lambda: dit(x, t, cond, x, keep, frame_mask),
                "compile": lambda: compiled_dit(x, t, cond, x, keep, frame_mask),
                "onnx": lambda: onnx.velocity(x, t, onnx_cond, x, keep, frame_mask),
            },
            "decoder": {
                "torch": chunked(same._decode_frames),
                "compile": chunked(compiled_decode),
                "onnx": lambda: onnx.decode_latents(latents),
            },
        }
        for part, runs in cases.items():
            with torch.inference_mode():
                timing = {name: median_seconds(run, repeats) for name, run in runs.items() if name in variants}
            row = {"preset": preset, "part": part, "seconds": seconds, "frames": frames, **timing}
            text = "  ".join(f"{name} {value * 1e3:8.1f} ms" for name, value in timing.items())
            for name in ("onnx", "compile"):
                if name in timing and "torch" in timing:
                    row[f"{name}_vs_torch"] = timing["torch"] / timing[name]  # > 1: faster than eager
                    text += f"  {name} x{row[f'{name}_vs_torch']:.2f}"
            rows.append(row)
            print(f"{preset:<6} {part:<9} {seconds:>5.0f} s  {text}", flush=True)
    return rows, folder


def decoder_peak_memory(folder: Path, seconds: float, threads: int, arena: bool) -> float:
    """Peak resident memory (MiB, VmHWM) of a fresh process that loads the ORT backend and decodes ``seconds``."""
    code = (
        "import resource, torch, sys\n"
        "from sa3core.onnx_backend import OnnxBackend\n"
        "from sa3core import timebase\n"
        f"b = OnnxBackend({str(folder)!r}, threads={threads}, arena={arena})\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"frames = timebase.samples_to_frames(timebase.seconds_to_samples({seconds}))\n"
        "b.decode_latents(torch.randn(1, timebase.LATENT_CHANNELS, frames))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(hwm, base)\n"
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child of a big parent reports the parent's.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, _ = (int(v) for v in out.stdout.split())
    return peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    parser.add_argument("--memory-seconds", nargs="*", type=float, default=[10.0, 60.0, 380.0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["torch", "compile", "onnx"],
        help="torch.compile of the chunked decoder recompiles per chunk length: leave it out for long runs",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--json", "--out", dest="json", default="bench-backends.json", help="where the JSON goes")
    parser.add_argument(
        "--quick", action="store_true", help="tiny only, 10 s, one repeat (for `sa3 bench all --quick`)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.seconds, args.memory_seconds, args.repeats = ["tiny"], [10.0], [10.0], 1
    from sa3core.onnx_backend import physical_cores

    threads = args.threads or physical_cores()
    print(f"threads {threads}; medians of {args.repeats} runs; the machine may be shared", flush=True)
    results = {"threads": threads, "repeats": args.repeats, "rows": [], "memory": []}
    for preset in args.presets:
        rows, folder = bench_preset(preset, args.seconds, args.repeats, threads, args.variants)
        results["rows"] += rows
        for seconds in args.memory_seconds:
            for arena in (False, True):
                mib = decoder_peak_memory(folder, seconds, threads, arena)
                results["memory"].append({"preset": preset, "seconds": seconds, "arena": arena, "peak_mib": mib})
                print(
                    f"{preset:<6} ORT decoder peak RSS at {seconds:>5.0f} s (arena {arena}): {mib:7.0f} MiB", flush=True
                )
    results["bench_process_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
