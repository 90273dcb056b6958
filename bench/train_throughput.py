"""Flow-matching training throughput: latent frames per second, and time per optimizer step.

    python -m bench.train_throughput                      # tiny with 1 and 2 processes, small with 1
    python -m bench.train_throughput --presets tiny --processes 1 2 --steps 10

Renders and encodes a small procedural corpus once (random tiny autoencoder), then times
``FlowTrainer.train_step`` (forward, backward, optimizer, EMA; no checkpoint writes) after one
warm-up step. Crops are a fixed length (``--seconds``) so every step does the same work.
Several processes run under torchrun (gloo) and split the global batch; each process gets
``--threads`` / processes torch threads. Frames counted are real latent frames of the global
batch (padding excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    """One training process (rank 0 prints the JSON result)."""
    import torch

    from sa3core.config import from_dict
    from training.flow import FlowConfig, FlowTrainer

    config = from_dict(
        FlowConfig,
        {
            "corpus": args.corpus,
            "text_encoder": "hash",
            "preset": args.preset,
            "data": {"max_seconds": args.seconds, "min_seconds": args.seconds, "silence_prob": 0.0},
            "loop": {
                "steps": args.steps + 1,
                "batch_size": args.batch,
                "threads": args.threads,
                "progress": False,
                "bf16": args.bf16,
                "checkpoint_every": 10**9,
            },
        },
    )
    trainer = FlowTrainer(config, Path(args.out) / f"{args.preset}-{os.environ.get('WORLD_SIZE', '1')}")
    frames = []
    original = trainer.get_batch

    def counting(step, micro, generator):
        batch = original(step, micro, generator)
        frames.append(int(batch["frame_mask"].sum()))
        return batch

    trainer.get_batch = counting
    trainer.train_step(0)  # warm-up: allocations, first-call overheads
    frames.clear()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        trainer.train_step(step)
    elapsed = time.perf_counter() - start
    total = torch.tensor(float(sum(frames)))
    if trainer.dist.world_size > 1:
        torch.distributed.all_reduce(total)
    if trainer.dist.is_main:
        params = sum(p.numel() for p in trainer.model.parameters())
        result = {
            "preset": args.preset,
            "processes": trainer.dist.world_size,
            "threads_per_process": args.threads,
            "global_batch": args.batch * trainer.dist.world_size,
            "crop_seconds": args.seconds,
            "parameters_M": round(params / 1e6, 1),
            "seconds_per_step": round(elapsed / args.steps, 3),
            "latent_frames_per_second": round(total.item() / elapsed, 1),
        }
        print("RESULT " + json.dumps(result), flush=True)
    if trainer.dist.world_size > 1:
        torch.distributed.destroy_process_group()


def launch(args, preset: str, processes: int, batch: int, steps: int, corpus: Path, out: Path) -> dict:
    threads = max(1, args.threads // processes)
    worker_args = [
        "-m", "bench.train_throughput", "--worker", "--preset", preset, "--steps", str(steps),
        "--batch", str(batch), "--threads", str(threads), "--seconds", str(args.seconds),
        "--corpus", str(corpus), "--out", str(out),
    ] + (["--bf16"] if args.bf16 else [])  # fmt: skip
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command += worker_args
    else:
        command = [sys.executable, *worker_args]
    env = dict(os.environ, PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS=str(threads))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{preset} x{processes} failed:\n{result.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument(
        "--processes", nargs="+", type=int, default=[1, 2], help="process counts (tiny); small runs with 1"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps for tiny (small: --small-steps)")
    parser.add_argument("--small-steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="global batch (split across processes)")
    parser.add_argument("--seconds", type=float, default=10.0, help="crop length of every item")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in total, shared by the processes")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    from training.smoke import build_latent_corpus

    with tempfile.TemporaryDirectory(prefix="sa3-bench-train-") as tmp:
        corpus = build_latent_corpus(Path(tmp) / "corpus", clips=6, seed=0, max_seconds=args.seconds + 2.0)
        for preset in args.presets:
            counts = args.processes if preset == "tiny" else [1]
            steps = args.steps if preset == "tiny" else args.small_steps
            for processes in counts:
                if args.batch % processes:
                    raise SystemExit(f"--batch {args.batch} does not split over {processes} processes")
                result = launch(args, preset, processes, args.batch // processes, steps, corpus, Path(tmp) / "runs")
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
