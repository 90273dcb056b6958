"""Procedural training audio: tones, chords, plucks, drum hits and noise bursts, panned in stereo.

Used by the autoencoder trainer when no data is given, so a fresh checkout can train without
downloading anything. Every clip is a pure function of the ``torch.Generator`` passed in
(deterministic from a seed). A clip holds a random number of events at random times with
random lengths, levels and pan positions (sometimes hard left/right), over silence.
"""

from __future__ import annotations

import math

import torch

from sa3core.timebase import CHANNELS, SAMPLE_RATE


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number in [low, high)."""
    return int(torch.randint(low, high, (), generator=generator))


def _hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _harmonic_tone(t: torch.Tensor, hz: float, generator: torch.Generator, pluck: bool) -> torch.Tensor:
    """A sum of harmonics (below 18 kHz) with a random spectral tilt; plucks lose highs faster."""
    harmonics = torch.arange(1, 13, dtype=torch.float32)
    harmonics = harmonics[harmonics * hz < 18_000]
    amplitude = harmonics ** -_uniform(generator, 0.8, 2.2)
    if torch.rand((), generator=generator) < 0.3:  # odd harmonics only: square-ish
        amplitude = amplitude * (harmonics % 2 == 1)
    phase = torch.rand(len(harmonics), generator=generator) * 2 * math.pi
    partials = torch.sin(2 * math.pi * hz * harmonics[:, None] * t[None] + phase[:, None])  # (harmonics, n)
    if pluck:
        partials = partials * torch.exp(-t[None] * harmonics[:, None] * _uniform(generator, 2.0, 8.0))
    return (amplitude[:, None] * partials).sum(0) / amplitude.sum()


def _envelope(t: torch.Tensor, generator: torch.Generator, attack_max: float, decay: tuple[float, float]):
    attack = _uniform(generator, 0.001, attack_max)
    rate = _uniform(generator, *decay)
    return torch.clamp(t / attack, max=1.0) * torch.exp(-t * rate)


def _event(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """One mono event of ``n`` samples."""
    t = torch.arange(n, dtype=torch.float32) / SAMPLE_RATE
    if kind in ("tone", "pluck"):
        note = _uniform(generator, 33, 96)
        sound = _harmonic_tone(t, _hz(note), generator, pluck=kind == "pluck")
        return sound * _envelope(t, generator, 0.08 if kind == "tone" else 0.004, (0.2, 3.0))
    if kind == "chord":
        root = _integer(generator, 40, 76)
        third = 4 if torch.rand((), generator=generator) < 0.5 else 3
        notes = [root, root + third, root + 7] + ([root + 10 + (third == 4)] if _integer(generator, 0, 2) else [])
        sound = sum(_harmonic_tone(t, _hz(note), generator, pluck=False) for note in notes) / len(notes)
        return sound * _envelope(t, generator, 0.1, (0.1, 1.5))
    if kind == "kick":
        start, end = _uniform(generator, 90, 200), _uniform(generator, 35, 60)
        hz = end + (start - end) * torch.exp(-t * _uniform(generator, 15, 40))
        phase = 2 * math.pi * torch.cumsum(hz, 0) / SAMPLE_RATE
        return torch.sin(phase) * torch.exp(-t * _uniform(generator, 5, 15))
    noise = torch.rand(n, generator=generator) * 2 - 1
    if kind == "snare":
        body = torch.sin(2 * math.pi * _uniform(generator, 160, 240) * t) * torch.exp(-t * 30)
        return 0.6 * noise * torch.exp(-t * _uniform(generator, 12, 30)) + 0.5 * body
    if kind == "hat":
        bright = torch.diff(noise, prepend=noise[:1])  # first difference: a simple high-pass
        return 0.7 * bright * torch.exp(-t * _uniform(generator, 25, 80))
    # noise burst, darkened by a moving average of random width
    width = _integer(generator, 1, 32)
    dark = torch.nn.functional.avg_pool1d(noise[None, None], width, stride=1, padding=width // 2)[0, 0, :n]
    return dark * math.sqrt(width) * 0.5 * _envelope(t, generator, 0.2, (0.5, 6.0))


EVENT_KINDS = ("tone", "chord", "pluck", "kick", "snare", "hat", "noise")


def render_clip(samples: int, generator: torch.Generator) -> torch.Tensor:
    """A procedural stereo clip, float32 [2, samples], peak between about 0.1 and 0.9."""
    clip = torch.zeros(CHANNELS, samples)
    for _ in range(_integer(generator, 1, 7)):
        kind = EVENT_KINDS[_integer(generator, 0, len(EVENT_KINDS))]
        start = _integer(generator, 0, max(1, samples - 64))
        length = min(samples - start, _integer(generator, SAMPLE_RATE // 20, 2 * SAMPLE_RATE))
        if length <= 0:
            continue
        sound = _event(kind, length, generator) * _uniform(generator, 0.2, 1.0)
        roll = float(torch.rand((), generator=generator))
        pan = -1.0 if roll < 0.1 else 1.0 if roll < 0.2 else _uniform(generator, -1.0, 1.0)
        angle = (pan + 1.0) * math.pi / 4  # constant power: -1 = hard left, +1 = hard right
        gains = torch.tensor([math.cos(angle), math.sin(angle)])
        clip[:, start : start + length] += gains[:, None] * sound[None]
    peak = clip.abs().max()
    if peak > 0:
        clip = clip * (_uniform(generator, 0.1, 0.9) / peak)
    return clip


def render_batch(batch_size: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """float32 [batch_size, 2, samples] of independent clips."""
    return torch.stack([render_clip(samples, generator) for _ in range(batch_size)])
