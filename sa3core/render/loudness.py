"""Loudness normalisation to a target integrated loudness with a true-peak ceiling.

Loudness is ITU-R BS.1770 integrated loudness measured by pyloudnorm (K-weighting, 400 ms
blocks, absolute and relative gating). True peak is estimated as BS.1770 Annex 2 suggests:
4x oversampling and the largest absolute value. The oversampler is an interpolating
Kaiser-windowed sinc (every original sample passes through unchanged, so true peak is never
read below sample peak); general-purpose resamplers roll off below Nyquist and read
single-sample clicks 0.2-0.5 dB low, which would let them through the ceiling.

Normalising gains the audio to the target; where that would push the true peak over the
ceiling, a look-ahead limiter (offline, so it can look ahead without latency) pulls the peaks
down, and the gain is raised again until the loudness lands on the target. A final static
trim guarantees the ceiling holds in the measured output.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal.windows import kaiser

from ..timebase import SAMPLE_RATE, seconds_to_samples

OVERSAMPLE = 4
BLOCK_SECONDS = 0.4  # BS.1770 gating block: shorter sounds are measured as one 400 ms block
LIMITER_RAMP_SECONDS = 0.004  # attack and release ramp of the limiter's gain
LIMITER_HOLD_SECONDS = 0.02  # gain stays down this long around a peak, so bass is not distorted
MAX_GAIN_DB = 40.0  # never lift near-silence by more than this
TOLERANCE_LU = 0.1
MAX_TRIES = 10  # gain/limit/measure rounds; two or three are usual, more only when limiting hard
MAX_STEP_DB = 12.0


@dataclass
class LoudnessResult:
    """What normalisation did: measured values are of the returned audio."""

    lufs: float  # integrated loudness (LUFS); -inf for silence
    true_peak_db: float  # dBTP (4x oversampled)
    gain_db: float  # static gain applied before limiting
    limited: bool  # whether the limiter had to act


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def integrated_loudness(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """BS.1770 integrated loudness (LUFS) of ``audio`` [channels, samples]; -inf for silence.

    Sounds shorter than one 400 ms block are zero-padded to one block (their loudness is then
    the momentary loudness of the sound inside that window).
    """
    audio = np.asarray(audio, dtype=np.float64)
    block = seconds_to_samples(BLOCK_SECONDS, sample_rate) + 1
    if audio.shape[1] < block:
        audio = np.pad(audio, ((0, 0), (0, block - audio.shape[1])))
    if not np.any(audio):
        return -math.inf
    meter = pyloudnorm.Meter(sample_rate)
    return float(meter.integrated_loudness(audio.T))


INTERPOLATOR_REACH = 32  # input samples each side of the interpolation filter


@functools.cache
def _phases() -> tuple[np.ndarray, ...]:
    """Sub-filters of a 4x interpolating Kaiser-windowed sinc, for phases 1/4, 2/4 and 3/4.

    Phase 0 of an interpolating sinc is a unit impulse (the original samples), so it is not
    filtered at all. Phase p's output at sample m lies between input samples m and m + 1:
    ``y_p[m] = sum_k x[m + k] * h_p[k + REACH - 1]`` for k in [-(REACH - 1), REACH].
    """
    reach = INTERPOLATOR_REACH
    size = 2 * reach * OVERSAMPLE + 1
    window = kaiser(size, 8.0)
    phases = []
    for p in range(1, OVERSAMPLE):
        k = np.arange(-(reach - 1), reach + 1)  # input offsets around the point m + p/4
        taps = np.sinc(k - p / OVERSAMPLE) * window[(k * OVERSAMPLE - p) + reach * OVERSAMPLE]
        phases.append(taps[::-1].copy())  # reversed: a correlation written as a convolution
    return tuple(phases)


def peak_envelope(audio: np.ndarray, circular: bool = False) -> np.ndarray:
    """Per-sample true-peak envelope: float64 [samples], the largest absolute value over the
    channels of the sample itself and of the three 4x-oversampled points after it.

    ``circular`` treats the audio as a loop (the points after the last sample interpolate
    towards the first). Memory stays O(samples): the 4x signal is never held whole.
    """
    audio = np.asarray(audio, dtype=np.float64)
    n = audio.shape[1]
    reach = INTERPOLATOR_REACH
    if circular:
        reps = -(-reach // n)
        wrap = np.tile(audio, (1, reps))
        padded = np.concatenate([wrap[:, -(reach - 1) :] if reach > 1 else wrap[:, :0], audio, wrap[:, :reach]], axis=1)
    else:
        padded = np.pad(audio, ((0, 0), (reach - 1, reach)))
    envelope = np.abs(audio).max(axis=0)
    for taps in _phases():
        for channel in padded:
            # Direct convolution: with 64 taps it beats FFT methods several times over.
            np.maximum(envelope, np.abs(np.convolve(channel, taps, mode="valid")), out=envelope)
    return envelope


def true_peak_db(audio: np.ndarray, circular: bool = False) -> float:
    """True peak in dBTP: the largest sample of the 4x oversampled signal.

    ``circular`` treats the audio as a loop, so peaks between the last and first sample count.
    """
    return gain_to_db(float(peak_envelope(audio, circular).max(initial=0.0)))


def limit(
    audio: np.ndarray,
    ceiling_db: float,
    circular: bool = False,
    sample_rate: int = SAMPLE_RATE,
    envelope: np.ndarray | None = None,
) -> np.ndarray:
    """Look-ahead peak limiter: the returned audio's oversampled peaks stay under ``ceiling_db``.

    The gain each sample needs (ceiling / its oversampled peak) is held with a running minimum
    over +-(hold + 2 ramps) and then smoothed twice with a moving average of +-ramp; as the
    smoothing never reaches farther than the minimum, the smoothed gain at a peak is never
    above the gain that peak needs. Offline, so look-ahead costs no latency. ``envelope`` is
    :func:`peak_envelope` of ``audio`` where the caller has it already.
    """
    ceiling = db_to_gain(ceiling_db)
    per_sample = peak_envelope(audio, circular) if envelope is None else envelope
    # The points between samples m and m + 1 belong to both.
    per_sample = np.maximum(per_sample, np.roll(per_sample, 1) if circular else np.r_[0.0, per_sample[:-1]])
    need = np.minimum(1.0, ceiling / np.maximum(per_sample, 1e-12))
    ramp = max(1, seconds_to_samples(LIMITER_RAMP_SECONDS, sample_rate))
    hold = seconds_to_samples(LIMITER_HOLD_SECONDS, sample_rate)
    mode = "wrap" if circular else "nearest"
    held = minimum_filter1d(need, size=2 * (hold + 2 * ramp) + 1, mode=mode)
    smooth = uniform_filter1d(uniform_filter1d(held, 2 * ramp + 1, mode=mode), 2 * ramp + 1, mode=mode)
    gain = np.minimum(smooth, held)  # float rounding in the averages must not lift a peak
    return (audio * gain[None, :]).astype(np.float32)


def normalise(
    audio: np.ndarray,
    target_lufs: float,
    ceiling_dbtp: float = -1.0,
    circular: bool = False,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, LoudnessResult]:
    """Gain ``audio`` [2, samples] to ``target_lufs`` with true peaks at or under ``ceiling_dbtp``.

    Silence is returned unchanged (its loudness is -inf). Loudness lands within 0.1 LU of the
    target unless the ceiling makes that impossible without extreme limiting (the result says
    what was reached). ``circular`` treats the audio as a seamless loop.
    """
    audio = np.asarray(audio, dtype=np.float32)
    measured = integrated_loudness(audio, sample_rate)
    if not math.isfinite(measured):
        return audio, LoudnessResult(measured, true_peak_db(audio, circular), 0.0, False)
    envelope = peak_envelope(audio, circular)  # scales with the gain: computed once
    input_peak = float(envelope.max(initial=0.0))
    gain_db = min(target_lufs - measured, MAX_GAIN_DB)
    previous: tuple[float, float] | None = None  # (gain, loudness) of the last try
    for _ in range(MAX_TRIES):
        gain = db_to_gain(gain_db)
        out = audio * np.float32(gain)
        limited = gain_to_db(input_peak * gain) > ceiling_dbtp
        if limited:
            out = limit(out, ceiling_dbtp - 0.05, circular, sample_rate, envelope=envelope * gain)
        reached = integrated_loudness(out, sample_rate)
        if abs(reached - target_lufs) <= TOLERANCE_LU or gain_db >= MAX_GAIN_DB:
            break
        # Secant step: once the limiter works, loudness rises slower than the gain (slope < 1).
        slope = 1.0
        if previous is not None and gain_db != previous[0]:
            slope = float(np.clip((reached - previous[1]) / (gain_db - previous[0]), 0.05, 1.0))
        previous = (gain_db, reached)
        step = float(np.clip((target_lufs - reached) / slope, -MAX_STEP_DB, MAX_STEP_DB))
        gain_db = min(gain_db + step, MAX_GAIN_DB)
    peak = true_peak_db(out, circular)
    if peak > ceiling_dbtp:  # what the limiter's smoothing let through: a tiny static trim
        out = (out * np.float32(db_to_gain(ceiling_dbtp - peak - 0.01))).astype(np.float32)
        peak = true_peak_db(out, circular)
    return out.astype(np.float32), LoudnessResult(integrated_loudness(out, sample_rate), peak, gain_db, limited)
