"""The real VST3 (JUCE) hosted by pedalboard, rendering against a real daemon.

Slow (the first build of the JUCE target takes minutes on 2 cores): run with
`pytest -m slow tests/plugin_shim`. pedalboard gives a hosted plugin no transport, so tempo,
meter and region come from the plugin's parameters ("follow host" off) and the timeline runs
free from each reset. The prompt is not a numeric parameter: the test sets it through the
plugin state (.vstpreset bytes), as a DAW restoring a project does.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from .conftest import REPO, build_shim, test_signal

VST3 = REPO / "build" / "shim-vst3" / "plugin_shim" / "juce" / "sa3_plugin_artefacts" / "Release" / "VST3" / "sa3.vst3"

pytestmark = pytest.mark.slow


class _Cursor:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.at = data, offset

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string(self) -> str:
        n = self.take("Q")
        text = self.data[self.at : self.at + n].decode()
        self.at += n
        return text

    def loras(self) -> list[tuple[str, float]]:
        return [(self.string(), self.take("d")) for _ in range(self.take("I"))]


def core_state(preset: bytes) -> dict:
    """Decode the core state (plugin_shim/src/state.cpp, version 5) inside .vstpreset bytes."""
    c = _Cursor(preset, preset.index(b"SA3S") + 4)
    assert c.take("I") == 5
    state = {"mode": c.take("i"), "bpm": c.take("d"), "meter": c.take("ii"), "region": c.take("dd")}
    state |= {"bars": c.take("d"), "seed": c.take("Q"), "steps": c.take("i"), "scale_lock_db": c.take("d")}
    state |= {"prompt": c.string()}
    state |= {"endpoint": c.string(), "negative_prompt": c.string(), "model": c.string()}
    state |= {"init_noise_level": c.take("d"), "lora_slots": c.loras(), "exact_length": c.take("B")}
    state |= {"next_id": c.take("Q"), "active": c.take("i"), "takes": []}
    for _ in range(c.take("Q")):
        take = {"id": c.take("Q"), "prompt": c.string(), "seed": c.take("Q"), "steps": c.take("i")}
        take |= {"scale_lock_db": c.take("d")}
        take |= {"mode": c.take("i"), "bpm": c.take("d"), "meter": c.take("ii"), "rate": c.take("d")}
        take |= {"start": c.take("q"), "model": c.string(), "negative_prompt": c.string()}
        take |= {"init_noise_level": c.take("d"), "loras": c.loras(), "exact_length": c.take("B")}
        take |= {"length": c.take("Q")}
        c.at += 8 * take["length"]  # left then right float32
        state["takes"].append(take)
    return state


def with_prompt(preset: bytes, prompt: str) -> bytes:
    """The same .vstpreset with another prompt in the component state."""

    def edit(data: bytes) -> bytes:
        c = _Cursor(data, data.index(b"SA3S") + 8 + 4 + 8 + 8 + 24 + 8 + 4 + 8)  # to the prompt
        start = c.at
        c.string()
        encoded = prompt.encode()
        return data[:start] + struct.pack("<Q", len(encoded)) + encoded + data[c.at :]

    return with_component(preset, edit)


def with_lora_slot(preset: bytes, slot: int, name: str) -> bytes:
    """The same .vstpreset with LoRA slot `slot` (0-based) naming `name`, as a project names it."""

    def edit(data: bytes) -> bytes:
        c = _Cursor(data, data.index(b"SA3S") + 8 + 4 + 8 + 8 + 24 + 8 + 4 + 8)  # to the prompt
        for _ in range(4):  # prompt, endpoint, negative prompt, model
            c.string()
        c.take("d")  # init noise level
        assert c.take("I") == 4  # the slots
        for _ in range(slot):
            c.string()
            c.take("d")
        start = c.at
        c.string()
        encoded = name.encode()
        return data[:start] + struct.pack("<Q", len(encoded)) + encoded + data[c.at :]

    return with_component(preset, edit)


def with_component(preset: bytes, edit) -> bytes:
    """The same .vstpreset with its component state passed through `edit` (chunk offsets rewritten)."""
    list_offset = struct.unpack_from("<q", preset, 40)[0]
    assert preset[:4] == b"VST3" and preset[list_offset : list_offset + 4] == b"List"
    count = struct.unpack_from("<i", preset, list_offset + 4)[0]
    chunks = []
    for i in range(count):
        cid, off, size = struct.unpack_from("<4sqq", preset, list_offset + 8 + 20 * i)
        data = preset[off : off + size]
        if cid == b"Comp":
            data = edit(data)
        chunks.append((cid, data))
    out = bytearray(preset[:48])
    entries = []
    for cid, data in chunks:
        entries.append((cid, len(out), len(data)))
        out += data
    struct.pack_into("<q", out, 40, len(out))
    out += b"List" + struct.pack("<i", len(entries))
    for cid, off, size in entries:
        out += struct.pack("<4sqq", cid, off, size)
    return bytes(out)


@pytest.fixture(scope="module")
def vst3_path():
    build_shim(vst3=True)
    assert VST3.exists(), f"{VST3} was not built"
    return str(VST3)


def test_vst3_renders_in_pedalboard(vst3_path, daemon, monkeypatch):
    import pedalboard  # a dev dependency of the VST3 test: fail loudly, never skip, when missing

    monkeypatch.setenv("SA3_ENDPOINT", daemon.endpoint)  # the default endpoint of new instances
    plugin = pedalboard.load_plugin(vst3_path)
    # pedalboard names parameters from their names plus units.
    names = "follow_host tempo_bpm meter_numerator region_start_bar region_end_bar scale_lock init_noise_level render"
    names += " lora_1_strength lora_2_strength lora_3_strength lora_4_strength exact_length"
    names = names.split()
    for name in names:
        assert name in plugin.parameters, sorted(plugin.parameters)
    plugin.follow_host = False
    # pedalboard guesses a float parameter's step from its text (~1 bpm here): set raw values.
    plugin.parameters["tempo_bpm"].raw_value = (100.0 - 20.0) / (999.0 - 20.0)
    plugin.parameters["region_start_bar"].raw_value = (2.0 - 1.0) / 999.0
    plugin.parameters["region_end_bar"].raw_value = (4.0 - 1.0) / 999.0
    plugin.meter_numerator = 3  # over the default denominator 4: 3/4
    assert plugin.parameters["mode"].valid_values == ["generate", "inpaint", "continue", "transform"]
    plugin.mode = "inpaint"
    # Steps start at the model's default (the request leaves them out), not a number of the plugin's.
    assert plugin.steps == "Model" and core_state(plugin.preset_data)["steps"] == 0
    assert plugin.parameters["steps"].valid_values[:2] == ["Model", "1"]  # ... "100"
    plugin.steps = 2
    assert plugin.scale_lock == "Model" and core_state(plugin.preset_data)["scale_lock_db"] == -1.0
    assert plugin.parameters["scale_lock"].valid_values[:3] == ["Model", "Off", "1 dB"]  # ... "48 dB"
    plugin.scale_lock = "24 dB"

    state = core_state(plugin.preset_data)
    assert state["endpoint"] == daemon.endpoint and state["takes"] == []
    # protocol 1.4: the daemon's default model, no negative prompt, transform's default noise level
    assert (state["model"], state["negative_prompt"], state["init_noise_level"]) == ("", "", pytest.approx(0.9))
    # protocol 1.5: four empty LoRA slots at strength 1, each strength an automatable parameter (-2 to 2)
    assert state["lora_slots"] == [("", 1.0)] * 4 and plugin.lora_1_strength == pytest.approx(1.0)
    plugin.parameters["lora_2_strength"].raw_value = (-0.5 + 2.0) / 4.0
    assert core_state(plugin.preset_data)["lora_slots"][1] == ("", pytest.approx(-0.5, abs=1e-6))
    plugin.parameters["lora_2_strength"].raw_value = (1.0 + 2.0) / 4.0
    # protocol 1.6: exact length, off by default, an automatable parameter saved in the core state
    assert not plugin.exact_length and state["exact_length"] == 0
    plugin.exact_length = True  # the tiny sa3 model makes the exact length anyway: the take is as before
    assert core_state(plugin.preset_data)["exact_length"] == 1
    plugin.preset_data = with_prompt(plugin.preset_data, "tape hiss and rain")
    state = core_state(plugin.preset_data)
    assert state["prompt"] == "tape hiss and rain"
    assert state["meter"] == (3, 4) and state["steps"] == 2 and state["mode"] == 1 and state["scale_lock_db"] == 24.0
    # Parameters travel normalised to 0..1 in float32: compare tempo and region to within a hair.
    assert abs(state["bpm"] - 100.0) < 0.01 and np.allclose(state["region"], (2.0, 4.0), atol=1e-3)

    rate = 44100
    audio = test_signal(2, rate * 8, rate)
    dry = plugin.process(audio, rate, buffer_size=512)
    assert np.array_equal(dry, audio)  # nothing rendered yet: dry, sample for sample

    plugin.render = True  # the trigger parameter: rising edge at the next block
    plugin.process(audio, rate, buffer_size=512)
    plugin.render = False
    deadline = time.monotonic() + 120
    while not core_state(plugin.preset_data)["takes"] and time.monotonic() < deadline:
        time.sleep(0.1)
    takes = core_state(plugin.preset_data)["takes"]
    assert len(takes) == 1, "no take arrived from the daemon"
    # bars 2..4 of 3/4 at 100 bpm: a bar is 1.8 s, so about 1.8 s to 5.4 s
    bar = 60.0 / state["bpm"] * 3
    start, end = (round((b - 1) * bar * rate) for b in state["region"])
    assert abs(start - 1.8 * rate) < 10 and abs(end - 5.4 * rate) < 10
    assert (takes[0]["start"], takes[0]["length"], takes[0]["prompt"]) == (start, end - start, "tape hiss and rain")
    assert takes[0]["scale_lock_db"] == 24.0  # the prompt names no key: the tiny model renders it
    assert takes[0]["exact_length"] == 1  # the take says it was made at exact length

    wet = plugin.process(audio, rate, buffer_size=333)
    assert np.array_equal(wet[:, :start], audio[:, :start])
    assert np.array_equal(wet[:, end:], audio[:, end:])
    assert not np.allclose(wet[:, start:end], audio[:, start:end], atol=1e-3)
    assert np.isfinite(wet).all()

    # A new instance restored from the saved state plays the same take, with no daemon needed.
    monkeypatch.setenv("SA3_ENDPOINT", "tcp://127.0.0.1:9")
    reopened = pedalboard.load_plugin(vst3_path)
    reopened.preset_data = plugin.preset_data
    assert core_state(reopened.preset_data)["takes"] == takes
    assert core_state(reopened.preset_data)["endpoint"] == daemon.endpoint  # the project's, not SA3_ENDPOINT's
    assert not reopened.follow_host
    assert reopened.scale_lock == "24 dB" and core_state(reopened.preset_data)["scale_lock_db"] == 24.0
    assert reopened.exact_length and core_state(reopened.preset_data)["exact_length"] == 1
    assert np.array_equal(reopened.process(audio, rate, buffer_size=1024), wet)
    assert takes[0]["loras"] == []  # no slot named an adapter: none sent, none recorded

    # A project's LoRA slot (the adapter's name in the state, its strength a parameter) is restored.
    reopened.parameters["lora_3_strength"].raw_value = (0.75 + 2.0) / 4.0
    styled = with_lora_slot(reopened.preset_data, 2, "dusty-tape")
    again = pedalboard.load_plugin(vst3_path)
    again.preset_data = styled
    slots = core_state(again.preset_data)["lora_slots"]
    assert slots[2] == ("dusty-tape", pytest.approx(0.75, abs=1e-6)) and slots[0] == ("", 1.0)
    assert again.lora_3_strength == pytest.approx(0.75, abs=1e-6)

    # Transform the same selection (protocol 1.4): the take is exactly its length, at the level set.
    plugin.mode = "transform"
    plugin.parameters["init_noise_level"].raw_value = (0.5 - 0.01) / (1.0 - 0.01)
    plugin.render = True
    plugin.process(audio, rate, buffer_size=512)
    plugin.render = False
    deadline = time.monotonic() + 120
    while len(core_state(plugin.preset_data)["takes"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    state = core_state(plugin.preset_data)
    assert len(state["takes"]) == 2, "no transform take arrived from the daemon"
    made = state["takes"][1]
    assert (made["mode"], made["start"], made["length"], made["model"]) == (3, start, end - start, "random:tiny")
    assert made["init_noise_level"] == pytest.approx(0.5, abs=1e-6) and state["mode"] == 3
    transformed = plugin.process(audio, rate, buffer_size=512)
    assert np.array_equal(transformed[:, :start], audio[:, :start])
    assert not np.allclose(transformed[:, start:end], wet[:, start:end], atol=1e-3)
