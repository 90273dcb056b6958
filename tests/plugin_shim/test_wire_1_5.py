"""What the shim puts on the wire for protocol 1.5's LoRA adapters (docs/protocol.md 4.12), read by a
stand-in daemon that records every header: the filled slots go with every job in slot order (a slot
at strength 0 is left out), the take records the adapters the result names, an adapter the daemon
has not, or that does not fit the job's model, is one status line and nothing is sent, and a daemon
that says less than 1.5 (or has not said yet) never gets `loras`.

The real daemon, with real adapters on the released small fixture, is in test_loras.py.
"""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from .conftest import free_port, wait_for
from .test_wire_1_4 import MODELS, ready

ADAPTERS = [
    {"name": "dusty-tape", "file": "Dusty-Tape.safetensors", "rank": 8, "adapter_type": "lora", "fits": ["house", "small"]},
    {"name": "drums", "file": "drums.safetensors", "rank": 4, "adapter_type": "dora-rows", "fits": ["house"]},
    {"name": "broken", "file": "broken.safetensors", "rank": None, "adapter_type": None, "fits": []},
]  # fmt: skip


class LoraStandIn:
    """A ROUTER on loopback speaking protocol `version`, serving `models`, with `loras` in its folder.
    It records each hello and job header, answers jobs with a quiet sine of the right length, and
    echoes the job's `loras` in the result (names as its capabilities spell them) from 1.5 on. While
    `hello_gate` is clear it leaves hellos unanswered (a dropped hello), but answers heartbeats."""

    def __init__(self, version: str = "1.5", loras=tuple(ADAPTERS), max_loras: int = 8, models=tuple(MODELS)) -> None:
        self.version, self.loras, self.max_loras, self.models = version, list(loras), max_loras, list(models)
        self.hellos: list[dict] = []
        self.jobs: list[tuple[dict, int]] = []  # (header, bytes of the audio frame or 0)
        self.hello_gate = threading.Event()
        self.hello_gate.set()
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.bind(self.endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    def send(self, identity: bytes, header: dict, *frames: bytes) -> None:
        self.router.send_multipart([identity, msgpack.packb({"v": self.version, **header}), *frames])

    def spelled(self, name: str) -> str:
        return next((entry["name"] for entry in self.loras if entry["name"] == name.lower()), name)

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.router.poll(50):
                continue
            identity, raw, *frames = self.router.recv_multipart()
            header = msgpack.unpackb(raw)
            kind, request_id = header["type"], header.get("request_id")
            if kind == "hello":
                self.hellos.append(header)
                if not self.hello_gate.is_set():
                    continue
                capabilities = {"type": "capabilities", "default_steps": 8, "models": self.models}
                if self.minor >= 5:
                    capabilities |= {"loras": self.loras, "max_loras": self.max_loras}
                self.send(identity, capabilities)
            elif kind == "heartbeat":
                self.send(identity, {"type": "heartbeat", "queue_length": 0, "running": None})
            elif kind in ("generate", "inpaint", "continue", "transform"):
                self.jobs.append((header, len(frames[0]) if frames else 0))
                rate = header["sample_rate"]
                samples = header["audio"]["samples"] if kind in ("inpaint", "transform") else header["samples"]
                if kind == "continue":
                    samples += header["audio"]["samples"]
                sine = 0.25 * np.sin(2 * np.pi * 220.0 * np.arange(samples) / rate)
                job = {"request_id": request_id, "job_id": "0" * 32}
                self.send(identity, {"type": "queued", **job, "position": 0, "mode": kind})
                result = {"type": "result", **job, "mode": kind, "variations": 1, "steps": 8,
                          "audio": {"sample_rate": rate, "channels": 2, "samples": samples},
                          "model": header.get("model", self.models[0]["name"])}  # fmt: skip
                if self.minor >= 5:
                    result["loras"] = [
                        {"name": self.spelled(lora["name"]), "strength": lora["strength"]}
                        for lora in header.get("loras", [])
                    ]
                self.send(identity, result, np.stack([sine, sine]).astype("<f4").tobytes())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.router.close(linger=0)
        self.context.term()


@pytest.fixture
def stand_in(request):
    d = LoraStandIn(**getattr(request, "param", {}))
    yield d
    d.close()


def waited(p, predicate, what: str, timeout: float = 30) -> None:
    try:
        wait_for(predicate, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}; status: {p.status} | {p.status_text}") from None


def render(p, jobs) -> tuple[dict, int]:
    """Request a render that must make a take; the header and audio bytes it sent. (The status may
    still show an earlier refusal until the worker takes the request, so only the take counts.)"""
    done, sent = p.renders_completed, len(jobs)
    p.request_render()
    waited(p, lambda: p.renders_completed > done, "a take")
    assert len(jobs) == sent + 1
    return jobs[-1]


def refused(p, jobs, why: str) -> None:
    """Request a render that must be refused with `why` before anything is sent."""
    sent = len(jobs)
    p.request_render()
    waited(p, lambda: p.status == "error" and p.status_text == why, "the render to be refused")
    time.sleep(0.1)  # a job sent anyway would be recorded by now
    assert len(jobs) == sent, "the refused render was sent"


def test_the_limits_are_the_daemons(shim):
    from bridge.protocol import MAX_LORA_STRENGTH, MAX_LORAS

    assert (shim.MAX_LORAS, shim.MAX_LORA_STRENGTH) == (MAX_LORAS, MAX_LORA_STRENGTH)
    assert shim.LORA_SLOTS <= shim.MAX_LORAS and shim.DEFAULT_LORA_STRENGTH == 1.0
    major, minor = map(int, shim.PROTOCOL_VERSION.split("."))
    assert (major, minor) >= (1, 5)  # the shim speaks 1.5 and what came after it (test_wire_1_6.py)


def test_the_menu_reads_the_adapters_and_whom_they_fit(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert stand_in.hellos[0]["v"] == shim.PROTOCOL_VERSION
    assert p.loras == ADAPTERS and p.max_loras == 8
    assert p.job_model == "house"  # none chosen: the daemon's first, whose fits the menu shows
    p.model = "small"
    assert p.job_model == "small"


@pytest.mark.parametrize("mode", ["generate", "inpaint", "continue", "transform"])
def test_the_slots_go_with_every_job_in_slot_order(shim, stand_in, mode):
    p, _, _ = ready(shim, stand_in.endpoint, mode)
    # slot 2 empty, slot 4 at strength 0 (left out: not even checked, though the daemon has no such adapter)
    p.lora_slots = [("drums", 0.5), None, ("Dusty-Tape", -1.25), ("gone", 0.0)]
    header, _ = render(p, stand_in.jobs)
    assert header["type"] == mode
    assert header["loras"] == [{"name": "drums", "strength": 0.5}, {"name": "Dusty-Tape", "strength": -1.25}]
    # the take records what the result says made it, spelled as the daemon's capabilities do
    assert p.takes[-1]["loras"] == [("drums", 0.5), ("dusty-tape", -1.25)]

    p.lora_slots = [("dusty-tape", 2.0), ("drums", -2.0)]  # the order is the slots' order
    header, _ = render(p, stand_in.jobs)
    assert [(lora["name"], lora["strength"]) for lora in header["loras"]] == [("dusty-tape", 2.0), ("drums", -2.0)]

    p.lora_slots = []  # no adapters: the field is left out and the take records none
    header, _ = render(p, stand_in.jobs)
    assert "loras" not in header and p.takes[-1]["loras"] == []


def test_an_adapter_the_daemon_cannot_use_is_one_line_and_nothing_is_sent(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    at = f"the daemon at {stand_in.endpoint}"
    p.lora_slots = [("gone", 1.0)]  # e.g. a project saved against another daemon's folder
    refused(
        p,
        stand_in.jobs,
        f"{at} has no LoRA 'gone'; choose one of dusty-tape, drums, broken in the LoRA slots, or set that slot to none",
    )
    p.model, p.lora_slots = "small", ["drums"]
    refused(
        p,
        stand_in.jobs,
        "LoRA 'drums' does not fit model 'small' (it fits house); choose another adapter or model",
    )
    p.lora_slots = [None, "broken"]
    refused(
        p,
        stand_in.jobs,
        f"{at} cannot read LoRA 'broken' (broken.safetensors); replace the file there or set that slot to none",
    )
    p.lora_slots = [("dusty-tape", 1.0), ("dusty-tape", 0.0), ("DUSTY-TAPE", 0.5)]  # names match in any case
    refused(
        p,
        stand_in.jobs,
        "LoRA 'DUSTY-TAPE' is in slots 1 and 3; an adapter applies once: set one of them to none",
    )
    p.model = None  # the daemon's first, house, which drums fits
    p.lora_slots = ["drums", ("dusty-tape", 0.3)]
    header, _ = render(p, stand_in.jobs)
    assert p.status != "error" and header["model"] == "house" and len(header["loras"]) == 2


@pytest.mark.parametrize("stand_in", [{"max_loras": 1}], indirect=True)
def test_more_adapters_than_the_daemon_takes_is_one_line(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert p.max_loras == 1
    p.lora_slots = ["drums", "dusty-tape"]
    refused(
        p,
        stand_in.jobs,
        f"the daemon at {stand_in.endpoint} takes at most 1 LoRA adapter per job; set the other slots to none",
    )
    p.lora_slots = ["drums", ("dusty-tape", 0.0)]  # at strength 0 it is not sent, so not counted
    assert render(p, stand_in.jobs)[0]["loras"] == [{"name": "drums", "strength": 1.0}]


@pytest.mark.parametrize("stand_in", [{"loras": []}], indirect=True)
def test_a_daemon_without_a_lora_folder_says_how_to_give_it_one(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert p.loras == [] and p.max_loras == 8
    p.lora_slots = ["drums"]
    refused(
        p,
        stand_in.jobs,
        f"the daemon at {stand_in.endpoint} has no LoRA 'drums'; its LoRA folder has none "
        "(start sa3 serve with --lora-dir DIR), or set that slot to none",
    )


@pytest.mark.parametrize("stand_in", [{"version": "1.4"}], indirect=True)
def test_a_1_4_daemon_never_gets_loras(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert p.daemon_version == "1.4" and p.loras == [] and p.max_loras is None
    header, _ = render(p, stand_in.jobs)  # no adapters chosen: it renders, as before
    assert "loras" not in header and p.takes[-1]["loras"] == []
    p.lora_slots = [None, ("drums", 0.0)]  # strength 0 leaves it out: nothing of 1.5 asked for
    assert "loras" not in render(p, stand_in.jobs)[0]
    p.lora_slots = [("drums", 0.5)]
    refused(
        p,
        stand_in.jobs,
        f"the daemon at {stand_in.endpoint} speaks protocol 1.4, which has no LoRA adapters (added in 1.5); "
        "update sa3 there or set the LoRA slots to none",
    )


@pytest.mark.parametrize("version", ["1.5", "1.4"])
def test_a_job_with_adapters_waits_for_the_daemons_capabilities(shim, version):
    """A daemon heard from (heartbeats) but whose capabilities have not arrived (a dropped hello) might
    be a 1.4 one, which would ignore the adapters: the job waits for them, asking again."""
    stand_in = LoraStandIn(version=version)
    stand_in.hello_gate.clear()
    try:
        p, _, _ = ready_without_capabilities(shim, stand_in)
        p.lora_slots = ["drums"]
        p.request_render()
        wait_for(lambda: "waiting for the daemon's capabilities" in p.status_text, 30, "the job to wait")
        hellos = len(stand_in.hellos)
        time.sleep(1.5)  # three heartbeats
        assert stand_in.jobs == [] and p.status == "rendering"
        assert len(stand_in.hellos) > hellos  # asked again
        stand_in.hello_gate.set()
        if version == "1.5":
            wait_for(lambda: p.renders_completed == 1, 30, "the take")
            assert stand_in.jobs[0][0]["loras"] == [{"name": "drums", "strength": 1.0}]
        else:
            wait_for(lambda: p.status == "error", 30, "the render to be refused")
            assert "speaks protocol 1.4, which has no LoRA adapters" in p.status_text
            time.sleep(0.2)
            assert stand_in.jobs == []
    finally:
        stand_in.close()


def ready_without_capabilities(shim, stand_in):
    """As test_wire_1_4.ready, for a daemon that answers heartbeats but not (yet) hellos."""
    from .conftest import Host, test_signal
    from .test_wire_1_4 import LOOP, RATE

    p = shim.Processor(endpoint=stand_in.endpoint, context_seconds=1.0)
    p.prepare_to_play(RATE, 512)
    p.mode = "inpaint"
    wait_for(lambda: p.online, 30, "the daemon's heartbeat")
    assert p.daemon_version is None
    audio = test_signal(2, RATE * 4, RATE)
    Host(p, RATE).play(audio, loop_points=LOOP)
    return p, None, audio


def test_slot_settings_are_checked(shim):
    p = shim.Processor(endpoint="tcp://127.0.0.1:9")
    assert p.lora_slots == [(None, 1.0)] * shim.LORA_SLOTS
    p.set_lora_slot(2, "drums", -0.5)
    p.set_lora_strength(0, 2.0)
    assert p.lora_slots == [(None, 2.0), (None, 1.0), ("drums", -0.5), (None, 1.0)]
    for strength in (2.01, -2.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="LoRA strength"):
            p.set_lora_slot(1, "x", strength)
        with pytest.raises(ValueError, match="LoRA strength"):
            p.lora_slots = [("x", strength)]
    for slot in (-1, shim.LORA_SLOTS):
        with pytest.raises(IndexError, match="LoRA slot"):
            p.set_lora_slot(slot, "x")
        with pytest.raises(IndexError, match="LoRA slot"):
            p.set_lora_strength(slot, 1.0)
    with pytest.raises(ValueError, match="at most"):
        p.lora_slots = ["a"] * (shim.LORA_SLOTS + 1)
    assert p.lora_slots == [(None, 2.0), (None, 1.0), ("drums", -0.5), (None, 1.0)]  # unchanged
    p.set_lora_slot(2, None)  # emptied, at the default strength
    assert p.lora_slots[2] == (None, 1.0)
