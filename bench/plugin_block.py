"""Plugin shim benchmark: processBlock time while a request is in flight, and render latency.

    .venv/bin/python -m bench.plugin_block [--seconds 4] [--json out.json]

Starts `sa3 serve --model random:tiny` on a free loopback port, builds the shim if needed
(scripts/build-shim --no-vst3) and drives sa3shim as a host would:
1. processBlock time (median, 99th percentile, worst) for 64-, 512- and 4096-sample blocks at
   48 kHz while a take plays and a long inpaint request is rendering (timed inside C++,
   around the call: capture, take playback, host-position publish);
2. time from "render" to the first audible sample of the result, for 4 bars of 4/4 at
   120 bpm (8 s) with the tiny model at its default steps, generate and inpaint, with the host
   looping the region in real time in 512-sample blocks.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def start_daemon(threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    cmd = [sys.executable, "-m", "sa3", "serve", "--bind", endpoint, "--model", "random:tiny"]
    cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if re.search("listening on", line):
            return proc, endpoint
    raise RuntimeError("sa3 serve did not start")


def wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.005)


def signal(samples: int, rate: int) -> np.ndarray:
    t = np.arange(samples) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32)


def block_times(sa3shim, endpoint: str, seconds: float) -> dict:
    rate = 48000
    p = sa3shim.Processor(endpoint=endpoint, context_seconds=10.0)
    p.prepare_to_play(rate, 4096)
    wait(lambda: p.online, 60)
    audio = signal(rate * 30, rate)
    for t in range(0, audio.shape[1], 4096):  # capture 30 s, loop bars 3-10
        p.process_block(np.ascontiguousarray(audio[:, t : t + 4096]), time_in_samples=t, bpm=120.0, is_playing=True)
    # A first, quick take over the loop, so the timed blocks also play a take (the worst path).
    p.steps = 2
    loop = {"is_looping": True, "loop_points": (8.0, 40.0), "bpm": 120.0, "is_playing": True}
    p.process_block(np.zeros((2, 64), np.float32), time_in_samples=0, **loop)
    p.request_render()
    wait(lambda: p.renders_completed == 1, 300)
    p.steps = 100  # keeps the next requests in flight while we measure
    results = {}
    for size in (64, 512, 4096):
        p.request_render()
        wait(lambda: p.status == "rendering" and p.progress > 0, 120)
        times = []
        block = np.ascontiguousarray(audio[:, :size])
        position = 4 * rate
        for _ in range(max(200, int(seconds * rate / size))):
            b = block.copy()
            p.process_block(
                b,
                time_in_samples=position,
                bpm=120.0,
                time_signature=(4, 4),
                is_playing=True,
                is_looping=True,
                loop_points=(8.0, 40.0),
            )
            times.append(p.last_block_seconds)
            position += size
        in_flight = p.status == "rendering"
        p.cancel_render()
        times_us = np.array(times) * 1e6
        results[size] = {
            "blocks": len(times),
            "median_us": round(float(np.median(times_us)), 2),
            "p99_us": round(float(np.percentile(times_us, 99)), 2),
            "worst_us": round(float(times_us.max()), 2),
            "block_budget_us": round(size / rate * 1e6, 1),
            "request_in_flight_throughout": in_flight,
            "take_playing": p.active_take >= 0,
        }
        time.sleep(0.3)
    return results


def render_latency(sa3shim, endpoint: str, mode: str) -> dict:
    rate, bpm = 44100, 120.0
    p = sa3shim.Processor(endpoint=endpoint, context_seconds=10.0)
    p.prepare_to_play(rate, 512)
    p.mode, p.bars, p.region_bars = mode, 4, (2.0, 6.0)
    wait(lambda: p.online, 60)
    audio = signal(rate * 20, rate)
    start, end = 2 * rate, 10 * rate  # bars 2-5: 4 bars of 2 s
    for t in range(0, audio.shape[1], 512):
        p.process_block(np.ascontiguousarray(audio[:, t : t + 512]), time_in_samples=t, bpm=bpm, is_playing=True)
    t0 = time.monotonic()
    p.request_render()
    position = start
    while True:  # the host loops the region in real time
        block = np.ascontiguousarray(audio[:, position : position + 512])
        dry = block.copy()
        p.process_block(block, time_in_samples=position, bpm=bpm, is_playing=True)
        if not np.array_equal(block, dry):
            return {"seconds": round(time.monotonic() - t0, 3), "steps": p.takes[-1]["steps"] or "model default"}
        if p.status == "error":
            raise RuntimeError(p.status_text)
        position = start if position + 512 >= end else position + 512
        time.sleep(512 / rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per block size to time (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the daemon (default 2)")
    parser.add_argument("--only-latency", action="store_true", help="skip the processBlock timings")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    subprocess.run([str(REPO / "scripts" / "build-shim"), "--no-vst3"], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(REPO / "plugin_shim" / "python"))
    import sa3shim

    results = {}
    if not args.only_latency:
        daemon, endpoint = start_daemon(args.threads)
        try:
            results["process_block"] = block_times(sa3shim, endpoint, args.seconds)
        finally:
            daemon.kill()
            daemon.wait()
    daemon, endpoint = start_daemon(args.threads)  # a fresh daemon: nothing queued before the timing
    try:
        results["render_to_audible"] = {
            mode: render_latency(sa3shim, endpoint, mode) for mode in ("generate", "inpaint")
        }
    finally:
        daemon.kill()
        daemon.wait()
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
