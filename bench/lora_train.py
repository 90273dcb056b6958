"""LoRA training speed: seconds per optimizer step of ``sa3 train lora`` on the CPU.

    python -m bench.lora_train                      # tiny (the random small-base fixture) and the released small shapes
    python -m bench.lora_train --quick              # tiny only, one timed step (a smoke check)
    python -m bench.lora_train --shapes small --seconds 30 --batch 2 --adapter-type lora-xs

``tiny`` is tests/fixtures/released/small-base (DiT 64 wide, 2 blocks); ``small`` a random
checkpoint of the released small shapes (DiT 1024 wide, 20 blocks, SAME-S, T5Gemma b-b), built
once by :func:`bench.released_shapes.build` under ``--shapes-dir`` (a few GB). Each run
synthesizes a folder of tones ``--seconds`` long, pre-encodes it (not timed), then times
``LoraTrainer.train_step`` (adapted forward, backward, AdamW; no checkpoint writes) after one
warm-up step. The silence extension is off and the crop is the clips' length, so every step
trains on exactly ``frames`` latent frames per item; what is timed is what a real step costs
at that length (the official run pads every item to the crop, which costs more).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import common

FIXTURE = common.REPO / "tests" / "fixtures" / "released" / "small-base"


def synthesize(folder: Path, seconds: float, clips: int) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rate = 44_100
    t = np.arange(int(seconds * rate)) / rate
    for i in range(clips):
        tone = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
        sf.write(folder / f"tone_{i + 1:02d}.wav", np.stack([tone, tone], axis=1).astype(np.float32), rate)
    return folder


def run_shape(shape: str, args, tmp: Path) -> dict:
    from sa3core.config import from_dict
    from training.lora.trainer import LoraTrainConfig, LoraTrainer

    base = FIXTURE if shape == "tiny" else released_small(args.shapes_dir)
    data = synthesize(tmp / "data", args.seconds, clips=max(2, args.batch))
    config = from_dict(
        LoraTrainConfig,
        {
            "base": str(base),
            "data": str(data),
            "cache": str(tmp / f"cache-{shape}"),
            "crop_seconds": args.seconds,
            "silence_extension_seconds": 0.0,
            "lora": {"rank": args.rank, "adapter_type": args.adapter_type},
            "loop": {
                "steps": 10**6,
                "batch_size": args.batch,
                "bf16": args.bf16,
                "progress": False,
                "checkpoint_every": 10**9,
                "threads": args.threads,
            },
        },
    )
    trainer = LoraTrainer(config, tmp / f"run-{shape}")
    step = iter(range(10**6))
    timing = common.measure(lambda: trainer.train_step(next(step)), repeats=args.steps, warmup=1)
    frames = int(trainer.get_batch(0, 0, None)["valid"].sum()) // args.batch
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "shape": shape,
        "adapter_type": args.adapter_type,
        "rank": args.rank,
        "batch": args.batch,
        "seconds": args.seconds,
        "frames_per_item": frames,
        "bf16": args.bf16,
        "trainable_M": round(trainable / 1e6, 3),
        "adapted_layers": len(trainer.model.adapters),
        "seconds_per_step": round(timing.wall_s, 4),
        "cpu_seconds_per_step": round(timing.cpu_s, 4),
        "timing": timing.as_dict(),
    }


def released_small(folder: str) -> Path:
    from .released_shapes import base_variant, build

    return base_variant(build("small", folder))  # LoRAs are trained on the base (rectified flow) form


def main(argv: list[str] | None = None) -> int:
    p = common.parser("lora_train", __doc__)
    p.add_argument(
        "--shapes", nargs="+", choices=("tiny", "small"), default=None, help="default tiny small (--quick: tiny)"
    )
    p.add_argument("--seconds", type=float, default=None, help="length of every clip (default 10, --quick 2)")
    p.add_argument("--batch", type=int, default=1, help="clips per step (the official default is 1)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--adapter-type", default="dora-rows")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (adapters stay float32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per shape (default: --repeats)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the released small shapes are built")
    args = p.parse_args(argv)
    args.threads = common.set_threads(args.threads)
    args.shapes = args.shapes or (["tiny"] if args.quick else ["tiny", "small"])
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.steps = args.steps or common.repeats(args)
    info = common.machine()
    print(common.describe(info), flush=True)
    rows = []
    for shape in args.shapes:
        with tempfile.TemporaryDirectory(prefix=f"sa3-bench-lora-{shape}-") as tmp:
            row = run_shape(shape, args, Path(tmp))
        rows.append(row)
        print(
            f"  {shape}: {row['seconds_per_step']:.3f} s/step ({row['frames_per_item']} frames x {row['batch']})",
            flush=True,
        )
    columns = [
        ("shape", "shape", ""),
        ("adapter_type", "adapter", ""),
        ("rank", "rank", "d"),
        ("batch", "batch", "d"),
        ("frames_per_item", "frames", "d"),
        ("trainable_M", "trainable M", ".3f"),
        ("seconds_per_step", "s/step", ".3f"),
        ("cpu_seconds_per_step", "cpu s/step", ".3f"),
    ]
    print(common.table(rows, columns))
    path = common.write_json(args.out, "lora_train", rows, info)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
