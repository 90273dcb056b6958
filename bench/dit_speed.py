"""Wall time of one DiT forward against audio length: ``python -m bench.dit_speed``.

For each preset (tiny, small), length (1, 10, 60, 380 s -> latent frames via sa3core.timebase)
and precision (fp32, bf16 autocast) it times one forward (best of up to ``--repeats`` runs) of
a randomly initialised DiT at batch 1; the condition is encoded once outside the timing, as the
pipeline does. It reports ``time(60 s) / time(1 s)``, the cost growth the variable-length design
buys, next to the same ratio when every request is padded to the longest length (a fixed-window
model: both requests cost one 380 s forward, so that ratio is about 1, and a 1 s sound costs
``time(380 s) / time(1 s)`` times what it needs). With ``--measure-padded`` the padded cost is
measured (the request inside a 380 s window with a frame mask) instead of taken from the 380 s row.

Besides wall time it records the process CPU time (all threads) of the best run: on shared
cores wall time includes waiting for other jobs, CPU time mostly does not (``--threads 1``
makes the two agree on an idle machine). Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from sa3core import timebase
from sa3core.models.dit import DiT, dit_preset, parameter_count

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def time_forward(
    model: DiT, frames: int, dtype, repeats: int, min_seconds: float, window: int | None = None, warmup_max_frames=10**9
):
    """(wall s, CPU s) of the fastest forward over ``frames`` real frames, in a ``window``-frame
    padded input if given. The minimum, not the median: other work on shared cores only adds time."""
    gen = torch.Generator().manual_seed(0)
    window = window or frames
    x = torch.randn(1, timebase.LATENT_CHANNELS, window, generator=gen)
    frame_mask = (torch.arange(window) < frames)[None] if window != frames else None
    text = torch.randn(1, 12, model.config.text_dim, generator=gen)
    seconds = torch.tensor([timebase.samples_to_seconds(timebase.frames_to_samples(frames))])
    runs: list[tuple[float, float]] = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        cond = model.encode_condition(text, torch.ones(1, 12, dtype=torch.bool), seconds)
        t = torch.tensor([0.7])
        if window <= warmup_max_frames:  # longer runs are compute-bound: a warm-up would only double them
            model(x, t, cond, None, None, frame_mask)  # warm-up: allocator, oneDNN kernel choice
        while len(runs) < repeats and (not runs or sum(r[0] for r in runs) < min_seconds):
            wall, cpu = time.perf_counter(), time.process_time()
            model(x, t, cond, None, None, frame_mask)
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(runs)


def bench_preset(preset: str, precision: str, lengths: dict[float, int], args) -> dict:
    config = dit_preset(preset)
    torch.manual_seed(0)
    model = DiT(config).eval()
    dtype = PRECISIONS[precision]
    shortest, longest = min(lengths), max(lengths)
    measured = {
        s: time_forward(model, f, dtype, args.repeats, args.min_seconds, None, args.warmup_max_frames)
        for s, f in lengths.items()
    }
    wall = {s: m[0] for s, m in measured.items()}
    cpu = {s: m[1] for s, m in measured.items()}
    padded = dict.fromkeys(lengths, wall[longest])  # a masked window costs the whole window
    if args.measure_padded:
        for s in {shortest, 60.0} & set(lengths):
            window = lengths[longest]
            padded[s] = time_forward(
                model, lengths[s], dtype, args.repeats, args.min_seconds, window, args.warmup_max_frames
            )[0]
    row = {
        "preset": preset,
        "parameters": parameter_count(config),
        "precision": precision,
        "frames": {str(s): f for s, f in lengths.items()},
        "forward_seconds": {str(s): v for s, v in wall.items()},
        "forward_cpu_seconds": {str(s): v for s, v in cpu.items()},
        "padded_forward_seconds": {str(s): v for s, v in padded.items()},
        "padded_measured": args.measure_padded,
        "ratio_longest_to_shortest": wall[longest] / wall[shortest],
    }
    if 60.0 in lengths:
        row["ratio_60_to_1"] = wall[60.0] / wall[shortest]
        row["cpu_ratio_60_to_1"] = cpu[60.0] / cpu[shortest]
        row["ratio_60_to_1_padded"] = padded[60.0] / padded[shortest]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[1.0, 10.0, 60.0, 380.0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at most (after one warm-up)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="stop repeating once this much time is spent")
    parser.add_argument(
        "--measure-padded", action="store_true", help="time 1 s and 60 s requests padded to the longest"
    )
    parser.add_argument("--warmup-max-frames", type=int, default=10**9, help="skip the warm-up run above this length")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="runs/bench/dit_speed.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    lengths = {s: timebase.seconds_to_frames(s) for s in args.seconds}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, {platform.machine()}")
    header = " ".join(f"{s:>8g}s" for s in lengths)
    print(f"{'preset':8} {'params':>8} {'prec':5} {'':6} {header}   60/1  60/1 padded  380/1")
    rows = []
    for preset in args.presets:
        for precision in args.precisions:
            row = bench_preset(preset, precision, lengths, args)
            rows.append(row)
            name = f"{preset:8} {row['parameters'] / 1e6:7.1f}M {precision:5}"
            walls = " ".join(f"{v:9.4f}" for v in row["forward_seconds"].values())
            cpus = " ".join(f"{v:9.4f}" for v in row["forward_cpu_seconds"].values())
            nan = float("nan")
            print(
                f"{name} {'wall':6} {walls}   {row.get('ratio_60_to_1', nan):4.1f} "
                f"{row.get('ratio_60_to_1_padded', nan):11.2f} {row['ratio_longest_to_shortest']:6.1f}"
            )
            print(f"{'':24} {'cpu':6} {cpus}   {row.get('cpu_ratio_60_to_1', nan):4.1f}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
