"""Music items: choose key, tempo, meter, instruments and mix, then compose the score.

Each ``make_*`` function takes a seeded ``Generator`` and the length limit and returns a
:class:`MusicItem`: the score, how to render it (an exact-length loop, or a sound that rings
out), which soundfont, and the tags captions are written from. Loops are exactly
``timebase.bars_to_samples(bars, bpm, meter)`` long; pieces and one-shots keep their
natural decay and end in silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sa3core.timebase import Meter, bar_seconds, bars_to_samples, seconds_to_samples

from . import parts
from .score import DRUM_CHANNEL, Part, Score
from .theory import (
    CHORD_FAMILIES,
    DRUM_HIT_NAMES,
    DRUM_KEYS,
    MELODY_FAMILIES,
    MODES,
    NOTE_NAMES,
    PROGRESSIONS,
    Instrument,
    chord_name,
    chord_pitch_classes,
    grooves_for,
    instruments_of,
    voice,
)

MODE_WEIGHTS = {"major": 0.32, "minor": 0.32, "dorian": 0.1, "mixolydian": 0.08, "lydian": 0.06}
MODE_WEIGHTS |= {"phrygian": 0.06, "harmonic minor": 0.06}
ONE_SHOT_MAX_SECONDS = 2.0


@dataclass
class MusicItem:
    kind: str  # loop, one-shot, piece
    score: Score
    render_samples: int  # samples to render (loops: the exact loop length)
    loop: bool  # wrap the ring-out past the end back onto the start (seamless loop)
    soundfont: str
    tags: dict = field(default_factory=dict)


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _key(rng: np.random.Generator) -> tuple[int, str]:
    modes = list(MODE_WEIGHTS)
    mode = modes[int(rng.choice(len(modes), p=np.array(list(MODE_WEIGHTS.values())) / sum(MODE_WEIGHTS.values())))]
    assert mode in MODES
    return int(rng.integers(12)), mode


def _meter(rng: np.random.Generator) -> str:
    return _choice(rng, ("4/4",) * 7 + ("3/4",) * 2 + ("6/8",) * 2)


def _bars(rng: np.random.Generator, bpm: float, meter: str, max_seconds: float, choices=(1, 2, 4, 8)) -> int:
    fitting = [b for b in choices if b * bar_seconds(bpm, meter) <= min(max_seconds, 32.0)]
    return _choice(rng, fitting) if fitting else 0


def _mixer(rng: np.random.Generator, role: str, channel: int, inst_name: str, program: int) -> Part:
    centred = role in ("bass", "drums")
    pan = 64 if centred else int(np.clip(64 + rng.normal(0, 28), 8, 120))
    reverb = int(rng.choice([5, 25, 45, 70, 100]))
    chorus = int(rng.choice([0, 0, 0, 30, 70])) if role not in ("drums", "bass") else 0
    return Part(role, inst_name, program, channel, pan, reverb, chorus, int(rng.integers(92, 118)))


def _space_words(score: Score) -> list[str]:
    tonal = [p for p in score.parts if p.role not in ("drums", "bass")] or score.parts
    reverb = sum(p.reverb for p in tonal) / len(tonal)
    words = ["dry"] if reverb < 20 else ["lush reverb"] if reverb > 80 else []
    if any(p.chorus >= 60 for p in tonal):
        words.append("chorused")
    pans = [p.pan for p in tonal]
    if max(pans) - min(pans) > 50:
        words.append("wide stereo")  # parts spread to both sides
    elif sum(pans) / len(pans) < 40:
        words.append("panned left")
    elif sum(pans) / len(pans) > 88:
        words.append("panned right")
    return words


def _instrument(rng: np.random.Generator, families) -> Instrument:
    return _choice(rng, instruments_of(families))


def _soundfont(rng: np.random.Generator) -> str:
    return _choice(rng, ("FluidR3_GM", "MuseScore_General"))


def _base_tags(kind: str, bpm: float | None, root: int | None, mode: str | None, meter: str | None, bars: int | None):
    tags = {"kind": kind}
    if bpm is not None:
        tags["bpm"] = round(bpm, 2)
    if root is not None:
        tags["key"] = NOTE_NAMES[root]
        tags["mode"] = mode
    if meter is not None:
        tags["meter"] = meter
    if bars:
        tags["bars"] = bars
    return tags


def make_loop(rng: np.random.Generator, max_seconds: float, flavour: str) -> MusicItem:
    """A loop of 1-8 bars. ``flavour``: chords, drums, bass, melody or ensemble."""
    if flavour not in ("chords", "drums", "bass", "melody", "ensemble"):
        raise ValueError(f"unknown loop flavour {flavour!r}")
    meter = _meter(rng) if flavour != "drums" else _choice(rng, ("4/4",) * 6 + ("3/4", "6/8"))
    groove = _choice(rng, grooves_for(meter))
    lo, hi = groove.bpm_range if flavour in ("drums", "ensemble") else (60, 180)
    bpm = float(rng.integers(lo, hi + 1))
    bars = _bars(rng, bpm, meter, max_seconds)
    while bars == 0:  # even one bar is too long: play it faster
        bpm = float(round(min(bpm * 1.25, 180.0)))
        bars = _bars(rng, bpm, meter, max_seconds, (1,))
    root, mode = _key(rng)
    progression = _choice(rng, PROGRESSIONS)
    qpb = Meter.parse(meter).quarters_per_bar
    chords = parts.harmony(root, mode, progression, bars, qpb, bool(rng.random() < 0.3))
    dynamics = _choice(rng, ("steady",) * 4 + tuple(parts.DYNAMICS))
    score = Score(bpm, Meter.parse(meter))
    tags = _base_tags("loop", bpm, root, mode, meter, bars)
    words, instruments = [], []
    has = {
        "chords": flavour in ("chords", "ensemble") or (flavour == "melody" and rng.random() < 0.5),
        "bass": flavour in ("bass", "ensemble") or (flavour == "chords" and rng.random() < 0.4),
        "melody": flavour == "melody" or (flavour == "ensemble" and rng.random() < 0.5),
        "drums": flavour in ("drums", "ensemble"),
    }
    if has["chords"]:
        inst = _instrument(rng, CHORD_FAMILIES)
        style = _choice(rng, tuple(parts.CHORD_STYLES))
        part = _mixer(rng, "chords", 0, inst.names[0], inst.program)
        score.parts.append(part)
        parts.write_chords(score, part, inst, chords, style, dynamics, rng)
        instruments.append(inst.names)
        words.append(_choice(rng, parts.CHORD_STYLES[style]))
        tags["chords"] = [chord_name(c[2]) for c in chords]
    if has["bass"]:
        inst = _instrument(rng, "bass")
        style = _choice(rng, tuple(parts.BASS_STYLES))
        part = _mixer(rng, "bass", 1, inst.names[0], inst.program)
        score.parts.append(part)
        parts.write_bass(score, part, inst, root, mode, chords, style, dynamics, rng)
        instruments.append(inst.names)
        if flavour == "bass":
            words.append(_choice(rng, parts.BASS_STYLES[style]))
    if has["melody"]:
        inst = _instrument(rng, MELODY_FAMILIES)
        part = _mixer(rng, "melody", 2, inst.names[0], inst.program)
        score.parts.append(part)
        parts.write_melody(score, part, inst, root, mode, chords, bars, meter, dynamics, rng)
        instruments.append(inst.names)
    if has["drums"]:
        part = _mixer(rng, "drums", DRUM_CHANNEL, "drum kit", 0)
        score.parts.append(part)
        parts.write_drums(score, part, groove, bars, dynamics, rng, fill=bars >= 4 and rng.random() < 0.5)
        instruments.append(("drum kit", "drums", "kit"))
        tags["genre"] = groove.name
        words.append(_choice(rng, groove.moods))
    if flavour == "drums":
        del tags["key"], tags["mode"]  # a drum kit has no key; captions must not claim one
    if parts.DYNAMICS[dynamics][1]:
        words.append(parts.DYNAMICS[dynamics][1])
    tags |= {"flavour": flavour, "instruments": [n[0] for n in instruments], "moods": words + _space_words(score)}
    tags["_synonyms"] = [list(n) for n in instruments]
    samples = bars_to_samples(bars, bpm, meter)
    return MusicItem("loop", score, samples, True, _soundfont(rng), tags)


def make_piece(rng: np.random.Generator, max_seconds: float) -> MusicItem:
    """A short arrangement (intro, groove, melody section, ending chord) of 8-60 s, ringing out."""
    meter = _meter(rng)
    groove = _choice(rng, grooves_for(meter))
    bpm = float(rng.integers(groove.bpm_range[0], groove.bpm_range[1] + 1))
    root, mode = _key(rng)
    seconds_cap = min(max_seconds, 60.0) - 3.0  # room for the final chord to ring out
    bar_len = bar_seconds(bpm, meter)
    max_bars = max(1, int(seconds_cap // bar_len) - 1)
    target = int(rng.integers(max(1, min(8, max_bars)), max_bars + 1))
    sections: list[int] = []
    for bars in (2, 4, 4, 8, 4, 8, 4):  # intro, groove, melody sections; the final bar comes after
        if sum(sections) + bars <= target - 1:
            sections.append(bars)
    sections = sections or [max(1, target - 1)]
    qpb = Meter.parse(meter).quarters_per_bar
    score = Score(bpm, Meter.parse(meter))
    dynamics = _choice(rng, ("steady", "crescendo", "swell"))
    chord_inst, bass_inst = _instrument(rng, CHORD_FAMILIES), _instrument(rng, "bass")
    lead_inst = _instrument(rng, MELODY_FAMILIES)
    chord_part = _mixer(rng, "chords", 0, chord_inst.names[0], chord_inst.program)
    bass_part = _mixer(rng, "bass", 1, bass_inst.names[0], bass_inst.program)
    lead_part = _mixer(rng, "melody", 2, lead_inst.names[0], lead_inst.program)
    drum_part = _mixer(rng, "drums", DRUM_CHANNEL, "drum kit", 0)
    score.parts += [chord_part, bass_part, lead_part, drum_part]
    chord_style = _choice(rng, tuple(parts.CHORD_STYLES))
    bass_style = _choice(rng, tuple(parts.BASS_STYLES))
    start = 0.0
    for number, bars in enumerate(sections):
        progression = _choice(rng, PROGRESSIONS)
        chords = parts.harmony(root, mode, progression, bars, qpb, bool(rng.random() < 0.3))
        parts.write_chords(score, chord_part, chord_inst, chords, chord_style, dynamics, rng, offset=start)
        if number >= 1 or len(sections) == 1:
            parts.write_bass(score, bass_part, bass_inst, root, mode, chords, bass_style, dynamics, rng, offset=start)
            parts.write_drums(score, drum_part, groove, bars, dynamics, rng, fill=True, crash=True, offset=start)
        if number >= 2:
            parts.write_melody(score, lead_part, lead_inst, root, mode, chords, bars, meter, dynamics, rng, start)
        start += bars * qpb
    final = voice(chord_pitch_classes(root, mode, 0), max(chord_inst.low, 52), chord_inst.high)
    for pitch in final:
        score.add(chord_part, start, qpb, pitch, 85)
    score.add(bass_part, start, qpb, bass_inst.low + (root - bass_inst.low) % 12, 90)
    score.add(drum_part, start, 1.0, DRUM_KEYS["crash"], 100)
    score.parts = [p for p in score.parts if any(n.channel == p.channel for n in score.notes)]
    used = [p.role for p in score.parts]
    instruments = [chord_inst.names, bass_inst.names] + ([lead_inst.names] if "melody" in used else [])
    instruments += [("drum kit", "drums")] if "drums" in used else []
    body_bars = sum(sections) + 1
    tags = _base_tags("piece", bpm, root, mode, meter, body_bars)
    moods = [_choice(rng, groove.moods), _choice(rng, parts.CHORD_STYLES[chord_style])]
    moods += ([parts.DYNAMICS[dynamics][1]] if parts.DYNAMICS[dynamics][1] else []) + _space_words(score)
    tags |= {"genre": groove.name, "instruments": [n[0] for n in instruments], "moods": moods}
    tags["_synonyms"] = [list(n) for n in instruments]
    ring = seconds_to_samples(3.0)
    return MusicItem("piece", score, bars_to_samples(body_bars, bpm, meter) + ring, False, _soundfont(rng), tags)


def make_one_shot(rng: np.random.Generator, max_seconds: float, flavour: str) -> MusicItem:
    """A single note, chord or drum hit with its natural decay (under 2 s with the silence tail)."""
    score = Score(120.0, Meter())  # at 120 bpm one quarter is 0.5 s
    seconds = min(ONE_SHOT_MAX_SECONDS, max_seconds)
    tags = {"kind": "one-shot", "flavour": flavour}
    if flavour == "drum":
        names = list(DRUM_HIT_NAMES)
        hit = _choice(rng, names)
        part = _mixer(rng, "drums", DRUM_CHANNEL, DRUM_HIT_NAMES[hit][0], 0)
        part.reverb = int(rng.choice([0, 10, 30, 60]))
        score.parts.append(part)
        score.add(part, 0.0, 0.2, DRUM_KEYS[hit], rng.integers(70, 127))
        tags |= {"instruments": [DRUM_HIT_NAMES[hit][0]], "_synonyms": [list(DRUM_HIT_NAMES[hit])]}
    else:
        families = (
            CHORD_FAMILIES
            if flavour == "chord"
            else tuple({i.family for i in instruments_of(MELODY_FAMILIES + ("bass",))})
        )
        inst = _instrument(rng, tuple(sorted(families)))
        part = _mixer(rng, "hit", 0, inst.names[0], inst.program)
        score.parts.append(part)
        length = float(rng.uniform(0.3, 1.6))  # quarters: 0.15-0.8 s held, then the release rings
        root = int(rng.integers(12))
        if flavour == "chord":
            mode = _choice(rng, ("major", "minor"))
            pcs = chord_pitch_classes(root, mode, 0, 4 if rng.random() < 0.3 else 3)
            for pitch in voice(pcs, max(inst.low, 48), inst.high):
                score.add(part, 0.0, length, pitch, rng.integers(60, 115))
            tags |= {"key": NOTE_NAMES[root], "mode": mode, "chord": chord_name(pcs)}
        else:
            pitch = int(rng.integers(inst.low, inst.high + 1))
            score.add(part, 0.0, length, pitch, rng.integers(50, 120))
            tags["note"] = f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"
        tags |= {"instruments": [inst.names[0]], "_synonyms": [list(inst.names)]}
    tags["moods"] = _space_words(score)
    return MusicItem("one-shot", score, seconds_to_samples(seconds), False, _soundfont(rng), tags)
