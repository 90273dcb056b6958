"""Loudness normalisation to a target integrated loudness with a true-peak ceiling.

Loudness is ITU-R BS.1770 integrated loudness measured by pyloudnorm (K-weighting, 400 ms
blocks, absolute and relative gating). True peak is :func:`sa3core.level.true_peak_db` (BS.1770
Annex 2: 4x oversampling with an interpolating sinc, never read below the sample peak).

Normalising gains the audio to the target; where that would push the true peak over the
ceiling, a look-ahead limiter (offline, so it can look ahead without latency) pulls the peaks
down, and the gain is raised again until the loudness lands on the target. A final static
trim guarantees the ceiling holds in the measured output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm

# True peak, the limiter's gain and the ceiling's constants are sa3core.level's, shared with the
# pipeline's ceiling (imported here under the names this module has always had).
from sa3core.level import (  # noqa: F401
    INTERPOLATOR_REACH,
    LIMITER_HOLD_SECONDS,
    LIMITER_RAMP_SECONDS,
    OVERSAMPLE,
    db_to_gain,
    gain_to_db,
    peak_envelope,
    smooth_gain,
    true_peak_db,
)
from sa3core.timebase import SAMPLE_RATE, seconds_to_samples

BLOCK_SECONDS = 0.4  # BS.1770 gating block: shorter sounds are measured as one 400 ms block
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
    gain = smooth_gain(need, sample_rate, circular)
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
