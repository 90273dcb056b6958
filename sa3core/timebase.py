"""Every time conversion in sa3: seconds <-> samples <-> latent frames <-> bars and beats.

This module is the only place that knows the sample rate and the autoencoder's hop; the
rest of the code (CLI, daemon, plugin bindings, render sheets, training) calls it.

Tempo follows the DAW convention: ``bpm`` counts quarter notes per minute whatever the
meter, so a 6/8 bar lasts three quarter notes and a 7/8 bar three and a half.
Bar positions are 1-based as a DAW shows them: ``5.1`` is the first beat of bar 5, i.e.
four bars after the start; beats count the meter's denominator note.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import Sa3Error

SAMPLE_RATE = 44_100
CHANNELS = 2
SAMPLES_PER_FRAME = 4096  # the autoencoder's total downsampling
LATENT_CHANNELS = 256
MAX_SECONDS = 380.0  # 6 min 20 s, as the paper; configurable per pipeline
MIN_BPM, MAX_BPM = 20.0, 999.0  # the range Ableton Live and Logic accept
HOST_SAMPLE_RATES = (44_100, 48_000, 88_200, 96_000)


def frames_per_second() -> float:
    """Latent frames per second of audio (about 10.77)."""
    return SAMPLE_RATE / SAMPLES_PER_FRAME


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Nearest whole sample count for ``seconds`` of audio."""
    if not math.isfinite(seconds) or seconds < 0:
        raise Sa3Error(f"duration {seconds!r} s is not a positive number of seconds")
    return int(round(seconds * sample_rate))


def samples_to_seconds(samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    return samples / sample_rate


def samples_to_frames(samples: int) -> int:
    """Latent frames needed to cover ``samples`` samples: ``ceil(samples / 4096)``."""
    if samples < 0:
        raise Sa3Error(f"sample count {samples} is negative")
    return -(-int(samples) // SAMPLES_PER_FRAME)


def frames_to_samples(frames: int) -> int:
    return int(frames) * SAMPLES_PER_FRAME


def seconds_to_frames(seconds: float) -> int:
    return samples_to_frames(seconds_to_samples(seconds))


def check_duration(samples: int, max_seconds: float = MAX_SECONDS, what: str = "duration") -> int:
    """Validate a requested length in samples; returns it unchanged."""
    if samples <= 0:
        raise Sa3Error(f"{what} must be longer than zero (got {samples} samples)")
    limit = seconds_to_samples(max_seconds)
    if samples > limit:
        raise Sa3Error(
            f"{what} of {samples / SAMPLE_RATE:.2f} s is longer than the {max_seconds:g} s limit; "
            "ask for a shorter length or raise --max-seconds"
        )
    return samples


@dataclass(frozen=True)
class Meter:
    """A time signature such as 4/4, 3/4, 6/8 or 7/8."""

    numerator: int = 4
    denominator: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.numerator <= 64:
            raise Sa3Error(f"meter {self} has {self.numerator} beats a bar; use 1 to 64")
        if self.denominator not in (1, 2, 4, 8, 16, 32):
            raise Sa3Error(f"meter {self} has denominator {self.denominator}; use 1, 2, 4, 8, 16 or 32")

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    @property
    def quarters_per_bar(self) -> float:
        return self.numerator * 4.0 / self.denominator

    @classmethod
    def parse(cls, text: str | Meter) -> Meter:
        if isinstance(text, Meter):
            return text
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            raise Sa3Error(f"meter {text!r} is not a time signature; write it like 4/4, 3/4 or 6/8")
        return cls(int(match.group(1)), int(match.group(2)))


def check_bpm(bpm: float) -> float:
    if not isinstance(bpm, (int, float)) or not math.isfinite(bpm) or not MIN_BPM <= bpm <= MAX_BPM:
        raise Sa3Error(f"tempo {bpm!r} bpm is out of range; use {MIN_BPM:g} to {MAX_BPM:g} bpm")
    return float(bpm)


def beat_seconds(bpm: float, meter: Meter | str = Meter()) -> float:
    """Length of one beat (the meter's denominator note) in seconds."""
    meter = Meter.parse(meter)
    return 60.0 / check_bpm(bpm) * 4.0 / meter.denominator


def bar_seconds(bpm: float, meter: Meter | str = Meter()) -> float:
    meter = Meter.parse(meter)
    return 60.0 / check_bpm(bpm) * meter.quarters_per_bar


def bars_to_seconds(bars: float, bpm: float, meter: Meter | str = Meter()) -> float:
    if not math.isfinite(bars) or bars <= 0:
        raise Sa3Error(f"bar count {bars!r} must be a positive number")
    return bars * bar_seconds(bpm, meter)


def bars_to_samples(bars: float, bpm: float, meter: Meter | str = Meter(), sample_rate: int = SAMPLE_RATE) -> int:
    """Exact sample count of ``bars`` bars: 4 bars of 4/4 at 120 bpm is 352,800 at 44.1 kHz."""
    return seconds_to_samples(bars_to_seconds(bars, bpm, meter), sample_rate)


def ppq_to_seconds(ppq: float, bpm: float) -> float:
    """Quarter-note position (JUCE's ppqPosition) to seconds at a steady tempo."""
    return ppq * 60.0 / check_bpm(bpm)


def parse_position(text: str, bpm: float | None = None, meter: Meter | str = Meter()) -> float:
    """A time position in seconds from text.

    Accepts seconds (``12.5``, ``12.5s``), ``m:ss.s`` is not accepted because ``:`` separates
    region ends. With ``bpm`` given, ``bar.beat`` (``5.1``, ``9.3``, 1-based, beats may be
    fractional: ``5.2.5`` is half way through beat 2) is read as a bar position.
    """
    text = str(text).strip()
    if bpm is not None and re.fullmatch(r"\d+\.\d+(\.\d+)?", text):
        meter = Meter.parse(meter)
        bar_text, beat_text, *frac = text.split(".")
        bar, beat = int(bar_text), float(beat_text) + (float("0." + frac[0]) if frac else 0.0)
        if bar < 1 or not 1 <= beat < meter.numerator + 1:
            raise Sa3Error(
                f"bar position {text!r} is outside {meter}: bars start at 1, beats run 1 to {meter.numerator}"
            )
        return (bar - 1) * bar_seconds(bpm, meter) + (beat - 1) * beat_seconds(bpm, meter)
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*s?", text)
    if not match:
        hint = "seconds like 12.5" + (" or bar.beat like 5.1" if bpm is not None else " (add --bpm for bar.beat)")
        raise Sa3Error(f"time position {text!r} is not understood; write {hint}")
    return float(match.group(1))


def parse_region(text: str, bpm: float | None = None, meter: Meter | str = Meter()) -> tuple[float, float]:
    """``START:END`` to a (start, end) pair in seconds; see :func:`parse_position`."""
    parts = str(text).split(":")
    if len(parts) != 2:
        raise Sa3Error(f"region {text!r} must be START:END, e.g. 2.0:4.5 (seconds) or 5.1:9.1 (bars, with --bpm)")
    start, end = (parse_position(p, bpm, meter) for p in parts)
    if end <= start:
        raise Sa3Error(f"region {text!r} is empty or reversed: its end must come after its start")
    return start, end
