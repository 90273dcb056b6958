"""What the shim puts on the wire for protocol 1.4 (docs/protocol.md), read by a stand-in daemon that
records every header: each job names its model (the daemon's first when none is chosen), a negative
prompt goes only when there is one, a transform carries the selection and its init noise level and
no length, and a daemon that speaks 1.3 gets none of it (one status line says why instead).

The real daemon is in test_models.py and test_transform.py; this one can also misbehave on purpose
(a transform reply of the wrong length), which the real daemon never does.
"""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
import zmq

from .conftest import Host, free_port, test_signal, wait_for

MODELS = [
    {"name": "house", "family": "sa3", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 380.0,
     "steering": ["scale_lock_db", "tail_seconds"]},
    {"name": "small", "family": "released", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 120.0,
     "steering": []},
]  # fmt: skip


class StandInDaemon:
    """A ROUTER on loopback that speaks protocol `version`, records each job header and its audio
    frame's length, and answers every job with a quiet sine of the length the protocol says
    (`short_by` samples fewer when asked to misbehave)."""

    def __init__(self, version: str = "1.4", short_by: int = 0) -> None:
        self.version, self.short_by = version, short_by
        self.jobs: list[tuple[dict, int]] = []  # (header, bytes of the audio frame or 0)
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
                capabilities = {"type": "capabilities", "default_steps": 8}
                if self.version == "1.4":
                    capabilities["models"] = MODELS
                self.send(identity, capabilities)
            elif kind == "heartbeat":
                self.send(identity, {"type": "heartbeat", "queue_length": 0, "running": None})
            elif kind in ("generate", "inpaint", "continue", "transform"):
                self.jobs.append((header, len(frames[0]) if frames else 0))
                rate = header["sample_rate"]
                samples = header["audio"]["samples"] if kind in ("inpaint", "transform") else header["samples"]
                if kind == "continue":
                    samples += header["audio"]["samples"]
                samples -= self.short_by
                sine = 0.25 * np.sin(2 * np.pi * 220.0 * np.arange(samples) / rate)
                job = {"request_id": request_id, "job_id": "0" * 32}
                self.send(identity, {"type": "queued", **job, "position": 0, "mode": kind})
                result = {"type": "result", **job, "mode": kind, "variations": 1, "steps": 8,
                          "audio": {"sample_rate": rate, "channels": 2, "samples": samples}}  # fmt: skip
                if self.version == "1.4":
                    result["model"] = header.get("model", MODELS[0]["name"])
                self.send(identity, result, np.stack([sine, sine]).astype("<f4").tobytes())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.router.close(linger=0)
        self.context.term()


@pytest.fixture
def stand_in(request):
    d = StandInDaemon(**getattr(request, "param", {}))
    yield d
    d.close()


RATE, LOOP = 48000, (4.0, 7.0)  # beats 4 to 7 at 120 bpm: samples 96,000 to 168,000


def ready(shim, endpoint, mode):
    p = shim.Processor(endpoint=endpoint, context_seconds=1.0)
    p.prepare_to_play(RATE, 512)
    p.mode = mode
    host = Host(p, RATE)
    audio = test_signal(2, RATE * 4, RATE)
    wait_for(lambda: p.daemon_version is not None, 30, "the daemon's capabilities")
    host.play(audio, loop_points=LOOP)
    return p, host, audio


def render(p, jobs=None):
    """Request a render; wait for its take (or an error). With `jobs`, return the header sent."""
    done, sent = p.renders_completed, len(jobs) if jobs is not None else 0
    p.request_render()
    wait_for(lambda: p.renders_completed > done or p.status == "error", 30, "a take")
    if jobs is not None:
        assert len(jobs) == sent + 1, p.status_text
        return jobs[-1]


def test_every_job_names_its_model_and_a_negative_prompt_only_when_there_is_one(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert [m["name"] for m in p.models] == ["house", "small"]
    header, _ = render(p, stand_in.jobs)
    assert header["model"] == "house"  # none chosen: the daemon's first, named
    assert "negative_prompt" not in header and "init_noise_level" not in header
    assert p.takes[-1]["model"] == "house" and p.takes[-1]["negative_prompt"] == ""

    p.model, p.negative_prompt = "small", "muddy, distorted"
    header, _ = render(p, stand_in.jobs)
    assert (header["model"], header["negative_prompt"]) == ("small", "muddy, distorted")
    assert (p.takes[-1]["model"], p.takes[-1]["negative_prompt"]) == ("small", "muddy, distorted")

    p.negative_prompt = ""
    header, _ = render(p, stand_in.jobs)
    assert "negative_prompt" not in header and header["model"] == "small"


def test_a_transform_sends_the_selection_and_its_noise_level_and_no_length(shim, stand_in):
    p, _, audio = ready(shim, stand_in.endpoint, "transform")
    assert p.init_noise_level == shim.DEFAULT_INIT_NOISE_LEVEL == 0.9
    header, frame_bytes = render(p, stand_in.jobs)
    start, end = 96_000, 168_000
    assert header["type"] == "transform" and header["init_noise_level"] == 0.9
    assert header["audio"] == {"sample_rate": RATE, "channels": 2, "samples": end - start}
    assert frame_bytes == 2 * (end - start) * 4
    assert not {"samples", "seconds", "bars", "regions"} & set(header)  # the reply keeps the input's length
    assert (header["bpm"], header["meter"]) == (120.0, "4/4")  # beat 4 of 4/4 is a bar line
    take = p.takes[-1]
    assert (take["mode"], take["start"], take["length"], take["init_noise_level"]) == ("transform", start, 72_000, 0.9)

    p.init_noise_level = 0.01
    assert render(p, stand_in.jobs)[0]["init_noise_level"] == 0.01
    for level in (0.0, 0.005, 1.01, float("nan")):
        with pytest.raises(ValueError, match="init noise level"):
            p.init_noise_level = level
    assert p.init_noise_level == 0.01  # unchanged


def test_a_transform_off_the_bar_line_is_not_told_the_tempo(shim, stand_in):
    """Told the tempo, the model puts a downbeat at the clip's first sample: a selection from beat 2
    would be made a beat out of time, so it goes without (the prompt may name a tempo)."""
    p, host, audio = ready(shim, stand_in.endpoint, "transform")
    host.play(audio, loop_points=(5.0, 7.0))
    header, _ = render(p, stand_in.jobs)
    assert "bpm" not in header and "meter" not in header
    assert header["audio"]["samples"] == 48_000


@pytest.mark.parametrize("stand_in", [{"short_by": 1}, {"short_by": -1}], indirect=True)
def test_a_transform_reply_of_another_length_is_refused(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "transform")
    render(p, stand_in.jobs)
    assert p.status == "error" and p.takes == []
    assert p.status_text == (
        f"the daemon's reply has {72_000 - stand_in.short_by} samples at {RATE} Hz, not the region asked for; "
        "render again"
    )


@pytest.mark.parametrize("stand_in", [{"version": "1.3"}], indirect=True)
def test_a_1_3_daemon_gets_no_1_4_field_and_a_status_line_says_why(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert p.models == [] and p.daemon_version == "1.3"
    header, _ = render(p, stand_in.jobs)  # nothing of 1.4 asked for: it renders
    assert not {"model", "negative_prompt", "init_noise_level"} & set(header)
    assert p.takes[-1]["model"] is None  # a 1.3 daemon names no model
    speaks = f"the daemon at {stand_in.endpoint} speaks protocol 1.3, which has "
    for setting, value, why in [
        ("mode", "transform", "no transform mode (added in 1.4); update sa3 there or choose another mode"),
        ("negative_prompt", "hiss", "no negative prompt (added in 1.4); update sa3 there or clear the negative prompt"),
        ("model", "house", "no model menu (added in 1.4); update sa3 there or set the model to the daemon's default"),
    ]:
        q, _, _ = ready(shim, stand_in.endpoint, "inpaint")
        setattr(q, setting, value)
        sent = len(stand_in.jobs)
        q.request_render()
        wait_for(lambda: q.status == "error", 30, "the render to be refused")  # noqa: B023
        assert q.status_text == speaks + why
        assert len(stand_in.jobs) == sent  # nothing was sent
