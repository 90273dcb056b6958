"""The shipped default model end to end: N bars at a tempo, from a cold `sa3 generate` and from a warm pipeline.

``python -m bench.default_model`` (or ``sa3 bench default_model``) measures, on
sa3core/assets/default (or ``--model``):

- ``cli``: the whole command a producer types, ``sa3 generate PROMPT --bars 4 --bpm 120 -o F``,
  in a fresh process each run: Python and torch start-up, model and text-encoder load, text,
  sampling, decode and the file write (median wall time of ``--repeats`` runs);
- ``warm``: the same request on a loaded :class:`Pipeline` (what the daemon and the plugin
  see), with its parts timed separately: text encoding, the DiT condition, the sampler steps
  and the decode.

The issue's target is "4 bars at 120 bpm (8 s) generated end to end in under 5 s on 2 cores".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sa3core import timebase

from . import common

PROMPT = "punchy house drum loop, 120 bpm"


def cli_run(prompt: str, bars: int, bpm: float, model: str | None, threads: int) -> float:
    """Wall seconds of one `sa3 generate` in a fresh process (raises with its stderr when it fails)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "loop.wav"
        argv = [sys.executable, "-m", "sa3", "generate", prompt, "--bars", str(bars), "--bpm", f"{bpm:g}"]
        argv += ["-o", str(out), "--quiet", *(["--model", model] if model else [])]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, cwd=common.REPO, env=env)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"sa3 generate failed: {result.stderr[-2000:]}")
        return wall


def warm_parts(pipeline, prompt: str, samples: int, repeats: int) -> dict:
    """Median seconds of each part of one generation on a loaded pipeline, and of the whole call.

    The parts are the backend calls ``Pipeline.generate`` makes (no guidance: the shipped model
    samples with cfg 1): text encoding, the condition, one DiT velocity (a sampler step), the decode.
    """
    backend = pipeline.backend
    frames = timebase.samples_to_frames(samples)
    seconds = torch.full((1,), timebase.samples_to_seconds(frames * timebase.SAMPLES_PER_FRAME))
    tokens, mask = backend.encode_text([prompt])
    cond = backend.condition(tokens, mask, seconds)
    x = torch.randn(1, timebase.LATENT_CHANNELS, frames, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(1, 1, frames)
    frame_mask = torch.ones(1, frames, dtype=torch.bool)
    t = torch.full((1,), 0.5)
    parts = {
        "text": common.measure(lambda: backend.encode_text([prompt]), repeats),
        "condition": common.measure(lambda: backend.condition(tokens, mask, seconds), repeats),
        "dit_step": common.measure(lambda: backend.velocity(x, t, cond, x * keep, keep, frame_mask), repeats),
        "decode": common.measure(lambda: backend.decode_latents(x), repeats),
        "whole": common.measure(lambda: pipeline.generate(prompt, samples, seed=0), repeats),
    }
    out = {name: timing.as_dict() for name, timing in parts.items()}
    out["steps"] = pipeline.settings.steps
    return out


def main(argv: list[str] | None = None) -> int:
    p = common.parser("default_model", __doc__)
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--bars", type=int, default=4)
    p.add_argument("--bpm", type=float, default=120.0)
    args = p.parse_args(argv)
    threads = common.set_threads(args.threads)
    repeats = common.repeats(args)
    info = common.machine()
    print(common.describe(info), flush=True)
    from sa3core.pipeline import Pipeline

    samples = timebase.seconds_to_samples(timebase.bars_to_seconds(args.bars, args.bpm, "4/4"))
    cli = [cli_run(args.prompt, args.bars, args.bpm, args.model, args.threads) for _ in range(repeats + 1)][1:]
    pipeline = Pipeline.load(args.model)
    warm = warm_parts(pipeline, args.prompt, samples, repeats)
    results = {
        "request": {"prompt": args.prompt, "bars": args.bars, "bpm": args.bpm, "samples": samples},
        "cli_wall_s": sorted(cli)[len(cli) // 2],
        "cli_walls": [round(x, 3) for x in cli],
        "warm": warm,
        "threads": threads,
    }
    print(
        f"{args.bars} bars at {args.bpm:g} bpm ({samples} samples): cold `sa3 generate` {results['cli_wall_s']:.2f} s "
        f"(median of {len(cli)}), warm pipeline {warm['whole']['wall_s']:.3f} s",
        flush=True,
    )
    common.write_json(args.out, "default_model", results, info, model=args.model or "shipped default")
    return 0


if __name__ == "__main__":
    sys.exit(main())
