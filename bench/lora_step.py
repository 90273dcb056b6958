"""What LoRA adapters cost per DiT step: ``python -m bench.lora_step``.

One DiT forward of a released model (by default random weights of the released small shapes,
:mod:`bench.released_shapes`) at ``--seconds`` (the official length: +6 s of padding), batch 1,
at sa3's default precision (``--fp32`` for float32), for:

- ``base``: no adapter;
- ``1 merged`` / ``2 merged``: one adapter (dora-rows, the official training default) or two
  (dora-rows then lora) written into the weights at load (``sa3 generate --lora``);
- ``1 unmerged`` / ``2 unmerged``: the same kept apart, as a daemon keeps them so each job can
  set its own strengths (``merge_loras=False``).

The adapters are random, of ``--rank`` (default 16, the official training's) on every Linear of
the DiT's blocks, written with :func:`sa3core.lora.save_lora` into a temporary folder. Medians of
``--repeats`` forwards after one warm-up, in one process; the base runs first and again last, and
the ratio to the faster of the two is the cost.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import common

PROMPT = "deep house groove with warm chords and a rolling bassline, 122 BPM"


def write_adapters(folder: Path, dit: torch.nn.Module, rank: int) -> list[Path]:
    """dora-rows and lora files of ``rank`` on every Linear of the DiT's blocks (random values)."""
    from sa3core.lora import LoraConfig, save_lora

    generator = torch.Generator().manual_seed(0)
    layers = {
        f"model.{name}": module
        for name, module in dit.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("transformer.layers.")
    }
    files = []
    for kind in ("dora-rows", "lora"):
        tensors = {}
        for name, module in layers.items():
            out_features, in_features = module.weight.shape
            entry = {
                "lora_A": torch.randn(rank, in_features, generator=generator) / in_features**0.5,
                "lora_B": torch.randn(out_features, rank, generator=generator) * 0.01,
            }
            if kind == "dora-rows":
                entry["magnitude"] = module.weight.detach().float().norm(dim=1)
            tensors[name] = entry
        config = LoraConfig(rank, float(rank), kind, include=("transformer.layers.",))
        files.append(save_lora(folder / f"{kind}.safetensors", tensors, config))
    return files


def step_time(pipeline, seconds: float, repeats: int) -> dict:
    """Median seconds of one DiT forward at the official padded length of ``seconds``."""
    from sa3core import timebase
    from sa3core.families.released import padded_frames, valid_frames

    backend = pipeline.backend
    samples = timebase.seconds_to_samples(seconds)
    frames = padded_frames(samples, pipeline.settings)
    context, global_cond = backend.context([PROMPT], torch.tensor([seconds]))
    cond = backend.condition(context, global_cond)
    mask = (torch.arange(frames) < valid_frames(samples, frames))[None]
    x = torch.randn(1, backend.latent_channels, frames, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.9])
    backend.velocity(x, t, cond, None, mask)  # warm-up
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.velocity(x, t, cond, None, mask)
        walls.append(time.perf_counter() - started)
    return {"frames": frames, "step_s": round(statistics.median(walls), 4), "runs": [round(w, 4) for w in walls]}


def main() -> int:
    p = common.parser("lora_step", __doc__)
    p.add_argument("--model", type=Path, help="released-layout folder (default: random weights, released small shapes)")
    p.add_argument("--shapes-dir", default="runs/shapes-small", help="where the default checkpoint is built")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--fp32", action="store_true", help="float32 matmuls (default: sa3's default precision)")
    args = p.parse_args()
    threads = common.set_threads(args.threads)
    from sa3core.pipeline import Pipeline

    if args.model is None:
        from .released_shapes import build

        model = build("small", common.REPO / args.shapes_dir)
    else:
        model = args.model
    seconds = 4.0 if args.quick else args.seconds
    repeats = common.repeats(args)
    options = {"bf16": False} if args.fp32 else {}
    info = common.machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Pipeline.load(model, **options)
        files = write_adapters(Path(tmp), base.backend.dit, args.rank)
        rows.append({"case": "base", **step_time(base, seconds, repeats)})
        del base
        for count in (1, 2):
            for merge in (True, False):
                gc.collect()
                loras = [(f, 1.0) for f in files[:count]]
                pipeline = Pipeline.load(model, loras=loras, merge_loras=merge, **options)
                rows.append(
                    {"case": f"{count} {'merged' if merge else 'unmerged'}", **step_time(pipeline, seconds, repeats)}
                )
                del pipeline
        gc.collect()  # the base again, last: the first model in a process can run slower (caches, pages)
        rows.append({"case": "base again", **step_time(Pipeline.load(model, **options), seconds, repeats)})
    base_s = min(rows[0]["step_s"], rows[-1]["step_s"])
    for row in rows:
        row["vs_base"] = round(row["step_s"] / base_s, 3)
    print(common.describe(info))
    print(f"DiT step at {seconds:g} s ({rows[0]['frames']} frames), rank {args.rank}, {threads} threads")
    print(common.table(rows, [("case", "adapters", ""), ("step_s", "s / step", ".3f"), ("vs_base", "x base", ".2f")]))
    settings = {"seconds": seconds, "rank": args.rank, "fp32": args.fp32, "model": str(model)}
    out = common.write_json(args.out, "lora_step", rows, info, settings=settings)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
