"""Regions of audio and how new audio goes into them: the contracts every model family shares.

Outside its regions an edit returns the input's own samples, bit-exact, at the input's rate;
inside, the new audio is crossfaded in with short equal-power fades that lie wholly inside
each region, matched in RMS to the kept audio around it and held under the ceiling
(:mod:`sa3core.level`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import level, timebase
from .errors import Sa3Error

CROSSFADE_SECONDS = (
    0.010  # equal-power splice at region borders: short enough to keep timing, long enough to hide a click
)


@dataclass(frozen=True)
class Region:
    """A span to regenerate, in samples at the audio's rate (44.1 kHz unless a ``sample_rate``
    says otherwise): [start, end)."""

    start: int
    end: int

    @classmethod
    def from_seconds(cls, start: float, end: float, sample_rate: int = timebase.SAMPLE_RATE) -> Region:
        return cls(timebase.seconds_to_samples(start, sample_rate), timebase.seconds_to_samples(end, sample_rate))


def check_regions(regions: Sequence[Region], total: int, sample_rate: int = timebase.SAMPLE_RATE) -> list[Region]:
    """Regions sorted by start; raises Sa3Error for none, empty, outside [0, total) or overlapping
    (``total`` and the regions in samples at ``sample_rate``)."""
    if not regions:
        raise Sa3Error("inpainting needs at least one --region START:END")
    regions = sorted(regions, key=lambda r: r.start)
    for region in regions:
        if region.end <= region.start:
            raise Sa3Error(f"region {_fmt(region, sample_rate)} is empty: its end must come after its start")
        if region.start < 0 or region.end > total:
            raise Sa3Error(
                f"region {_fmt(region, sample_rate)} lies outside the audio (0.000-{total / sample_rate:.3f} s)"
            )
    for left, right in zip(regions, regions[1:]):
        if right.start < left.end:
            raise Sa3Error(
                f"regions {_fmt(left, sample_rate)} and {_fmt(right, sample_rate)} overlap; merge them into one region"
            )
    return regions


def check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != timebase.CHANNELS:
        raise Sa3Error(f"audio must be stereo [2, samples]; got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise Sa3Error("input audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise Sa3Error("input audio contains NaN or infinite samples")
    return audio


def _fmt(region: Region, sample_rate: int = timebase.SAMPLE_RATE) -> str:
    return f"{region.start / sample_rate:.3f}:{region.end / sample_rate:.3f} s"


def _crossfade(region: Region, total: int, sample_rate: int) -> np.ndarray:
    """The new audio's gain across ``region`` (float32 [length]): equal-power fades of up to
    CROSSFADE_SECONDS inside the region where it borders kept audio, 1 elsewhere."""
    length = region.end - region.start
    fade = min(timebase.seconds_to_samples(CROSSFADE_SECONDS, sample_rate), length // 2)
    gain_in = np.ones(length, dtype=np.float32)
    if fade > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(fade, dtype=np.float32) + 0.5) / fade)
        # Only fade where the region borders kept audio; a region at the file's edge starts hard.
        if region.start > 0:
            gain_in[:fade] = ramp
        if region.end < total:
            gain_in[-fade:] = np.minimum(gain_in[-fade:], ramp[::-1])
    return gain_in


def splice(
    original: np.ndarray, generated: np.ndarray, regions: Sequence[Region], sample_rate: int = timebase.SAMPLE_RATE
) -> np.ndarray:
    """Original outside ``regions`` (bit-exact), generated inside, with equal-power crossfades
    of up to CROSSFADE_SECONDS that lie wholly inside each region."""
    out = original.copy()
    for region in regions:
        gain_in = _crossfade(region, original.shape[1], sample_rate)
        gain_out = np.sqrt(np.clip(1.0 - gain_in**2, 0.0, 1.0))
        span = slice(region.start, region.end)
        out[:, span] = gain_in * generated[:, span] + gain_out * original[:, span]
    return out


def place_new_audio(
    original: np.ndarray,
    generated: np.ndarray,
    regions: Sequence[Region],
    sample_rate: int = timebase.SAMPLE_RATE,
    crossfade: bool = True,
) -> np.ndarray:
    """``original`` [2, n] outside ``regions``, bit-exact; inside, ``generated`` [2, n] matched in
    RMS to the kept audio around each region (:func:`sa3core.level.match_gains`), crossfaded in as
    :func:`splice` does (``crossfade=False``: cut in, as a continuation after its input is), and
    held under the ceiling with a gain on the new audio alone
    (:func:`sa3core.level.hold_under_ceiling`). float32 [2, n]."""
    gains = level.match_gains(original, generated, regions, sample_rate)
    kept = np.asarray(original, dtype=np.float32).copy()
    new = np.zeros(kept.shape, dtype=np.float64)
    for region, gain in zip(regions, gains):
        span = slice(region.start, region.end)
        gain_in = _crossfade(region, kept.shape[1], sample_rate) if crossfade else np.ones(region.end - region.start)
        kept[:, span] *= np.sqrt(np.clip(1.0 - gain_in**2, 0.0, 1.0)).astype(np.float32)
        new[:, span] = gain * gain_in * np.asarray(generated[:, span], dtype=np.float64)
    return level.hold_under_ceiling(kept, new, regions, sample_rate)
