"""Thousands of random and mutated messages at a real daemon (loopback only, bounded in count and
time): every one gets an answer, and the daemon still serves a valid request afterwards."""

from __future__ import annotations

import random
import time

import msgpack
import numpy as np
import zmq

from bridge import protocol as P
from bridge.client import Client
from tests.bridge.conftest import DaemonProcess

MESSAGES = 3000
BATCH = 100  # send a batch, then read its answers, so no reply is dropped at the send high-water mark
TIME_LIMIT = 60.0

VALID = [
    {"type": "hello", "v": "1.0", "client": "fuzz"},
    {"type": "status"},
    {"type": "heartbeat"},
    {"type": "generate", "prompt": "x", "seconds": 0.1, "steps": 1},
    {"type": "generate", "prompt": "y", "bars": 1, "bpm": 600, "meter": "3/4", "sample_rate": 48_000, "steps": 1},
    {"type": "cancel", "job_id": "ab" * 16},
    {"type": "fetch", "job_id": "cd" * 16},
    {
        "type": "continue",
        "prompt": "z",
        "samples": 2000,
        "steps": 1,
        "audio": {"sample_rate": 44_100, "channels": 1, "samples": 64},
    },
    {
        "type": "inpaint",
        "prompt": "w",
        "regions": [[8, 32]],
        "steps": 1,
        "audio": {"sample_rate": 96_000, "channels": 2, "samples": 64},
    },
]
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64 - 1,
    -(2**63),
    1e308,
    float("nan"),
    float("inf"),
    -0.0,
    "",
    "é" * 50,
    "x" * 3000,
    b"\x00\xff",
    [],
    [1, [2, [3]]],
    {},
    {"a": {"b": 1}},
    [[0, 10]] * 80,
    "4/4",
    44_100,
    1e-300,
]


def _mutate(rng: random.Random, header: dict) -> dict:
    header = dict(header)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        if action < 0.4 and header:
            header[rng.choice(list(header))] = rng.choice(ODD_VALUES)
        elif action < 0.6 and header:
            del header[rng.choice(list(header))]
        elif action < 0.8:
            header[
                rng.choice(
                    [
                        "type",
                        "v",
                        "seconds",
                        "samples",
                        "bars",
                        "bpm",
                        "regions",
                        "audio",
                        "job_id",
                        "seed",
                        "variations",
                        "steps",
                        "cfg",
                        "sample_rate",
                        "unknown_field",
                    ]
                )
            ] = rng.choice(ODD_VALUES)
        else:
            header["type"] = rng.choice(list(P.MESSAGE_TYPES) + ["", "GENERATE", "generate\0"])
    return header


def _message(rng: random.Random) -> list[bytes]:
    kind = rng.random()
    if kind < 0.15:  # pure noise, one to three frames
        return [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 3))]
    base = dict(rng.choice(VALID))
    header = _mutate(rng, base) if kind < 0.8 else base
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError):
        packed = b"\x80"
    if rng.random() < 0.2:  # corrupt the bytes
        data = bytearray(packed)
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        packed = bytes(data[: rng.randint(0, len(data))]) if rng.random() < 0.3 else bytes(data)
    frames = [packed]
    audio = header.get("audio") if isinstance(header.get("audio"), dict) else None
    if audio is not None and rng.random() < 0.9:
        count = 64 * (audio.get("channels") if audio.get("channels") in (1, 2) else 2)
        samples = np.random.default_rng(rng.randrange(2**32)).standard_normal(count).astype("<f4")
        if rng.random() < 0.2:
            samples[rng.randrange(count)] = rng.choice([np.nan, np.inf])
        raw = samples.tobytes()
        frames.append(raw[: rng.randrange(len(raw))] if rng.random() < 0.2 else raw)
    if rng.random() < 0.05:
        frames.append(rng.randbytes(16))
    return frames


def test_fuzzed_messages_never_stop_the_daemon():
    daemon = DaemonProcess("--max-seconds", "2", "--queue", "4", "--threads", "1").wait_ready()
    rng = random.Random(1234)
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(daemon.endpoint)
    replies, job_ids, sent = [], set(), 0
    started = time.monotonic()
    try:
        while sent < MESSAGES and time.monotonic() - started < TIME_LIMIT:
            for _ in range(BATCH):
                socket.send_multipart(_message(rng))
                sent += 1
            expected = len(replies) + BATCH
            deadline = time.monotonic() + 20
            while len(replies) < expected and time.monotonic() < deadline:
                if socket.poll(200):
                    header, _ = P.decode_header(socket.recv_multipart()[0], 1 << 24)
                    replies.append(header)
                    if header["type"] == "queued":
                        job_ids.add(header["job_id"])
        assert daemon.process.poll() is None, daemon.stderr()
        assert sent >= 1000, f"only {sent} messages in {TIME_LIMIT} s"
        # Every message got at least one answer (jobs that slipped through add progress and results).
        assert len(replies) >= sent
        codes = {h["code"] for h in replies if h["type"] == "error"}
        assert {"bad_header", "bad_field", "unknown_type"} <= codes
        assert codes <= set(P.ERROR_CODES)
        # Clear what the fuzz queued, then a normal client is served.
        with Client(daemon.endpoint, silence=30.0) as client:
            for job_id in job_ids:
                if client.status(job_id)["job"]["state"] in ("queued", "running"):
                    try:
                        client.cancel(job_id)
                    except Exception:
                        pass  # it ended between the two calls
            result = client.generate("after the storm", samples=4096, steps=1, timeout=60)
            assert result.audio.shape == (1, 2, 4096) and np.isfinite(result.audio).all()
        assert "Traceback" not in daemon.stderr()
    finally:
        socket.close()
        daemon.stop()
