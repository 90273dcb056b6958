"""Loudness normalisation: BS.1770 loudness on target, true peak under the ceiling."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample

from sa3.render.loudness import integrated_loudness, limit, normalise, true_peak_db

RATE = 44_100


def program(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Music-like material: a pulsing bass, a chord, noise hats and loud clicks (crest factor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    bass = 0.4 * np.sin(2 * np.pi * 55 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    chord = 0.1 * sum(np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0), (277.2, 1), (329.6, 2)))
    hats = 0.05 * rng.standard_normal(t.size) * (np.mod(t, 0.25) < 0.03)
    left = bass + chord + hats
    right = bass + 0.8 * chord + np.roll(hats, 300)
    audio = np.stack([left, right]).astype(np.float32)
    audio[:, :: RATE // 2] = 0.95  # transients well above the body
    return audio


def independent_true_peak(audio: np.ndarray) -> float:
    """4x oversampling by FFT (not the soxr filter the code under test uses)."""
    up = resample(audio.astype(np.float64), 4 * audio.shape[1], axis=1)
    return 20 * np.log10(np.abs(up).max())


@pytest.mark.parametrize(("target", "ceiling"), [(-14.0, -1.0), (-23.0, -1.0), (-9.0, -1.0), (-16.0, -3.0)])
def test_normalise_hits_the_target_under_the_ceiling(target, ceiling):
    audio = program()
    out, result = normalise(audio, target, ceiling)
    measured = pyloudnorm.Meter(RATE).integrated_loudness(out.T.astype(np.float64))
    assert abs(measured - target) < 0.5
    assert true_peak_db(out) <= ceiling + 1e-6
    assert independent_true_peak(out) <= ceiling + 0.1  # another oversampler agrees within 0.1 dB
    assert out.shape == audio.shape and out.dtype == np.float32
    # The limiter acts exactly when a plain gain to the target would cross the ceiling.
    assert result.limited == (true_peak_db(audio) + target - integrated_loudness(audio) > ceiling)


def test_limiter_holds_the_ceiling_on_intersample_peaks():
    # A full-scale sine at fs/4 with a 45 degree phase has samples at 0.707 but true peaks at 1.0.
    n = RATE
    x = np.sin(np.pi / 2 * np.arange(n) + np.pi / 4).astype(np.float32)
    audio = np.stack([x, x])
    assert np.abs(audio).max() < 0.71 and true_peak_db(audio) > -0.1
    limited = limit(audio, -6.0)
    assert true_peak_db(limited) <= -6.0 + 0.05
    assert np.abs(limited).max() > 0.3  # pulled down to the ceiling, not silenced


def test_silence_and_short_sounds():
    silent, result = normalise(np.zeros((2, RATE), np.float32), -14.0)
    assert not np.any(silent) and result.lufs == -np.inf
    click = program(0.2)
    out, result = normalise(click, -20.0, -1.0)
    assert abs(integrated_loudness(out) - -20.0) < 0.5 and true_peak_db(out) <= -1.0
