"""Synthesized test signals with known answers (keys, tempi, meters, splices)."""

from __future__ import annotations

import numpy as np

from sa3core import timebase

RATE = timebase.SAMPLE_RATE


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def note(freq: float, seconds: float, decay: float = 2.0, phase_rng: np.random.Generator | None = None) -> np.ndarray:
    """A harmonic tone (4 partials, 1/2 amplitude each step up) with a 3 ms attack and a 10 ms release."""
    t = np.arange(int(seconds * RATE)) / RATE
    phases = phase_rng.uniform(0, 2 * np.pi, 4) if phase_rng is not None else np.zeros(4)
    tone = sum(0.5**h * np.sin(2 * np.pi * freq * (h + 1) * t + phases[h]) for h in range(4))
    envelope = np.exp(-t * decay) * np.minimum(1.0, t / 0.003) * np.minimum(1.0, (t[-1] - t) / 0.010)
    return tone * envelope


def stereo(mono: np.ndarray, peak: float = 0.5) -> np.ndarray:
    mono = peak * mono / max(np.abs(mono).max(), 1e-12)
    return np.stack([mono, mono]).astype(np.float32)


def progression(tonic: int, minor: bool, seconds_per_chord: float = 1.0, repeats: int = 2) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i in minor, with the raised leading tone) in block chords over a bass root."""
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    parts = []
    for chord in chords * repeats:
        voices = [note(midi_hz(60 + tonic + step), seconds_per_chord) for step in chord]
        parts.append(sum(voices) + note(midi_hz(48 + tonic + chord[0]), seconds_per_chord))
    return stereo(np.concatenate(parts))


def drum_hit(kind: str, rng: np.random.Generator, samples: int = 4000) -> np.ndarray:
    t = np.arange(samples) / RATE
    if kind == "kick":  # pitch-swept sine
        return np.sin(2 * np.pi * (60 + 80 * np.exp(-t * 40)) * t) * np.exp(-t * 25)
    if kind == "snare":
        return 0.6 * rng.standard_normal(samples) * np.exp(-t * 30)
    return 0.3 * rng.standard_normal(samples) * np.exp(-t * 120)  # hat


def drum_pattern(bpm: float, beats_per_bar: int = 4, bars: int = 6, seed: int = 0) -> np.ndarray:
    """A kick on each downbeat, hats on the other beats, soft hats on the off-beat eighths."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    total = int(bars * beats_per_bar * beat * RATE) + RATE
    out = np.zeros(total)
    for index in range(bars * beats_per_bar):
        for offset, kind, gain in ((0.0, "kick" if index % beats_per_bar == 0 else "hat", 1.0), (0.5, "hat", 0.15)):
            if offset == 0.0 and index % beats_per_bar:
                gain = 0.35
            start = int((index + offset) * beat * RATE)
            hit = gain * drum_hit(kind, rng)[: total - start]
            out[start : start + hit.size] += hit
    return stereo(out)


def note_sequence(seed: int, phase_seed: int, seconds: float = 4.0, per_second: int = 6) -> np.ndarray:
    """Plucked notes from a fixed melody (``seed``); ``phase_seed`` picks the partials' phases,
    so two phase seeds give the same music with different waveforms (like two renderings)."""
    melody, phases = np.random.default_rng(seed), np.random.default_rng(phase_seed)
    samples = int(seconds * RATE)
    step = RATE // per_second
    out = np.zeros(samples)
    for start in range(0, samples, step):
        tone = note(midi_hz(57 + melody.integers(0, 12)), 2 * step / RATE, decay=6.0, phase_rng=phases)
        tone = tone[: samples - start]
        out[start : start + tone.size] += tone
    return stereo(out, peak=0.3)
