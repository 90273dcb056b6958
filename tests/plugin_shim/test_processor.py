"""The shim's processor without a daemon: pass-through, block sizes, channels, state."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from .conftest import Host, test_signal

OFFLINE = "tcp://127.0.0.1:9"  # nothing listens on the discard port


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
def test_passes_audio_untouched_at_every_block_size(shim, rate):
    p = shim.Processor(endpoint=OFFLINE)
    p.prepare_to_play(rate, 4096)
    audio = test_signal(2, rate * 3, rate)
    sizes = (1, 4096, 7, 64, 2048, 333, 512, 4095, 2, 1024)  # changing between calls
    out = Host(p, rate).play(audio, block_sizes=sizes, loop_points=(0.0, 4.0))
    assert np.array_equal(out, audio)
    assert p.timeline_position == audio.shape[1]


def test_mono_and_stopped_transport_pass_through(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.prepare_to_play(48000, 512)
    mono = test_signal(1, 48000, 48000)
    assert np.array_equal(Host(p, 48000).play(mono, block_sizes=(100, 512)), mono)
    block = test_signal(2, 512, 48000)
    before = block.copy()
    p.process_block(block, is_playing=False, time_in_samples=10_000)
    assert np.array_equal(block, before)


def test_free_running_timeline_without_a_position(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.prepare_to_play(44100, 512)
    for n in (512, 100, 1):
        p.process_block(np.zeros((2, n), np.float32))
    assert p.timeline_position == 613
    p.reset()
    p.process_block(np.zeros((2, 10), np.float32))
    assert p.timeline_position == 10


def test_reports_offline_without_a_daemon(shim):
    p = shim.Processor(endpoint=OFFLINE, offline_after_ms=200)
    p.prepare_to_play(44100, 512)
    assert p.status == "offline" and not p.online
    assert "offline" in p.status_text


# The settings both state tests save and read back (the version 1 blob below writes the same ones).
SAVED_SETTINGS = ("continue", 97.5, (7, 8), (3.0, 7.5), 6.0, 4242, 12)


def settings(p) -> tuple:
    return (p.mode, p.bpm, p.meter, p.region_bars, p.bars, p.seed, p.steps)


def test_state_round_trip_of_settings(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.mode = "continue"
    p.bpm = 97.5
    p.meter = (7, 8)
    p.region_bars = (3.0, 7.5)
    p.bars = 6
    p.seed = 4242
    p.steps = 12
    p.scale_lock_db = 18.5
    p.prompt = "dusty breakbeat, vinyl crackle ✓"
    p.endpoint = "tcp://127.0.0.1:6001"
    state = p.get_state()
    q = shim.Processor(endpoint=OFFLINE)
    assert q.set_state(state)
    assert (*settings(q), q.scale_lock_db) == (*SAVED_SETTINGS, 18.5)
    assert q.prompt == "dusty breakbeat, vinyl crackle ✓"
    assert q.endpoint == "tcp://127.0.0.1:6001"
    assert q.get_state() == state


def test_bad_state_is_refused_and_changes_nothing(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.prompt = "keep me"
    good = p.get_state()
    q = shim.Processor(endpoint=OFFLINE)
    q.prompt = "untouched"
    before = q.get_state()
    rng = np.random.default_rng(0)
    newer = good[:4] + bytes([good[4] + 1]) + good[5:]  # a version after the current one
    bad = [b"", b"SA3S", b"junk" * 20, good[:-1], good + b"\0", newer, b"SA3S\x00" + good[5:]]
    # a scale lock that is neither the model's setting (-1) nor 0 dB or more
    for db in (-2.0, math.nan):
        bad.append(good[:SCALE_LOCK_AT] + struct.pack("<d", db) + good[SCALE_LOCK_AT + 8 :])
    bad += [good[:n] for n in range(0, len(good), 7)]
    bad += [bytes(rng.integers(0, 256, len(good), dtype=np.uint8)) for _ in range(20)]
    for blob in bad:
        assert not q.set_state(blob)
    assert q.get_state() == before and q.prompt == "untouched"


def test_scale_lock_is_the_models_until_set_and_checks_its_range(shim):
    from bridge.protocol import MAX_SCALE_LOCK_DB

    assert shim.MAX_SCALE_LOCK_DB == MAX_SCALE_LOCK_DB  # the shim refuses what the daemon would
    p = shim.Processor(endpoint=OFFLINE)
    assert p.scale_lock_db is None
    for db in (0.0, 12.0, MAX_SCALE_LOCK_DB):
        p.scale_lock_db = db
        assert p.scale_lock_db == db
    for db in (-1.0, MAX_SCALE_LOCK_DB + 0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="scale lock"):
            p.scale_lock_db = db
        assert p.scale_lock_db == MAX_SCALE_LOCK_DB  # unchanged
    p.scale_lock_db = None
    assert p.scale_lock_db is None


# The state layout before the scale lock (plugin_shim/src/state.cpp, version 1), written here by
# hand so the test does not depend on the current writer.
SCALE_LOCK_AT = 4 + 4 + 4 + 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4  # version 2: the settings' scale lock


def version_1_state(prompt: str, take_audio: np.ndarray, mode: int = 2) -> bytes:
    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    settings = struct.pack("<IidiidddQi", 1, mode, 97.5, 7, 8, 3.0, 7.5, 6.0, 4242, 12)  # version, mode...steps
    state = b"SA3S" + settings + string(prompt) + string("tcp://127.0.0.1:6001")
    state += struct.pack("<QiQ", 8, 0, 1)  # next take id, active take, one take
    state += struct.pack("<Q", 7) + string("old take") + struct.pack("<Qi", 99, 4)  # id, prompt, seed, steps
    state += struct.pack("<idiidqQ", 1, 97.5, 7, 8, 48000.0, 96000, take_audio.shape[1])  # mode ... length
    return state + take_audio.astype("<f4").tobytes()  # left, then right


def test_a_state_saved_before_the_scale_lock_loads_as_the_models_setting(shim):
    audio = test_signal(2, 4800, 48000)
    old = version_1_state("dusty breakbeat", audio)
    p = shim.Processor(endpoint=OFFLINE)
    p.scale_lock_db = 6.0  # what was set before the project opened does not leak into it
    p.model, p.negative_prompt, p.init_noise_level = "small", "hiss", 0.3  # nor do the 1.4 settings
    assert p.set_state(old)
    assert p.scale_lock_db is None
    assert (p.model, p.negative_prompt, p.init_noise_level) == (None, "", 0.9)
    assert settings(p) == SAVED_SETTINGS
    assert (p.prompt, p.endpoint, p.active_take) == ("dusty breakbeat", "tcp://127.0.0.1:6001", 0)
    take = p.takes[0]
    assert (take["id"], take["prompt"], take["seed"], take["steps"], take["scale_lock_db"]) == (
        7,
        "old take",
        99,
        4,
        None,
    )
    assert (take["mode"], take["start"], take["length"], take["sample_rate"]) == ("inpaint", 96000, 4800, 48000.0)
    assert (take["model"], take["negative_prompt"], take["init_noise_level"]) == (None, "", None)
    assert np.array_equal(p.take_audio(0), audio)
    assert not p.set_state(version_1_state("x", audio, mode=3))  # no transform mode before version 3
    # Saved again, it is a current state that keeps the model's setting.
    q = shim.Processor(endpoint=OFFLINE)
    assert q.set_state(p.get_state())
    assert q.scale_lock_db is None and q.takes == p.takes


def test_state_round_trip_of_the_1_4_settings(shim):
    p = shim.Processor(endpoint=OFFLINE)
    assert (p.model, p.negative_prompt, p.init_noise_level) == (None, "", shim.DEFAULT_INIT_NOISE_LEVEL)
    p.mode, p.model, p.negative_prompt, p.init_noise_level = "transform", "small", "hiss, hum ✓", 0.25
    state = p.get_state()
    q = shim.Processor(endpoint=OFFLINE)
    assert q.set_state(state)
    assert (q.mode, q.model, q.negative_prompt, q.init_noise_level) == ("transform", "small", "hiss, hum ✓", 0.25)
    assert q.get_state() == state
    # The noise level follows the model's name in the blob; one the daemon would refuse is no state.
    level_at = state.index(b"small") + len(b"small")
    assert struct.unpack_from("<d", state, level_at)[0] == 0.25
    for level in (0.0, -0.5, 1.5, math.nan):
        r = shim.Processor(endpoint=OFFLINE)
        assert not r.set_state(state[:level_at] + struct.pack("<d", level) + state[level_at + 8 :])
        assert r.model is None
    p.model = None  # back to the daemon's default, saved as such
    assert q.set_state(p.get_state()) and q.model is None


def test_steps_are_the_models_default_until_set(shim):
    from bridge.protocol import Limits

    p = shim.Processor(endpoint=OFFLINE)
    assert p.steps is None  # the request leaves `steps` out: the daemon's model decides
    assert p.model_default_steps is None  # no daemon has said what that is yet
    assert shim.MAX_STEPS == Limits().max_steps  # the shim refuses what the daemon would
    for steps in (1, 15, shim.MAX_STEPS):
        p.steps = steps
        assert p.steps == steps
    for steps in (0, -3, shim.MAX_STEPS + 1):
        with pytest.raises(ValueError, match="steps"):
            p.steps = steps
        assert p.steps == shim.MAX_STEPS  # unchanged
    p.steps = None
    q = shim.Processor(endpoint=OFFLINE)
    q.steps = 12
    assert q.set_state(p.get_state())
    assert q.steps is None  # saved as the model's default, restored as it


def test_a_bad_endpoint_is_a_status_line_not_a_crash(shim):
    """The editor's endpoint field takes anything a user types; ZeroMQ throws on what it cannot
    parse, which on the worker thread would end the host. Run in a subprocess: before the fix it
    aborted the interpreter."""
    import subprocess
    import sys
    import textwrap

    from .conftest import SHIM_PYTHON

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(SHIM_PYTHON)!r})
        import sa3shim
        p = sa3shim.Processor(endpoint="banana")
        p.prepare_to_play(44100, 512)
        time.sleep(0.3)
        print(p.status, "|", p.status_text)
        p.endpoint = "tcp://127.0.0.1:9"  # fixed in the field: the plugin waits for that daemon
        time.sleep(0.3)
        print(p.status, "|", p.status_text)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    bad, fixed = result.stdout.strip().splitlines()
    assert bad.startswith("offline | the daemon endpoint 'banana' is not valid") and "tcp://HOST:PORT" in bad
    assert fixed == "offline | offline: waiting for the daemon at tcp://127.0.0.1:9"


def loud_take_state(shim, rate: float, peak: float) -> tuple[bytes, np.ndarray]:
    """A current state with one take at `rate` peaking at `peak` (linear), as a take from a daemon
    without a level ceiling (before protocol 1.3) was saved."""
    p = shim.Processor(endpoint=OFFLINE)
    state = p.get_state()
    audio = test_signal(2, int(rate) // 10, int(rate))
    audio *= peak / np.abs(audio).max()
    take = struct.pack("<Q", 1) + struct.pack("<Q", 4) + b"loud" + struct.pack("<Qid", 0, 8, -1.0)
    take += struct.pack("<idiidq", 1, 120.0, 4, 4, rate, 0)  # mode ... start
    take += struct.pack("<QQd", 0, 0, 0.0)  # version 3: no model, no negative prompt, not a transform
    take += struct.pack("<I", 0)  # version 4: made without LoRA adapters
    take += struct.pack("<B", 0)  # version 5: made with the released headroom
    take += struct.pack("<Q", audio.shape[1]) + audio.astype("<f4").tobytes()
    # the empty state ends with: next take id, active take (-1), take count (0)
    head = state[: -(8 + 4 + 8)]
    return head + struct.pack("<QiQ", 2, 0, 1) + take, audio


@pytest.mark.parametrize("saved_rate,host_rate", [(48000.0, 44100), (44100.0, 96000)])
def test_a_take_resampled_to_the_host_rate_peaks_under_the_ceiling(shim, saved_rate, host_rate):
    ceiling = 10 ** (-1 / 20)  # -1 dBFS, docs/plugin.md
    state, audio = loud_take_state(shim, saved_rate, peak=2.0)  # +6 dBFS
    p = shim.Processor(endpoint=OFFLINE)
    p.prepare_to_play(host_rate, 512)
    assert p.set_state(state)  # reopened at another rate: resampled on load
    take = p.take_audio(0)
    assert p.takes[0]["sample_rate"] == host_rate
    assert np.abs(take).max() <= ceiling
    assert np.abs(take).max() > ceiling * 0.99  # turned down to the ceiling, not further
    # The whole take by one gain: the stereo balance and the shape are kept.
    q = shim.Processor(endpoint=OFFLINE)
    q.prepare_to_play(saved_rate, 512)
    assert q.set_state(state)
    assert np.array_equal(q.take_audio(0), audio)  # at its own rate the saved take is not touched
    q.prepare_to_play(host_rate, 512)  # the host changes rate: resampled here
    np.testing.assert_array_equal(q.take_audio(0), take)
    assert shim.TAKE_CEILING_DB == -1.0


def test_a_take_under_the_ceiling_is_resampled_without_gain(shim):
    state, _ = loud_take_state(shim, 48000.0, peak=0.5)
    p = shim.Processor(endpoint=OFFLINE)
    p.prepare_to_play(96000, 512)
    assert p.set_state(state)
    q = shim.Processor(endpoint=OFFLINE)
    q.prepare_to_play(48000, 512)
    assert q.set_state(state)
    # 48 -> 96 kHz linear: every other sample is an original one, bit for bit (no gain applied)
    assert np.array_equal(p.take_audio(0)[:, ::2], q.take_audio(0))


def string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def loras(entries) -> bytes:
    """A LoRA list as state version 4 writes it: u32 count, then (name, f64 strength) pairs."""
    return struct.pack("<I", len(entries)) + b"".join(string(name) + struct.pack("<d", s) for name, s in entries)


def version_3_state(take_audio: np.ndarray) -> bytes:
    """A state saved before the LoRA slots (version 3, protocol 1.4), written here by hand."""
    settings = struct.pack("<IidiidddQid", 3, 3, 97.5, 7, 8, 3.0, 7.5, 6.0, 4242, 12, -1.0)
    state = b"SA3S" + settings + string("glassy") + string("tcp://127.0.0.1:6001") + string("hiss") + string("small")
    state += struct.pack("<d", 0.4) + struct.pack("<QiQ", 8, 0, 1)  # noise level; next id, active take, one take
    state += struct.pack("<Q", 7) + string("old take") + struct.pack("<Qid", 99, 4, -1.0)  # ... scale lock
    state += struct.pack("<idiidq", 3, 97.5, 7, 8, 48000.0, 96000)  # mode ... start
    state += string("small") + string("hiss") + struct.pack("<dQ", 0.4, take_audio.shape[1])
    return state + take_audio.astype("<f4").tobytes()


def test_a_state_saved_before_the_lora_slots_loads_without_adapters(shim):
    audio = test_signal(2, 4800, 48000)
    p = shim.Processor(endpoint=OFFLINE)
    p.lora_slots = [("dusty-tape", 0.5), ("drums", -1.0)]  # what was set before the project opened does not leak
    assert p.set_state(version_3_state(audio))
    assert p.lora_slots == [(None, shim.DEFAULT_LORA_STRENGTH)] * shim.LORA_SLOTS
    assert (p.mode, p.model, p.negative_prompt, p.init_noise_level) == ("transform", "small", "hiss", 0.4)
    take = p.takes[0]
    assert (take["prompt"], take["model"], take["init_noise_level"], take["loras"]) == ("old take", "small", 0.4, [])
    assert np.array_equal(p.take_audio(0), audio)
    q = shim.Processor(endpoint=OFFLINE)  # saved again, it is a current state
    assert q.set_state(p.get_state()) and q.takes == p.takes and q.lora_slots == p.lora_slots


def test_state_round_trip_of_the_lora_slots(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.model = "small"
    p.lora_slots = [("dora-rows", 0.7), None, ("Lora-XS", -2.0), (None, 0.25)]
    state = p.get_state()
    q = shim.Processor(endpoint=OFFLINE)
    assert q.set_state(state)
    assert q.lora_slots == [("dora-rows", 0.7), (None, 1.0), ("Lora-XS", -2.0), (None, 0.25)]
    assert q.get_state() == state
    # The slots follow the init noise level, which follows the model's name.
    at = state.index(b"small") + len(b"small") + 8
    slots = [("dora-rows", 0.7), ("", 1.0), ("Lora-XS", -2.0), ("", 0.25)]
    assert state[at : at + len(loras(slots))] == loras(slots)
    rest = state[at + len(loras(slots)) :]
    for bad in (
        [("dora-rows", 2.5), *slots[1:]],  # a strength the daemon refuses
        [("dora-rows", math.nan), *slots[1:]],
        [*slots, ("", 1.0)],  # more slots than the plugin has
    ):
        r = shim.Processor(endpoint=OFFLINE)
        assert not r.set_state(state[:at] + loras(bad) + rest)
        assert r.model is None and r.lora_slots == [(None, 1.0)] * shim.LORA_SLOTS  # nothing changed
    assert q.set_state(state[:at] + loras(slots[:2]) + rest)  # fewer: the others empty
    assert q.lora_slots == [("dora-rows", 0.7), (None, 1.0), (None, 1.0), (None, 1.0)]


def state_with_take(shim, take_loras) -> bytes:
    """A current state with one take that the adapters `take_loras` made."""
    head = shim.Processor(endpoint=OFFLINE).get_state()[: -(8 + 4 + 8)]  # up to next id, active, count
    audio = test_signal(2, 4800, 48000)
    take = struct.pack("<Q", 1) + string("styled") + struct.pack("<Qid", 0, 8, -1.0)
    take += struct.pack("<idiidq", 1, 120.0, 4, 4, 48000.0, 0) + string("small") + string("") + struct.pack("<d", 0.0)
    take += loras(take_loras) + struct.pack("<BQ", 0, audio.shape[1]) + audio.astype("<f4").tobytes()  # not exact
    return head + struct.pack("<QiQ", 2, 0, 1) + take


def test_a_takes_adapters_are_saved_and_checked(shim):
    made = [("dora-rows", 0.7), ("lora-xs", -1.5)]
    p = shim.Processor(endpoint=OFFLINE)
    assert p.set_state(state_with_take(shim, made))
    assert p.takes[0]["loras"] == made
    assert p.get_state() == state_with_take(shim, made)
    eight = [(f"a{i}", 1.0) for i in range(shim.MAX_LORAS)]
    assert p.set_state(state_with_take(shim, eight)) and p.takes[0]["loras"] == eight
    for bad in ([("", 1.0)], [("dora-rows", -2.01)], [("x", math.inf)], [*eight, ("a8", 1.0)]):
        assert not p.set_state(state_with_take(shim, bad))
    assert p.takes[0]["loras"] == eight  # unchanged
