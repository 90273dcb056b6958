"""The tempo grid: grid tempi, plans, and the Rubber Band warp on real signals."""

import math

import numpy as np
import pytest

from sa3.eval import music
from sa3core import timebase, warp

SR = timebase.SAMPLE_RATE


@pytest.mark.parametrize("bpm", [60.0, 90.0, 120.0, 128.0, 144.0, 175.0])
def test_grid_tempo_is_a_whole_number_of_frames_and_the_nearest_one(bpm):
    grid = warp.grid_bpm(bpm)
    frames = warp.FRAMES_PER_MINUTE / grid
    assert frames == pytest.approx(round(frames), abs=1e-9)
    for other in (round(frames) - 1, round(frames) + 1):
        if other >= 1:
            assert abs(math.log(grid / bpm)) <= abs(math.log(warp.FRAMES_PER_MINUTE / other / bpm))


def test_120_bpm_is_made_at_five_frames_a_beat():
    assert warp.grid_bpm(120.0) == pytest.approx(44_100 * 60 / 4096 / 5)


def test_plan_keeps_the_number_of_beats():
    samples = timebase.bars_to_samples(4, 120, "4/4")
    tempo = warp.plan(120.0, samples, max_samples=10 * samples)
    assert tempo is not None and tempo.samples == samples
    beats_asked = samples / SR * 120.0 / 60.0
    beats_made = tempo.grid_samples / SR * tempo.grid_bpm / 60.0
    assert beats_made == pytest.approx(beats_asked, abs=1.0 / SR * 3)
    assert tempo.ratio == pytest.approx(120.0 / tempo.grid_bpm)


def test_nothing_to_plan():
    assert warp.plan(None, 44_100, 10**7) is None  # no tempo
    assert warp.plan(warp.FRAMES_PER_MINUTE / 6, 44_100, 10**7) is None  # already on the grid
    assert warp.plan(500.0, 44_100, 10**7) is None  # 29 % or 35 % away from the grid
    slow = warp.plan(60.0, 44_100, 10**7)  # 60 bpm is made at 58.7 bpm: a longer take
    assert slow is not None and slow.grid_samples > 44_100
    assert warp.plan(60.0, 44_100, max_samples=44_100) is None  # ... that the model cannot make


def _clicks(bpm: float, samples: int) -> tuple[np.ndarray, list[int]]:
    audio = np.zeros((2, samples), np.float32)
    starts = [round(k * 60.0 / bpm * SR) for k in range(int(samples / SR * bpm / 60.0) + 1)]
    burst = (np.hanning(256) * np.sin(np.arange(256) * 0.7)).astype(np.float32) * 0.8
    for s in starts:
        n = min(256, samples - s)
        audio[:, s : s + n] = burst[:n]
    return audio, starts


def test_warp_lands_beats_on_the_asked_tempo_with_exact_length():
    samples = timebase.bars_to_samples(2, 120, "4/4")
    tempo = warp.plan(120.0, samples, 10 * samples)
    take, _ = _clicks(tempo.grid_bpm, tempo.grid_samples)
    out = warp.warp(np.stack([take, take * 0.5]), tempo)
    assert out.shape == (2, 2, samples) and out.dtype == np.float32
    envelope = np.abs(out[0, 0])
    for k in range(8):  # each beat's click within 5 ms of where 120 bpm puts it
        expected = round(k * 0.5 * SR)
        window = envelope[max(0, expected - 1000) : expected + 1000]
        found = max(0, expected - 1000) + int(np.argmax(window > 0.3 * envelope.max()))
        assert abs(found - expected) < 0.005 * SR, (k, found, expected)
    assert music.estimate_tempo(out[0]) == pytest.approx(120.0, rel=0.04)
    np.testing.assert_array_equal(out[1], warp.warp(take[None] * 0.5, tempo)[0])  # takes are warped independently


@pytest.mark.parametrize("hz", [55.0, 110.0, 440.0])
def test_warp_keeps_pitch(hz):
    """Bass notes too: Rubber Band's faster engine moved a 110 Hz tone to 102 Hz and spread it."""
    tempo = warp.plan(120.0, 2 * SR, 10 * SR)
    t = np.arange(tempo.grid_samples) / SR
    tone = np.stack([0.5 * np.sin(2 * np.pi * hz * t)] * 2).astype(np.float32)
    out = warp.warp(tone[None], tempo)[0, 0, SR // 4 : SR // 4 + 65536]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size))) ** 2
    peak = int(np.argmax(spectrum))
    assert peak * SR / out.size == pytest.approx(hz, abs=1.0)
    assert spectrum[peak - 4 : peak + 5].sum() > 0.95 * spectrum.sum()  # one clean partial
