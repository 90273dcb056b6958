"""What the HTTP contract costs on top of the ZeroMQ path: ``sa3 bench http_overhead``.

One real ``sa3 serve --http`` subprocess on loopback serves both doors over its one engine.

1. Round trip: for each length (default 1 s and 30 s), the same generate job (same prompt, seed
   and steps) through the ZeroMQ client and through the HTTP contract (submit, poll, base64 WAV).
   Model time on shared cores is noisy, so each path's own overhead is reported too: round-trip
   wall time minus the time the engine spent on the job (the ZeroMQ result's ``seconds_elapsed``,
   the HTTP ``meta.generation_seconds``). HTTP polls every ``--poll-interval`` seconds (default
   0.02, so the number is the path's cost; the real clients poll every 1.5 s or 3 s and add up to
   one interval on top). Medians over ``--repeats``; result sizes are reported (float32 frames vs
   base64 16-bit WAV).
2. Health while a job runs: gary4juce's raw-socket ``/health`` probe (connect, write, read within
   its one-second budget), ``--probes`` times while the server is idle and again while a long job
   runs; median and worst milliseconds, and how many missed the budget.

Prints a table and writes JSON (``--out``). ``--quick`` is CI-sized.
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time

from bench import common
from sa3core import timebase

PROMPT = "punchy drum loop with a warm bassline, 120 bpm"


def start_server(model: str | None, threads: int) -> tuple[subprocess.Popen, str, tuple[str, int]]:
    command = [sys.executable, "-m", "sa3", "serve", "--bind", "tcp://127.0.0.1:*", "--http", "127.0.0.1:0"]
    command += (
        ["--queue", "64"] + (["--model", model] if model else []) + (["--threads", str(threads)] if threads else [])
    )
    process = subprocess.Popen(command, cwd=common.REPO, stderr=subprocess.PIPE, text=True)
    endpoint = None
    for line in process.stderr:
        if match := re.search(r"listening on (\S+)", line):
            endpoint = match.group(1)
        if match := re.search(r"HTTP on http://([\d.]+):(\d+)", line):
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # keep it drained
            return process, endpoint, (match.group(1), int(match.group(2)))
    raise SystemExit("sa3 serve --http did not start")


def http_call(address, method: str, path: str, body: dict | None = None) -> dict:
    connection = http.client.HTTPConnection(*address, timeout=600)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    answer = json.loads(payload)
    answer["_bytes"] = len(payload)
    return answer


def http_generate(address, seconds: float, steps: int, seed: int, poll_interval: float) -> tuple[float, dict]:
    started = time.perf_counter()
    answer = http_call(
        address, "POST", "/generate", {"prompt": PROMPT, "duration": seconds, "steps": steps, "seed": seed}
    )
    while True:
        reply = http_call(address, "GET", f"/poll_status/{answer['session_id']}?consume=1")
        if reply["status"] in ("completed", "failed"):
            break
        time.sleep(poll_interval)
    wall = time.perf_counter() - started
    if reply["status"] != "completed":
        raise SystemExit(f"an HTTP job failed: {reply.get('error')}")
    return wall, reply


def round_trip(client, address, seconds: float, steps: int, repeats: int, poll_interval: float) -> dict:
    samples = timebase.seconds_to_samples(seconds)
    zmq_wall, zmq_over, http_wall, http_over, http_bytes = [], [], [], [], 0
    for k in range(repeats):
        started = time.perf_counter()
        result = client.generate(PROMPT, samples=samples, steps=steps, seed=k, progress=None)
        zmq_wall.append(time.perf_counter() - started)
        zmq_over.append(zmq_wall[-1] - result.header["seconds_elapsed"])
        wall, reply = http_generate(address, seconds, steps, k, poll_interval)
        http_wall.append(wall)
        http_over.append(wall - reply["meta"]["generation_seconds"])
        http_bytes = reply["_bytes"]
        assert result.audio.shape[-1] == reply["meta"]["samples"] == samples, "the two paths made different lengths"
    return {
        "seconds": seconds,
        "samples": samples,
        "steps": steps,
        "repeats": repeats,
        "poll_interval_s": poll_interval,
        "zmq_median_ms": 1000 * statistics.median(zmq_wall),
        "http_median_ms": 1000 * statistics.median(http_wall),
        "zmq_overhead_median_ms": 1000 * statistics.median(zmq_over),
        "http_overhead_median_ms": 1000 * statistics.median(http_over),
        "http_minus_zmq_overhead_ms": 1000 * (statistics.median(http_over) - statistics.median(zmq_over)),
        "zmq_result_bytes": samples * timebase.CHANNELS * 4,
        "http_result_bytes": http_bytes,
    }


def probe(address) -> float:
    """gary4juce's Windows probe, once: seconds until a framed 2xx answer (inf past its 1 s budget)."""
    import socket

    started = time.perf_counter()
    with socket.create_connection(address, timeout=0.4) as sock:
        sock.sendall(
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\nAccept: application/json\r\nConnection: close\r\n\r\n".encode()
        )
        sock.settimeout(1.0)
        response = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                return float("inf")
            if not chunk:
                break
            response += chunk
    elapsed = time.perf_counter() - started
    return elapsed if response.startswith(b"HTTP/1.1 200") and elapsed <= 1.0 else float("inf")


def health_latency(address, probes: int, long_job: dict | None) -> dict:
    session = None
    if long_job is not None:
        session = http_call(address, "POST", "/generate", long_job)["session_id"]
        while http_call(address, "GET", f"/poll_status/{session}")["step"] < 1:
            time.sleep(0.05)
    times = []
    for _ in range(probes):
        times.append(probe(address))
        time.sleep(0.05)
    if session is not None:
        http_call(address, "POST", f"/cancel/{session}")
    finite = [t for t in times if t != float("inf")]
    return {
        "while": "a job runs" if long_job else "idle",
        "probes": probes,
        "median_ms": 1000 * statistics.median(finite) if finite else None,
        "worst_ms": 1000 * max(finite) if finite else None,
        "over_budget": len(times) - len(finite),
    }


def main() -> None:
    parser = common.parser("http_overhead", __doc__)
    parser.add_argument("--lengths", type=float, nargs="+", help="seconds of audio (default 1 30; --quick 1)")
    parser.add_argument("--steps", type=int, help="sampler steps (default 8; --quick 2)")
    parser.add_argument("--probes", type=int, help="health probes per state (default 100; --quick 10)")
    parser.add_argument(
        "--poll-interval", type=float, default=0.02, help="HTTP poll interval in seconds (default 0.02)"
    )
    parser.add_argument("--model", help="model to serve (default: the shipped model)")
    args = parser.parse_args()
    lengths = args.lengths or ([1.0] if args.quick else [1.0, 30.0])
    steps = args.steps or (2 if args.quick else 8)
    probes = args.probes or (10 if args.quick else 100)
    machine = common.machine()

    from bridge.client import Client

    process, endpoint, address = start_server(args.model, args.threads)
    try:
        with Client(endpoint, silence=300.0) as client:
            client.generate("warm-up", seconds=1.0, steps=1)
            http_generate(address, 1.0, 1, 0, args.poll_interval)
            trips = [round_trip(client, address, s, steps, common.repeats(args), args.poll_interval) for s in lengths]
        long_job = {"prompt": PROMPT, "duration": 120.0, "steps": 100, "seed": 1}
        health = [health_latency(address, probes, None), health_latency(address, probes, long_job)]
    finally:
        process.terminate()
        process.wait(60)

    print(common.describe(machine))
    print(
        common.table(
            trips,
            [
                ("seconds", "audio s", "g"),
                ("steps", "steps", "d"),
                ("zmq_median_ms", "zmq ms", ".1f"),
                ("http_median_ms", "http ms", ".1f"),
                ("zmq_overhead_median_ms", "zmq over ms", ".1f"),
                ("http_overhead_median_ms", "http over ms", ".1f"),
                ("http_result_bytes", "http bytes", "d"),
            ],
        )
    )
    print(
        common.table(
            health,
            [
                ("while", "health probe", "s"),
                ("median_ms", "median ms", ".2f"),
                ("worst_ms", "worst ms", ".2f"),
                ("over_budget", "over 1 s", "d"),
            ],
        )
    )
    out = common.write_json(args.out, "http_overhead", {"round_trip": trips, "health": health}, machine)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
