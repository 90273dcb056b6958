"""What the daemon costs on top of the model: ``python -m bench.daemon_overhead``.

1. Round trip: for 1 s and 60 s of audio it times ``Pipeline.generate`` called in this process
   and the same request through a real ``sa3 serve`` subprocess on loopback (random tiny model,
   hash text encoder, same seed). Model time on shared cores is noisy, so besides the two medians
   it reports the daemon's own overhead per request: round-trip wall time minus the time the job
   spent in the model (the daemon's ``seconds_elapsed``), i.e. queueing, msgpack, the
   float32 frames over ZeroMQ and the client's decoding. Heartbeat round trip is reported too.
2. Throughput: ``--clients`` (8) client threads, each with its own DEALER socket, submit 1 s
   generations back to back for ``--duration`` seconds; jobs per minute counts finished results.

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from bridge.client import Client
from sa3core import timebase

from . import common


def round_trip(pipeline, client: Client, seconds: float, steps: int, repeats: int) -> dict:
    samples = timebase.seconds_to_samples(seconds)
    direct, daemon, overhead = [], [], []
    for k in range(repeats):
        started = time.perf_counter()
        local = pipeline.generate("bench", samples, steps=steps, seed=k)
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = client.generate("bench", samples=samples, steps=steps, seed=k, progress=None)
        daemon.append(time.perf_counter() - started)
        overhead.append(daemon[-1] - result.header["seconds_elapsed"])
        assert result.audio.shape == local.shape
        assert np.abs(result.audio - local).max() < 1e-4, "daemon and in-process results differ"
    return {
        "seconds": seconds,
        "samples": samples,
        "steps": steps,
        "repeats": repeats,
        "direct_median_ms": 1000 * statistics.median(direct),
        "daemon_median_ms": 1000 * statistics.median(daemon),
        "difference_median_ms": 1000 * (statistics.median(daemon) - statistics.median(direct)),
        "daemon_overhead_median_ms": 1000 * statistics.median(overhead),
        "result_bytes": samples * timebase.CHANNELS * 4,
    }


def throughput(endpoint: str, clients: int, duration: float, seconds: float, steps: int) -> dict:
    done, errors = [], []
    stop_at = time.monotonic() + duration

    def run(index: int) -> None:
        with Client(endpoint, silence=120.0) as client:
            k = 0
            while time.monotonic() < stop_at:
                try:
                    client.generate(f"client {index}", seconds=seconds, steps=steps, seed=k)
                    done.append(time.monotonic())
                except Exception as err:  # counted and reported, the run goes on
                    errors.append(repr(err))
                k += 1

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started  # includes the jobs still running at stop_at
    return {
        "clients": clients,
        "seconds_per_job": seconds,
        "steps": steps,
        "jobs": len(done),
        "elapsed_s": elapsed,
        "jobs_per_minute": 60.0 * len(done) / elapsed,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 60.0], help="seconds of audio")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (default 8, the shipped default)")
    parser.add_argument("--repeats", type=int, default=3, help="round trips per length (median reported)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the throughput run")
    parser.add_argument("--threads", type=int, help="torch threads in both processes (default: torch's)")
    parser.add_argument("--out", default="runs/bench/daemon_overhead.json")
    args = parser.parse_args()

    import torch

    from sa3core.pipeline import Pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = Pipeline.random("tiny", seed=0, text_encoder="hash")
    options = ["--model", "random:tiny", "--queue", "64"] + (["--threads", str(args.threads)] if args.threads else [])
    process, endpoint = common.start_serve(*options)
    try:
        with Client(endpoint, silence=120.0) as client:
            heartbeat_ms = sorted(1000 * client.ping() for _ in range(200))
            client.generate("warm-up", seconds=1.0, steps=1)
            pipeline.generate("warm-up", timebase.SAMPLE_RATE, steps=1)
            trips = [round_trip(pipeline, client, s, args.steps, args.repeats) for s in args.lengths]
        rate = throughput(endpoint, args.clients, args.duration, 1.0, args.steps)
    finally:
        process.terminate()
        process.wait(60)

    print(f"heartbeat round trip: median {statistics.median(heartbeat_ms):.3f} ms")
    print(f"{'audio':>7} {'steps':>5} {'direct ms':>10} {'daemon ms':>10} {'diff ms':>8} {'overhead ms':>12}")
    for row in trips:
        print(
            f"{row['seconds']:>6g}s {row['steps']:>5} {row['direct_median_ms']:>10.1f} {row['daemon_median_ms']:>10.1f}"
            f" {row['difference_median_ms']:>8.1f} {row['daemon_overhead_median_ms']:>12.1f}"
        )
    print(
        f"throughput: {rate['jobs']} jobs of {rate['seconds_per_job']:g} s ({rate['steps']} steps) from "
        f"{rate['clients']} clients in {rate['elapsed_s']:.1f} s = {rate['jobs_per_minute']:.1f} jobs/min"
        f" ({rate['error_count']} errors)"
    )
    meta = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "model": "random tiny, hash text encoder",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "heartbeat_median_ms": statistics.median(heartbeat_ms), "round_trip": trips}
    out.write_text(json.dumps({**result, "throughput": rate}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
