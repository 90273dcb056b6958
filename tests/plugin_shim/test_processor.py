"""The shim's processor without a daemon: pass-through, block sizes, channels, state."""

from __future__ import annotations

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


def test_state_round_trip_of_settings(shim):
    p = shim.Processor(endpoint=OFFLINE)
    p.mode = "continue"
    p.bpm = 97.5
    p.meter = (7, 8)
    p.region_bars = (3.0, 7.5)
    p.bars = 6
    p.seed = 4242
    p.steps = 12
    p.prompt = "dusty breakbeat, vinyl crackle ✓"
    p.endpoint = "tcp://127.0.0.1:6001"
    state = p.get_state()
    q = shim.Processor(endpoint=OFFLINE)
    assert q.set_state(state)
    assert (q.mode, q.bpm, q.meter, q.region_bars, q.bars, q.seed, q.steps) == (
        "continue",
        97.5,
        (7, 8),
        (3.0, 7.5),
        6.0,
        4242,
        12,
    )
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
    bad = [b"", b"SA3S", b"junk" * 20, good[:-1], good + b"\0", b"SA3S\x02" + good[5:]]
    bad += [good[:n] for n in range(0, len(good), 7)]
    bad += [bytes(rng.integers(0, 256, len(good), dtype=np.uint8)) for _ in range(20)]
    for blob in bad:
        assert not q.set_state(blob)
    assert q.get_state() == before and q.prompt == "untouched"
