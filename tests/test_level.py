"""sa3core.level: new audio held under the -1 dBTP ceiling with the kept audio untouched, matched
to the audio around it; the gain-only ceiling of generated takes."""

from __future__ import annotations

import numpy as np
import pytest

from sa3core.level import (
    CEILING_DBTP,
    MATCH_MAX_BOOST_DB,
    hold_under_ceiling,
    limit_peaks,
    match_gains,
    true_peak_db,
)
from sa3core.pipeline import Region, place_new_audio

RATE = 48_000


def music(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.stack([np.sin(2 * np.pi * 110 * t), np.sin(2 * np.pi * 165 * t)])
    return (level * (0.7 * tone + 0.3 * rng.standard_normal(tone.shape))).astype(np.float32)


def rms_db(audio: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(audio, dtype=np.float64) ** 2))


def test_new_audio_is_matched_held_under_the_ceiling_and_the_rest_is_bit_exact():
    original = music(6.0, 0.2)
    original[:, 100:110] = 1.4  # the input's own overs, far from the region: left as they are
    generated = music(6.0, 3.0, seed=1)  # the model, 24 dB hotter than the song
    region = Region(2 * RATE, 4 * RATE)
    out = place_new_audio(original, generated, [region], RATE)
    outside = np.ones(original.shape[1], dtype=bool)
    outside[region.start : region.end] = False
    np.testing.assert_array_equal(out[:, outside], original[:, outside])
    new = out[:, region.start : region.end]
    assert true_peak_db(new) <= CEILING_DBTP
    assert abs(rms_db(new) - rms_db(original[:, outside])) < 1.5  # matched, then held


def test_a_burst_is_pulled_down_where_it_is_not_across_the_whole_part():
    """A hit 30 dB over the rest (as the model makes at a join) is limited locally: the rest of
    the part keeps its matched level instead of being turned down with it."""
    kept = np.zeros((2, 4 * RATE), dtype=np.float32)
    new = music(4.0, 0.1)
    new[:, : 2 * RATE] = 0.0
    new[:, 2 * RATE + 1000 : 2 * RATE + 1100] *= 30.0
    region = Region(2 * RATE, 4 * RATE)
    out = hold_under_ceiling(kept, new, [region], RATE)
    assert true_peak_db(out) <= CEILING_DBTP
    later = slice(3 * RATE, 4 * RATE)
    assert rms_db(out[:, later]) == pytest.approx(rms_db(new[:, later]), abs=1e-6)


def test_the_crossfade_with_hot_kept_audio_stays_under_the_ceiling():
    """Equal-power fades of correlated audio add up to +3 dB: the sum is held, not just the parts."""
    original = music(2.0, 0.5)
    generated = original * 1.7  # the same waveform: its crossfade with the original sums
    region = Region(RATE // 2, RATE)
    out = place_new_audio(original, generated, [region], RATE)
    np.testing.assert_array_equal(out[:, : region.start], original[:, : region.start])
    assert true_peak_db(out[:, region.start : region.end]) <= CEILING_DBTP


def test_match_gains_follow_the_kept_audio_and_leave_silence_alone():
    original = music(10.0, 0.1)
    generated = music(10.0, 1.0, seed=2)
    regions = [Region(RATE, 2 * RATE), Region(6 * RATE, 7 * RATE)]
    gains = match_gains(original, generated, regions, RATE)
    assert gains == pytest.approx([0.1, 0.1], rel=0.05)
    silent = np.zeros_like(original)
    assert match_gains(silent, generated, regions, RATE) == [1.0, 1.0]  # nothing to match to
    quiet = generated * 1e-3
    assert match_gains(original, quiet, regions, RATE) == pytest.approx([10 ** (MATCH_MAX_BOOST_DB / 20)] * 2)


def test_generated_takes_are_turned_down_as_a_whole_by_their_true_peak():
    """A take whose samples are under the ceiling but whose inter-sample peak is over it."""
    n = np.arange(4096)
    take = (0.95 * np.sin(np.pi * (n + 0.5) / 2)).astype(np.float32)  # samples at 0.95 * 0.707
    take = np.stack([take * 1.3, take * 1.3])  # samples -1.7 dBFS, true peak +1.8 dBTP
    assert np.abs(take).max() < 10 ** (CEILING_DBTP / 20) < 10 ** (true_peak_db(take) / 20)
    out = limit_peaks(take[None])[0]
    assert CEILING_DBTP - 0.01 <= true_peak_db(out) <= CEILING_DBTP
    np.testing.assert_allclose(out / out.max(), take / take.max(), rtol=1e-6)
