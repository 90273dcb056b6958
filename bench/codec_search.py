"""The encoder search's cost (`sa3 encode --search`): seconds per step and peak memory by length.

    sa3 bench codec_search [--seconds 10 30] [--steps 5] [--quick] [--threads N] [--out FILE]

The shipped default model's autoencoder, a 0.1-RMS noise + chord test signal. Each length runs
in a fresh ``python -m bench.codec_search --child SECONDS STEPS`` process, which reports the
plain encode's wall time, the median wall and process-CPU time of one search step (each step
is one decoder pass forward and backward plus the MR-STFT and mel losses), and its own peak
resident memory (VmHWM) before and after the search. Beyond 128 latent frames (11.9 s) the search
runs in chunks, each with 2 x 28 frames of context per side, so the cost per second of audio rises
there and memory stops growing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from bench import common


def _signal(seconds: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    samples = round(seconds * 44_100)
    t = torch.arange(samples) / 44_100
    chord = sum(0.1 * torch.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6))
    noise = 0.05 * torch.randn(2, samples, generator=generator)
    return (chord + noise)[None].float()


def child(seconds: float, steps: int) -> None:
    from sa3core.checkpoint import load_model
    from sa3core.codec_search import CHUNK_FRAMES, search_latents
    from sa3core.pipeline import default_model_dir

    model = load_model(default_model_dir() / "same.safetensors", expect_kind="same")[0].eval()
    audio = _signal(seconds)
    started = time.perf_counter()
    latents = model.encode(audio)
    encode_s = time.perf_counter() - started
    before = common.peak_rss_mib()
    walls, cpus = [], []
    marks = [(time.perf_counter(), time.process_time())]

    def progress(done: int, total: int) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    search_latents(model, audio, steps, latents=latents, progress=progress)
    for (w0, c0), (w1, c1) in zip(marks, marks[1:]):
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
    chunks = -(-latents.shape[-1] // CHUNK_FRAMES)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "frames": latents.shape[-1],
                "chunks": chunks,
                "steps_run": len(walls),
                "encode_s": round(encode_s, 3),
                "step_wall_s": round(statistics.median(walls), 3),
                "step_cpu_s": round(statistics.median(cpus), 3),
                "search_30_wall_s": round(30 * chunks * statistics.median(walls), 1),
                "rss_before_search_mib": round(before, 1),
                "peak_mib": round(common.peak_rss_mib(), 1),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = common.parser("codec_search", __doc__)
    p.add_argument("--seconds", nargs="+", type=float, default=[10.0, 30.0])
    p.add_argument("--steps", type=int, default=5, help="search steps per chunk to time (default 5)")
    p.add_argument("--child", nargs=2, metavar=("SECONDS", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = common.set_threads(args.threads)
    if args.child:
        child(float(args.child[0]), int(args.child[1]))
        return 0
    info = common.machine()
    lengths, steps = ([5.0], 2) if args.quick else (args.seconds, args.steps)
    print(common.describe(info))
    rows = []
    for seconds in lengths:
        _, out = common.run_child(
            "bench.codec_search", ["--child", str(seconds), str(steps), "--threads", str(threads)]
        )
        rows.append(json.loads(out.strip().splitlines()[-1]))
    columns = [("seconds", "audio s", "g"), ("chunks", "chunks", "d"), ("encode_s", "encode s", ".2f"),
               ("step_wall_s", "step s", ".2f"), ("step_cpu_s", "step cpu s", ".2f"),
               ("search_30_wall_s", "30 steps s", ".0f"), ("peak_mib", "peak MiB", ".0f")]  # fmt: skip
    print(common.table(rows, columns))
    print(f"wrote {common.write_json(args.out, 'codec_search', rows, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
