"""Wall time of one DiT forward against audio length: ``python -m bench.dit_speed``.

For each preset (tiny, small), length (1, 10, 60, 380 s -> latent frames via sa3core.timebase)
and precision (fp32, bf16 autocast) it times one forward (best of up to --repeats runs) of a randomly initialised DiT at batch 1
(the condition is encoded once outside the timing, as the pipeline does). It then reports
``time(60 s) / time(1 s)``, the cost growth the variable-length design buys, next to the same
ratio when every request is padded to the longest length (a fixed-window model: both requests
cost one 380 s forward, so the ratio is 1 and a 1 s sound costs ``time(380 s) / time(1 s)`` times
more than it needs). With ``--measure-padded`` the padded cost is measured (a 1 s request in a
380 s window with a frame mask) instead of taken from the 380 s row.

Prints a table and writes JSON (``--out``, default runs/bench/dit_speed.json).
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
    model: DiT, frames: int, dtype, repeats: int, min_seconds: float, padded_to: int | None = None
) -> float:
    """Best (minimum) seconds of one forward over ``frames`` real frames (in a ``padded_to`` window
    if given). The minimum, not the median, because the cores may be shared: other work only
    ever adds time."""
    gen = torch.Generator().manual_seed(0)
    window = padded_to or frames
    x = torch.randn(1, timebase.LATENT_CHANNELS, window, generator=gen)
    frame_mask = (torch.arange(window) < frames)[None] if padded_to else None
    text = torch.randn(1, 12, model.config.text_dim, generator=gen)
    seconds = torch.tensor([timebase.samples_to_seconds(timebase.frames_to_samples(frames))])
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        cond = model.encode_condition(text, torch.ones(1, 12, dtype=torch.bool), seconds)
        t = torch.tensor([0.7])
        model(x, t, cond, None, None, frame_mask)  # warm-up: allocator, oneDNN kernel choice
        times: list[float] = []
        while len(times) < repeats and (not times or sum(times) < min_seconds):
            start = time.perf_counter()
            model(x, t, cond, None, None, frame_mask)
            times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[1.0, 10.0, 60.0, 380.0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at most (after one warm-up)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="stop repeating once this much time is spent")
    parser.add_argument(
        "--measure-padded", action="store_true", help="also time a 1 s and a 60 s request padded to the longest length"
    )
    parser.add_argument("--out", default="runs/bench/dit_speed.json")
    args = parser.parse_args(argv)

    lengths = {s: timebase.seconds_to_frames(s) for s in args.seconds}
    shortest, longest = min(args.seconds), max(args.seconds)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(
        f"{'preset':8} {'params':>8} {'prec':5} "
        + " ".join(f"{s:>8g}s" for s in args.seconds)
        + "   60/1   60/1 padded  380/1"
    )
    for preset in args.presets:
        config = dit_preset(preset)
        torch.manual_seed(0)
        model = DiT(config).eval()
        for precision in args.precisions:
            dtype = PRECISIONS[precision]
            seconds_taken = {
                s: time_forward(model, f, dtype, args.repeats, args.min_seconds) for s, f in lengths.items()
            }
            padded = {s: seconds_taken[longest] for s in args.seconds}  # a masked window costs the full window
            if args.measure_padded:
                for s in (shortest, 60.0):
                    if s in lengths:
                        padded[s] = time_forward(
                            model, lengths[s], dtype, args.repeats, args.min_seconds, lengths[longest]
                        )
            row = {
                "preset": preset,
                "parameters": parameter_count(config),
                "precision": precision,
                "frames": {str(s): lengths[s] for s in args.seconds},
                "forward_seconds": {str(s): seconds_taken[s] for s in args.seconds},
                "padded_forward_seconds": {str(s): padded[s] for s in args.seconds},
                "padded_measured": args.measure_padded,
            }
            if 60.0 in seconds_taken:
                row["ratio_60_to_1"] = seconds_taken[60.0] / seconds_taken[shortest]
                row["ratio_60_to_1_padded"] = padded[60.0] / padded[shortest]
            row["ratio_longest_to_shortest"] = seconds_taken[longest] / seconds_taken[shortest]
            rows.append(row)
            cells = " ".join(f"{seconds_taken[s]:9.4f}" for s in args.seconds)
            ratios = f"{row.get('ratio_60_to_1', float('nan')):6.1f} {row.get('ratio_60_to_1_padded', float('nan')):11.2f} {row['ratio_longest_to_shortest']:6.1f}"
            print(f"{preset:8} {row['parameters'] / 1e6:7.1f}M {precision:5} {cells}   {ratios}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
