"""Levels of takes: the -1 dBTP ceiling every take stays under, new audio matched to the kept
audio around it, and the near-silence a take is flagged for.

- A generated take louder than the ceiling is turned down as a whole (:func:`limit_peaks`).
- Inpainted and continued audio is first matched in RMS to the kept audio within
  :data:`MATCH_SECONDS` of it (:func:`match_gains`), then held under the ceiling by a look-ahead
  gain on the new audio alone (:func:`hold_under_ceiling`): the model's brief bursts (a hit at a
  join) are pulled down where they happen instead of turning the whole part down, and the kept
  samples, hot or not, are never touched.
- Every ceiling applies at the rate the take is written at, after any resampling.

True peak follows ITU-R BS.1770 Annex 2: 4x oversampling, the largest absolute value. The
oversampler is an interpolating Kaiser-windowed sinc, so every original sample passes through
unchanged and the true peak is never read below the sample peak (general-purpose resamplers roll
off below Nyquist and read single-sample clicks 0.2-0.5 dB low). It is linear, which lets
:func:`hold_under_ceiling` solve for the largest gain that keeps each oversampled point of
``kept + gain * new`` under the ceiling exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from .timebase import SAMPLE_RATE, seconds_to_samples

CEILING_DBTP = -1.0  # no take sa3 writes has a true peak above this (unless it is the input's own audio)
NEAR_SILENT_DBTP = -50.0  # a take whose true peak is under this is flagged: it is not a usable sound
MATCH_SECONDS = 4.0  # kept audio each side of a region that new audio is matched to (two bars at 120 bpm)
MATCH_FLOOR_DBFS = -60.0  # kept audio quieter than this (RMS) is silence: there is nothing to match
MATCH_MAX_BOOST_DB = 20.0  # new audio is lifted by at most this to match (it is never held back from turning down)
AIM_MARGIN_DB = 0.005  # aim this far under the ceiling: float32 rounding and 16/24-bit codes cannot lift a peak over

OVERSAMPLE = 4
INTERPOLATOR_REACH = 32  # input samples each side of the interpolation filter
LIMITER_RAMP_SECONDS = 0.004  # attack and release ramp of a limiter's gain
LIMITER_HOLD_SECONDS = 0.02  # gain stays down this long around a peak, so bass is not distorted
LIMITER_PASSES = 3  # of the new audio's limiter; what they leave over is trimmed by one static gain


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


PEAK_CEILING = db_to_gain(CEILING_DBTP)
_AIM = db_to_gain(CEILING_DBTP - AIM_MARGIN_DB)


class Span(Protocol):
    """A region in samples, [start, end) (``sa3core.pipeline.Region``)."""

    start: int
    end: int


# ---------------------------------------------------------------------------------- true peak


@functools.cache
def _phases() -> tuple[np.ndarray, ...]:
    """Sub-filters of a 4x interpolating Kaiser-windowed sinc, for phases 1/4, 2/4 and 3/4.

    Phase 0 of an interpolating sinc is a unit impulse (the original samples), so it is not
    filtered at all. Phase p's output at sample m lies between input samples m and m + 1:
    ``y_p[m] = sum_k x[m + k] * h_p[k + REACH - 1]`` for k in [-(REACH - 1), REACH].
    """
    reach = INTERPOLATOR_REACH
    size = 2 * reach * OVERSAMPLE + 1
    from scipy.signal.windows import kaiser  # here, not at import: scipy.signal costs 0.4 s of a cold start

    window = kaiser(size, 8.0)
    phases = []
    for p in range(1, OVERSAMPLE):
        k = np.arange(-(reach - 1), reach + 1)  # input offsets around the point m + p/4
        taps = np.sinc(k - p / OVERSAMPLE) * window[(k * OVERSAMPLE - p) + reach * OVERSAMPLE]
        phases.append(taps[::-1].copy())  # reversed: a correlation written as a convolution
    return tuple(phases)


def _padded(audio: np.ndarray, circular: bool) -> np.ndarray:
    """``audio`` [channels, n] with the interpolator's reach added: zeros, or the loop wrapped."""
    reach = INTERPOLATOR_REACH
    if not circular:
        return np.pad(audio, ((0, 0), (reach - 1, reach)))
    wrap = np.tile(audio, (1, -(-reach // audio.shape[1])))
    return np.concatenate([wrap[:, -(reach - 1) :], audio, wrap[:, :reach]], axis=1)


def oversampled_points(audio: np.ndarray, circular: bool = False) -> Iterator[np.ndarray]:
    """The 4x oversampled signal one phase at a time: float64 [channels, n] each, phase 0 (the
    samples themselves) first; phase p's value at m lies between samples m and m + 1. Memory
    stays O(samples): the 4x signal is never held whole."""
    audio = np.asarray(audio, dtype=np.float64)
    yield audio
    padded = _padded(audio, circular)
    for taps in _phases():
        # Direct convolution: with 64 taps it beats FFT methods several times over.
        yield np.stack([np.convolve(channel, taps, mode="valid") for channel in padded])


def peak_envelope(audio: np.ndarray, circular: bool = False) -> np.ndarray:
    """Per-sample true-peak envelope: float64 [samples], the largest absolute value over the
    channels of the sample itself and of the three 4x-oversampled points after it.

    ``circular`` treats the audio as a loop (the points after the last sample interpolate
    towards the first).
    """
    envelope = np.zeros(np.shape(audio)[1])
    for points in oversampled_points(audio, circular):
        np.maximum(envelope, np.abs(points).max(axis=0), out=envelope)
    return envelope


def true_peak(audio: np.ndarray, circular: bool = False) -> float:
    """True peak of ``audio`` [channels, samples] as a linear gain (0 for no samples)."""
    return float(peak_envelope(audio, circular).max(initial=0.0))


def true_peak_db(audio: np.ndarray, circular: bool = False) -> float:
    """True peak in dBTP: the largest sample of the 4x oversampled signal.

    ``circular`` treats the audio as a loop, so peaks between the last and first sample count.
    """
    return gain_to_db(true_peak(audio, circular))


def is_near_silent(peak_dbtp: float) -> bool:
    """Whether a take of this true peak is flagged as near-silent (:data:`NEAR_SILENT_DBTP`)."""
    return peak_dbtp < NEAR_SILENT_DBTP


# ---------------------------------------------------------------------------------- ceilings


def limit_peaks(takes: np.ndarray) -> np.ndarray:
    """Each take [..., channels, n] whose true peak is above :data:`PEAK_CEILING`, turned down as
    a whole (gain only) to just under it; the others are returned bit-exact."""
    takes = np.asarray(takes, dtype=np.float32)
    out = takes.copy()
    flat = out.reshape(-1, *takes.shape[-2:])  # (takes, channels, n), a view of out
    for take in flat:
        peak = true_peak(take)
        if peak > PEAK_CEILING:
            take *= np.float32(_AIM / peak)
    return out


def smooth_gain(need: np.ndarray, sample_rate: int = SAMPLE_RATE, circular: bool = False) -> np.ndarray:
    """A limiter's gain from the gain each sample needs (float64 [n], each <= 1).

    The need is held with a running minimum over +-(hold + 2 ramps) and then smoothed twice with
    a moving average of +-ramp; as the smoothing never reaches farther than the minimum, the
    smoothed gain at a peak is never above the gain that peak needs. Offline, so the look-ahead
    costs no latency.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d  # here, not at import (0.2 s)

    ramp = max(1, seconds_to_samples(LIMITER_RAMP_SECONDS, sample_rate))
    hold = seconds_to_samples(LIMITER_HOLD_SECONDS, sample_rate)
    mode = "wrap" if circular else "nearest"
    held = minimum_filter1d(need, size=2 * (hold + 2 * ramp) + 1, mode=mode)
    smooth = uniform_filter1d(uniform_filter1d(held, 2 * ramp + 1, mode=mode), 2 * ramp + 1, mode=mode)
    return np.minimum(smooth, held)  # float rounding in the averages must not lift a peak


def _room(new: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per sample, the largest gain g <= 1 for which every oversampled point of ``kept + g * new``
    next to that sample stays under the aim: float64 [n]. Points where ``kept`` alone is over
    the aim (the input's own hot audio) are left out: no gain on the new audio could fix them."""
    room = np.ones(new.shape[1])
    for phase, (a, b) in enumerate(zip(oversampled_points(new), oversampled_points(kept))):
        with np.errstate(divide="ignore", invalid="ignore"):
            # |g a + b| <= aim for g >= 0 with |b| <= aim:  g <= (aim - sign(a) b) / |a|
            ratio = np.where((a != 0) & (np.abs(b) <= _AIM), (_AIM - np.sign(a) * b) / np.abs(a), np.inf)
        ratio = ratio.min(axis=0)  # over channels
        np.minimum(room, ratio, out=room)
        if phase:  # the points between samples m and m + 1 belong to both
            np.minimum(room[1:], ratio[:-1], out=room[1:])
    return room


def hold_under_ceiling(
    kept: np.ndarray, new: np.ndarray, regions: Sequence[Span], sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """``kept + gain * new`` as float32 [channels, n], the gain <= 1 on the new audio alone.

    ``new`` is zero outside ``regions``, so outside them the result is ``kept`` bit-exact. The
    gain is a look-ahead limiter's (:func:`smooth_gain`, up to :data:`LIMITER_PASSES` passes) then,
    where its smoothing let a point through, a static trim: every oversampled point is at most
    :data:`PEAK_CEILING`, except where ``kept`` alone is over it (the caller's hot input, left as
    it is).
    """
    kept = np.asarray(kept, dtype=np.float32)
    out = kept.copy()
    margin = 2 * INTERPOLATOR_REACH  # enough kept audio either side for every point next to a region
    for first, last in _groups(regions, margin, kept.shape[1]):
        lo, hi = max(0, first - margin), min(kept.shape[1], last + margin)
        fixed = kept[:, lo:hi].astype(np.float64)
        added = np.asarray(new[:, lo:hi], dtype=np.float64)
        for _ in range(LIMITER_PASSES):  # a changing gain moves the points between samples a little
            room = _room(added, fixed)
            if room.min(initial=1.0) >= 1.0:
                break
            added = added * smooth_gain(room, sample_rate)
        added *= min(1.0, float(_room(added, fixed).min(initial=1.0)))  # exact: the points are linear in it
        for region in regions:
            if first <= region.start and region.end <= last:
                span = slice(region.start - lo, region.end - lo)
                out[:, region.start : region.end] = (fixed[:, span] + added[:, span]).astype(np.float32)
    return out


def _groups(regions: Sequence[Span], margin: int, total: int) -> list[tuple[int, int]]:
    """(first, last) sample spans of regions closer than ``2 * margin`` to each other, which are
    held under the ceiling together (their oversampled points overlap)."""
    groups: list[list[int]] = []
    for region in sorted(regions, key=lambda r: r.start):
        if groups and region.start - groups[-1][1] < 2 * margin:
            groups[-1][1] = max(groups[-1][1], region.end)
        else:
            groups.append([region.start, region.end])
    return [(first, min(last, total)) for first, last in groups]


# ---------------------------------------------------------------------------------- matching


def _power(audio: np.ndarray) -> float:
    return float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0


def match_gains(
    original: np.ndarray, generated: np.ndarray, regions: Sequence[Span], sample_rate: int = SAMPLE_RATE
) -> list[float]:
    """Per region, the gain that brings ``generated`` there to the RMS of the kept audio of
    ``original`` within :data:`MATCH_SECONDS` before and after it (samples of other regions are
    not kept). 1 where that audio is silence (under :data:`MATCH_FLOOR_DBFS`) or absent, or the
    new audio is digital silence; a lift is capped at :data:`MATCH_MAX_BOOST_DB`."""
    total = original.shape[1]
    kept = np.ones(total, dtype=bool)
    for region in regions:
        kept[region.start : region.end] = False
    reach = seconds_to_samples(MATCH_SECONDS, sample_rate)
    floor, most = db_to_gain(2 * MATCH_FLOOR_DBFS), db_to_gain(MATCH_MAX_BOOST_DB)
    gains = []
    for region in regions:
        before = slice(max(0, region.start - reach), region.start)
        after = slice(region.end, min(total, region.end + reach))
        around = np.concatenate([original[:, before][:, kept[before]], original[:, after][:, kept[after]]], axis=1)
        reference, made = _power(around), _power(generated[:, region.start : region.end])
        gains.append(1.0 if reference < floor or made == 0.0 else min(math.sqrt(reference / made), most))
    return gains
