"""Few-step sampling against a 50-step flow-matching reference: ``python -m bench.steps``.

For one length it samples latents from the same noise and condition with 1, 2, 4 and 8
ping-pong steps and with a ``--reference-steps`` (50) ``--reference-sampler`` (dpmpp) run, and
reports for each: the sampling time (wall and process CPU, median of ``--repeats``; text
encoding, condition and decoding are outside the timing, they do not depend on the steps) and
a quality proxy, the relative RMS distance of the latents to the reference latents
``||x - x_ref|| / ||x_ref||`` (0 = identical). The reference runs once.

With random weights (no trained model) the proxy only shows how far each sampler lands from
the reference trajectory's end point of an untrained velocity field; it says nothing about
audio quality. The bench uses the trained model at sa3core/assets/default (or ``--model``)
when there is one and records which model it used.
"""

from __future__ import annotations

import torch

from sa3core import timebase
from sa3core.pipeline import DEFAULT_MODEL_DIR, Pipeline
from sa3core.samplers import SAMPLERS, length_shift

from . import common

FEW_STEPS = [1, 2, 4, 8]


def load(args) -> tuple[Pipeline, str]:
    if args.model:
        return Pipeline.load(args.model), args.model
    if (DEFAULT_MODEL_DIR / "model.json").exists() and not args.quick:
        return Pipeline.load(DEFAULT_MODEL_DIR), str(DEFAULT_MODEL_DIR)
    return Pipeline.random(args.preset, seed=0, text_encoder=args.text_encoder), f"random {args.preset}"


def main(argv: list[str] | None = None) -> int:
    p = common.parser("steps", __doc__)
    p.add_argument("--model", help="model folder (default: the shipped model, else a random --preset)")
    p.add_argument("--preset", default="tiny", help="preset of the random model when no trained one exists")
    p.add_argument("--text-encoder", default=None, help="text encoder of a random model (minilm; --quick: hash)")
    p.add_argument("--seconds", type=float, default=None, help="audio length (default 10; --quick: 2)")
    p.add_argument("--steps", nargs="+", type=int, default=FEW_STEPS, help="ping-pong step counts")
    p.add_argument("--reference-steps", type=int, default=None, help="default 50 (--quick: 10)")
    p.add_argument("--reference-sampler", default="dpmpp", help="flow-matching sampler of the reference")
    p.add_argument("--prompt", default="warm analog synth pad with slow filter sweep")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    args.text_encoder = args.text_encoder or ("hash" if args.quick else "minilm")
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    reference_steps = args.reference_steps or (10 if args.quick else 50)
    info = common.machine()
    print(common.describe(info), flush=True)

    pipeline, model_name = load(args)
    backend = pipeline.backend
    frames = timebase.seconds_to_frames(seconds)
    tokens, mask = backend.encode_text([args.prompt])
    cond = backend.condition(
        tokens, mask, torch.tensor([timebase.samples_to_seconds(timebase.frames_to_samples(frames))])
    )
    keep = torch.zeros(1, 1, frames)
    source = torch.zeros(1, timebase.LATENT_CHANNELS, frames)
    frame_mask = torch.ones(1, frames, dtype=torch.bool)
    noise = torch.randn(1, timebase.LATENT_CHANNELS, frames, generator=torch.Generator().manual_seed(0))

    def velocity(x, t):
        return backend.velocity(x, t, cond, source, keep, frame_mask)

    def sample(name: str, steps: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)  # the same re-noising draws for every run
        return SAMPLERS.get(name)().sample(velocity, noise, steps, generator=generator, shift=length_shift(frames))

    sample("pingpong", 1)  # warm-up
    runs = [(args.reference_sampler, reference_steps, 1)] + [("pingpong", s, common.repeats(args)) for s in args.steps]
    rows, reference = [], None
    for name, steps, repeats in runs:
        result = {}
        timing = common.measure(
            lambda name=name, steps=steps, result=result: result.update(x=sample(name, steps)), repeats, warmup=0
        )
        if reference is None:
            reference = result["x"]
        distance = float((result["x"] - reference).norm() / reference.norm())
        rows.append(
            {
                "sampler": name,
                "steps": steps,
                "wall_s": timing.wall_s,
                "cpu_s": timing.cpu_s,
                "cpu_s_per_step": timing.cpu_s / steps,
                "relative_distance_to_reference": distance,
            }
        )
        print(f"  {name} {steps}: {timing.wall_s:.2f} s wall, distance {distance:.3f}", flush=True)
    for row in rows:
        row["speedup_vs_reference_cpu"] = rows[0]["cpu_s"] / row["cpu_s"]
    print(
        common.table(
            rows,
            [
                ("sampler", "sampler", ""),
                ("steps", "steps", "d"),
                ("wall_s", "wall s", ".2f"),
                ("cpu_s", "cpu s", ".2f"),
                ("speedup_vs_reference_cpu", "speed-up (cpu)", ".1f"),
                ("relative_distance_to_reference", "rel. distance", ".3f"),
            ],
        )
    )
    settings = {
        "model": model_name,
        "seconds": seconds,
        "frames": frames,
        "reference": f"{args.reference_sampler} {reference_steps}",
        "prompt": args.prompt,
        "bf16": bool(getattr(backend, "bf16", False)),
    }
    out = common.write_json(args.out, "steps", rows, info, settings=settings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
