"""No take reaches the host above -1 dBFS (issue 26, item 3): a daemon from before protocol 1.3
kept no level ceiling (a take reached +21 dBFS through the plugin), so the plugin turns a loud
take down as a whole, on its worker thread, before the audio thread plays it.

A real daemon keeps its own ceiling from 1.3 on, so the loud daemon here is a stand-in that
speaks just enough of docs/protocol.md (hello, heartbeat, a job answered by `queued` and one
`result`) to send a take at +12 dBFS, as a 1.2 daemon's inpaint did.
"""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
import zmq

from .conftest import Host, free_port, test_signal, wait_for

LOUD_PEAK = 4.0  # +12 dBFS


class LoudDaemon:
    """A ROUTER on loopback answering every job with a sine at LOUD_PEAK (protocol 1.2 headers, or
    `version`'s: a transform needs a daemon that says 1.4, and the plugin still trusts no level)."""

    def __init__(self, version: str = "1.2") -> None:
        self.version = version
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.bind(self.endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def send(self, identity: bytes, header: dict, *frames: bytes) -> None:
        self.router.send_multipart([identity, msgpack.packb({"v": self.version, **header}), *frames])

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.router.poll(50):
                continue
            identity, raw, *frames = self.router.recv_multipart()
            header = msgpack.unpackb(raw)
            kind, request_id = header["type"], header.get("request_id")
            if kind == "hello":
                self.send(identity, {"type": "capabilities", "default_steps": 8})
            elif kind == "heartbeat":
                self.send(identity, {"type": "heartbeat", "queue_length": 0, "running": None})
            elif kind in ("generate", "inpaint", "continue", "transform"):
                rate = header["sample_rate"]
                samples = header["audio"]["samples"] if kind in ("inpaint", "transform") else header["samples"]
                if kind == "continue":
                    samples += header["audio"]["samples"]
                t = np.arange(samples) / rate
                sine = LOUD_PEAK * np.sin(2 * np.pi * 110.0 * t)
                audio = np.stack([sine, 0.5 * sine]).astype("<f4")  # the right channel 6 dB down
                job = {"request_id": request_id, "job_id": "0" * 32}
                self.send(identity, {"type": "queued", **job, "position": 0, "mode": kind})
                info = {"sample_rate": rate, "channels": 2, "samples": samples}
                result = {"type": "result", **job, "mode": kind, "audio": info, "variations": 1, "steps": 8}
                self.send(identity, result, audio.tobytes())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.router.close(linger=0)
        self.context.term()


@pytest.fixture
def loud_daemon(mode):
    d = LoudDaemon("1.4" if mode == "transform" else "1.2")
    yield d
    d.close()


@pytest.mark.parametrize("mode", ["inpaint", "generate", "transform"])
def test_a_loud_take_is_turned_down_to_the_ceiling_before_it_plays(shim, loud_daemon, mode):
    rate, loop = 48000, (4.0, 8.0)
    ceiling = 10 ** (-1 / 20)  # -1 dBFS, docs/plugin.md
    p = shim.Processor(endpoint=loud_daemon.endpoint, context_seconds=1.0)
    p.prepare_to_play(rate, 512)
    p.mode = mode
    host = Host(p, rate)
    audio = test_signal(2, rate * 6, rate)
    wait_for(lambda: p.online, 30, "the daemon")
    host.play(audio, loop_points=loop)
    p.request_render()
    wait_for(lambda: p.renders_completed == 1 or p.status == "error", 30, "the take")
    assert p.status == "idle", p.status_text
    assert p.status_text == "take 1 ready (turned down 13.0 dB to the -1 dBFS ceiling)"
    take = p.take_audio(0)
    assert np.abs(take).max() <= ceiling
    assert np.abs(take).max() > ceiling * 0.999  # at the ceiling, not further down
    # One gain for the whole take: the right channel stays 6 dB under the left.
    np.testing.assert_allclose(take[1], 0.5 * take[0], rtol=0, atol=1e-6)
    out = host.play(audio, loop_points=loop)
    start = p.takes[0]["start"]
    end = start + p.takes[0]["length"]
    assert np.abs(out).max() <= ceiling
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, end:], audio[:, end:])
