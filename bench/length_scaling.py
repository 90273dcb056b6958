"""End-to-end generate time against the requested length, variable-length versus fixed window:
``python -m bench.length_scaling``.

For each preset (random weights) and length it times ``Pipeline.generate`` end to end (text
encode, condition, ``--steps`` sampler steps, decode, crop). In the same run the same model is
forced to work the fixed-window way: every request is padded to a ``--window`` of audio (the
maximum length, 380 s, by default), the DiT sees the whole window with a frame mask over the
real frames and the decoder decodes the whole window, which is then cropped. The ratio
``padded / variable`` for each length is what the variable-length design saves.

The padded cost does not depend on the request's length (the work is the window's), so it is
measured for the shortest and the longest requested length only (``--padded-all`` measures
every length) and the shortest one's figure is used for the ratios of the lengths in between.
Lengths longer than the window are skipped for a preset.

Both wall time and process CPU time are reported; the ratios are given for both (on a shared
machine only the CPU-time ratios mean much). ``--quick``: tiny preset, hash text encoder, 1, 2
and 5 s, a 5 s window, 2 steps.
"""

from __future__ import annotations

import torch

from sa3core import timebase
from sa3core.pipeline import Pipeline

from . import common

LENGTHS = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 380.0]


def padded_generate(pipeline: Pipeline, samples: int, window_frames: int, steps: int, seed: int = 0) -> torch.Tensor:
    """``pipeline.generate`` the fixed-window way: the request sits at the start of a
    ``window_frames`` window, the DiT masks the rest, the decoder decodes the whole window.

    Mirrors :meth:`Pipeline._sample` (no guidance, one variation); returns audio [1, 2, samples]."""
    from sa3core.samplers import SAMPLERS, length_shift

    backend = pipeline.backend
    frames = timebase.samples_to_frames(samples)
    tokens, mask = backend.encode_text(["a bench prompt"])
    cond = backend.condition(tokens, mask, torch.tensor([timebase.samples_to_seconds(samples)]))
    frame_mask = (torch.arange(window_frames) < frames)[None]  # (1, window): True = a real frame
    keep = torch.zeros(1, 1, window_frames)
    source = torch.zeros(1, timebase.LATENT_CHANNELS, window_frames)
    noise = torch.randn(1, timebase.LATENT_CHANNELS, window_frames, generator=torch.Generator().manual_seed(seed))
    sampler = SAMPLERS.get(pipeline.settings.sampler)()
    latents = sampler.sample(
        lambda x, t: backend.velocity(x, t, cond, source, keep, frame_mask),
        noise,
        steps,
        generator=torch.Generator().manual_seed(seed + 1),
        shift=length_shift(window_frames),
    )
    return backend.decode_latents(latents)[:, :, :samples]


def bench_preset(preset: str, lengths: list[float], window_s: float, args, repeats: int) -> list[dict]:
    options = {} if args.bf16 == "auto" else {"bf16": args.bf16 == "on"}
    pipeline = Pipeline.random(preset, seed=0, text_encoder=args.text_encoder, **options)
    window_frames = timebase.seconds_to_frames(window_s)
    lengths = [s for s in lengths if s <= window_s]
    pipeline.generate("warm-up", timebase.seconds_to_samples(min(lengths)), steps=1)  # allocator, kernel choice
    rows = []
    for seconds in lengths:
        samples = timebase.seconds_to_samples(seconds)
        variable = common.measure(
            lambda samples=samples: pipeline.generate("a bench prompt", samples, steps=args.steps),
            repeats=repeats,
            warmup=0,
        )
        row = {
            "preset": preset,
            "bf16": bool(getattr(pipeline.backend, "bf16", False)),
            "seconds": seconds,
            "frames": timebase.samples_to_frames(samples),
            "window_seconds": window_s,
            "steps": args.steps,
            "wall_s": variable.wall_s,
            "cpu_s": variable.cpu_s,
        }
        if not args.no_padded and (args.padded_all or seconds in (min(lengths), max(lengths))):
            padded = common.measure(
                lambda samples=samples: padded_generate(pipeline, samples, window_frames, args.steps),
                repeats=repeats,
                warmup=0,
            )
            row.update(padded_wall_s=padded.wall_s, padded_cpu_s=padded.cpu_s, padded_measured=True)
        rows.append(row)
        print(f"  {preset} {seconds:g} s: {variable.wall_s:.2f} s wall, {variable.cpu_s:.2f} s cpu", flush=True)
    reference = rows[0]
    for row in rows:
        row["cost_vs_longest_cpu"] = row["cpu_s"] / rows[-1]["cpu_s"]
        if args.no_padded:
            continue
        if "padded_wall_s" not in row:
            row.update(
                padded_wall_s=reference["padded_wall_s"], padded_cpu_s=reference["padded_cpu_s"], padded_measured=False
            )
        row["ratio_padded_wall"] = row["padded_wall_s"] / row["wall_s"]
        row["ratio_padded_cpu"] = row["padded_cpu_s"] / row["cpu_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser("length_scaling", __doc__)
    p.add_argument("--presets", nargs="+", default=None, help="default tiny small (--quick: tiny)")
    p.add_argument("--lengths", nargs="+", type=float, default=None, help=f"seconds (default {LENGTHS})")
    p.add_argument("--window", type=float, default=None, help="fixed window in seconds (default the maximum, 380)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 8; --quick: 2)")
    p.add_argument("--text-encoder", default=None, help="minilm (default) or hash (--quick)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="torch backend precision")
    p.add_argument("--padded-all", action="store_true", help="measure the padded cost at every length")
    p.add_argument("--no-padded", action="store_true", help="leave the fixed-window comparison out")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    presets = args.presets or (["tiny"] if args.quick else ["tiny", "small"])
    lengths = sorted(args.lengths or ([1.0, 2.0, 5.0] if args.quick else LENGTHS))
    window = args.window or (5.0 if args.quick else timebase.MAX_SECONDS)
    args.steps = args.steps or (2 if args.quick else 8)
    args.text_encoder = args.text_encoder or ("hash" if args.quick else "minilm")
    info = common.machine()
    print(common.describe(info), flush=True)
    rows = []
    for preset in presets:
        rows += bench_preset(preset, lengths, window, args, common.repeats(args))
    print(
        common.table(
            rows,
            [
                ("preset", "preset", ""),
                ("seconds", "audio s", "g"),
                ("wall_s", "wall s", ".2f"),
                ("cpu_s", "cpu s", ".2f"),
                ("padded_wall_s", "padded wall", ".2f"),
                ("padded_cpu_s", "padded cpu", ".2f"),
                ("ratio_padded_cpu", "padded/var (cpu)", ".1f"),
                ("cost_vs_longest_cpu", "cost/longest (cpu)", ".3f"),
            ],
        )
    )
    settings = {
        "presets": presets,
        "lengths": lengths,
        "window_seconds": window,
        "steps": args.steps,
        "text_encoder": args.text_encoder,
        "bf16": args.bf16,
        "padded": not args.no_padded,
        "repeats": common.repeats(args),
    }
    out = common.write_json(args.out, "length_scaling", rows, info, settings=settings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
