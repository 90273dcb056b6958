"""Writers for one part each: chords, bass line, melody, drums, over a given harmony.

All take a numpy ``Generator`` so a seed fixes every choice, and write into a
:class:`~training.corpus.score.Score` in quarter-note time. ``chords`` is a list of
``(start_quarters, length_quarters, pitch_classes)``; bar grids use sixteenth notes.
"""

from __future__ import annotations

import math

import numpy as np

from .score import Part, Score
from .theory import DRUM_KEYS, METER_STEPS, Groove, Instrument, scale_pitch_classes, voice

STEP = 0.25  # quarter notes per sixteenth

# Velocity curves over a part's length (position 0..1 -> factor) and their caption words.
DYNAMICS = {
    "steady": (lambda p: 1.0, ""),
    "crescendo": (lambda p: 0.65 + 0.45 * p, "building"),
    "decrescendo": (lambda p: 1.1 - 0.45 * p, "fading"),
    "swell": (lambda p: 0.7 + 0.4 * math.sin(math.pi * p), "swelling"),
    "soft": (lambda p: 0.7, "soft"),
    "hard": (lambda p: 1.15, "hard-hitting"),
}

CHORD_STYLES = {
    "sustained": ("sustained", "held", "lush"),
    "stabs": ("stabby", "rhythmic", "staccato"),
    "arpeggio": ("arpeggiated", "rippling", "broken-chord"),
    "pulse": ("pulsing", "eighth-note", "driving"),
    "block": ("on-the-beat", "block-chord", "steady"),
}
BASS_STYLES = {
    "roots": ("simple", "root-note", "sustained"),
    "eighths": ("driving", "eighth-note", "pumping"),
    "root-fifth": ("bouncing", "root-fifth", "two-step"),
    "octaves": ("octave-jumping", "disco-style", "bouncy"),
    "walking": ("walking", "stepwise", "jazzy"),
    "syncopated": ("syncopated", "funky", "off-beat"),
}


def velocity(rng: np.random.Generator, base: float, dynamics: str, position: float, accent: float = 1.0) -> float:
    curve = DYNAMICS[dynamics][0]
    return base * curve(min(max(position, 0.0), 1.0)) * accent + rng.normal(0.0, 3.0)


def harmony(
    root: int, mode: str, progression: tuple[int, ...], bars: int, quarters_per_bar: float, sevenths: bool
) -> list[tuple[float, float, list[int]]]:
    """Chord changes for a loop of ``bars`` bars: 1 bar holds two chords, 2 bars four, else one a bar."""
    from .theory import chord_pitch_classes

    size = 4 if sevenths else 3
    if bars == 1:
        degrees, length = progression[:2], quarters_per_bar / 2
    elif bars == 2:
        degrees, length = progression, quarters_per_bar / 2
    else:
        degrees, length = [progression[b % len(progression)] for b in range(bars)], quarters_per_bar
    return [(i * length, length, chord_pitch_classes(root, mode, d, size)) for i, d in enumerate(degrees)]


def write_chords(
    score: Score,
    part: Part,
    inst: Instrument,
    chords: list[tuple[float, float, list[int]]],
    style: str,
    dynamics: str,
    rng: np.random.Generator,
    offset: float = 0.0,
) -> None:
    low = max(inst.low, 52)
    total = chords[-1][0] + chords[-1][1]
    base = rng.uniform(70, 95)
    for start, length, pcs in chords:
        notes = voice(pcs, low, min(inst.high, low + 19))
        pos = start / total
        if style == "sustained":
            for k, pitch in enumerate(notes):
                score.add(part, offset + start, length * 0.98, pitch, velocity(rng, base - 4 * k, dynamics, pos))
        elif style == "arpeggio":
            cycle = notes + [notes[0] + 12]
            rate = STEP if length <= 2 else 2 * STEP
            for k in range(int(round(length / rate))):
                pitch = cycle[k % len(cycle)]
                accent = 1.1 if k % 4 == 0 else 1.0
                t = start + k * rate
                score.add(part, offset + t, rate * 1.6, pitch, velocity(rng, base, dynamics, t / total, accent))
        else:
            hits = {"stabs": (0.5, 1.5, 2.5, 3.5), "pulse": (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5), "block": (0, 1, 2, 3)}
            note_len = {"stabs": 0.3, "pulse": 0.4, "block": 0.9}[style]
            for beat in hits[style]:
                if beat >= length:
                    continue
                t = start + beat
                for k, pitch in enumerate(notes):
                    score.add(part, offset + t, note_len, pitch, velocity(rng, base - 3 * k, dynamics, t / total))


def write_bass(
    score: Score,
    part: Part,
    inst: Instrument,
    root: int,
    mode: str,
    chords: list[tuple[float, float, list[int]]],
    style: str,
    dynamics: str,
    rng: np.random.Generator,
    offset: float = 0.0,
) -> None:
    total = chords[-1][0] + chords[-1][1]
    scale = scale_pitch_classes(root, mode)
    base = rng.uniform(80, 105)
    for index, (start, length, pcs) in enumerate(chords):
        low_root = inst.low + (pcs[0] - inst.low) % 12
        fifth = low_root + 7
        if style == "roots":
            pattern = [(0.0, length * 0.95, low_root)]
        elif style == "eighths":
            pattern = [(b * 0.5, 0.4, low_root) for b in range(int(length * 2))]
        elif style == "root-fifth":
            pattern = [(b, 0.8, low_root if b % 2 == 0 else fifth) for b in range(int(length))]
        elif style == "octaves":
            pattern = [(b * 0.5, 0.35, low_root + (12 if b % 2 else 0)) for b in range(int(length * 2))]
        elif style == "walking":
            next_root = chords[(index + 1) % len(chords)][2][0]
            steps = [pc for pc in scale]
            pattern, pitch = [], low_root
            for b in range(int(length)):
                pattern.append((float(b), 0.9, pitch))
                direction = 1 if (next_root - pitch) % 12 < 6 else -1
                candidates = [p for p in range(pitch + direction, pitch + 3 * direction, direction) if p % 12 in steps]
                pitch = candidates[0] if candidates else pitch
        else:  # syncopated
            pattern = [(t, 0.3, low_root + (12 if t == 2.75 else 0)) for t in (0.0, 0.75, 1.5, 2.75, 3.5) if t < length]
        for t, dur, pitch in pattern:
            if t >= length:
                continue
            accent = 1.1 if t == 0 else 1.0
            score.add(part, offset + start + t, dur, pitch, velocity(rng, base, dynamics, (start + t) / total, accent))


MELODY_RHYTHMS = {
    16: ((0, 4, 8, 12), (0, 2, 4, 6, 8, 12), (0, 3, 6, 8, 10, 12, 14), (0, 2, 3, 6, 8, 11, 12), (0, 6, 8, 10, 12)),
    12: ((0, 4, 8), (0, 2, 4, 6, 8, 10), (0, 3, 6, 9), (0, 6, 8, 10), (0, 2, 4, 8)),
}


def write_melody(
    score: Score,
    part: Part,
    inst: Instrument,
    root: int,
    mode: str,
    chords: list[tuple[float, float, list[int]]],
    bars: int,
    meter_text: str,
    dynamics: str,
    rng: np.random.Generator,
    offset: float = 0.0,
) -> None:
    """A phrase made of a one-bar motif, repeated with variation (A A' A B for four bars)."""
    steps = METER_STEPS[meter_text]
    qpb = steps * STEP
    scale = scale_pitch_classes(root, mode)
    low, high = max(inst.low, 60), min(inst.high, 84)
    pitches = [p for p in range(low, high + 1) if p % 12 in scale]
    if not pitches:
        pitches = list(range(low, high + 1))
    rhythm = MELODY_RHYTHMS[steps][int(rng.integers(len(MELODY_RHYTHMS[steps])))]
    moves = rng.integers(-2, 3, size=len(rhythm))
    base = rng.uniform(80, 100)
    total = bars * qpb
    for bar in range(bars):
        varied = bar % 4 == 3 or (bar == bars - 1 and bars > 1)
        index = len(pitches) // 2
        for k, step in enumerate(rhythm):
            t = bar * qpb + step * STEP
            chord = next((c for c in chords if c[0] <= t < c[0] + c[1]), chords[-1])
            move = int(moves[k]) if not varied else int(rng.integers(-3, 4))
            index = min(max(index + move, 0), len(pitches) - 1)
            if step % 4 == 0:  # strong beats land on a chord tone
                near = [i for i, p in enumerate(pitches) if p % 12 in chord[2]]
                if near:
                    index = min(near, key=lambda i: abs(i - index))
            following = rhythm[k + 1] if k + 1 < len(rhythm) else steps
            length = (following - step) * STEP * 0.9
            accent = 1.08 if step == 0 else 1.0
            score.add(part, offset + t, length, pitches[index], velocity(rng, base, dynamics, t / total, accent))


def write_drums(
    score: Score,
    part: Part,
    groove: Groove,
    bars: int,
    dynamics: str,
    rng: np.random.Generator,
    fill: bool = False,
    crash: bool = False,
    offset: float = 0.0,
) -> None:
    total = bars * groove.steps * STEP
    for bar in range(bars):
        fill_bar = fill and bar == bars - 1
        for name, row in groove.rows.items():
            for step, mark in enumerate(row):
                if mark == "." or (fill_bar and step >= groove.steps - 4 and name != "kick"):
                    continue
                t = bar * groove.steps * STEP + step * STEP
                if step % 2 == 1:
                    t += groove.swing * STEP
                base = 105 if mark == "x" else 65
                score.add(part, offset + t, 0.2, DRUM_KEYS[name], velocity(rng, base, dynamics, t / total))
        if fill_bar:
            toms = ("snare", "tom_hi", "tom_mid", "tom_lo")
            for k in range(4):
                t = (bar + 1) * groove.steps * STEP - (4 - k) * STEP
                score.add(part, offset + t, 0.2, DRUM_KEYS[toms[k]], velocity(rng, 100, dynamics, t / total))
    if crash:
        score.add(part, offset, 1.0, DRUM_KEYS["crash"], 110)
