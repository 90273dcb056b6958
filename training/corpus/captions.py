"""Captions in varied natural wording, written from an item's generation tags.

Several templates per kind and synonyms for instruments, styles and numbers; the choice comes
from a seeded ``Generator`` so a seed always gives the same caption. Whenever the tags carry a
key or a tempo the caption states them (``D minor``, ``92 bpm``), because those are the facts
a producer types and the model must learn to follow.
"""

from __future__ import annotations

import numpy as np

FLAVOUR_WORDS = {
    "drums": ("drum loop", "beat", "drum groove", "drum pattern"),
    "chords": ("chord loop", "chord progression", "chords"),
    "bass": ("bassline", "bass loop", "bass groove"),
    "melody": ("melody", "melodic loop", "lead line", "riff"),
    "ensemble": ("groove", "loop", "full-band loop", "backing loop"),
}
ONE_SHOT_WORDS = {
    "drum": ("one-shot", "hit", "sample", "single hit"),
    "note": ("one-shot", "single note", "note sample", "stab"),
    "chord": ("chord stab", "chord one-shot", "chord hit"),
}
SFX_WORDS = ("sound effect", "SFX", "sfx", "effect")
NUMBER_WORDS = {1: "one", 2: "two", 4: "four", 8: "eight"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _join(words: list[str]) -> str:
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _key(rng, tags) -> str:
    key = f"{tags['key']} {tags['mode']}"
    return _pick(rng, (key, f"in {key}", f"key of {key}", f"{key} key")) if rng.random() < 0.5 else f"in {key}"


def _bpm(rng, tags) -> str:
    bpm = f"{tags['bpm']:g}"
    return _pick(rng, (f"{bpm} bpm", f"at {bpm} bpm", f"{bpm} BPM", f"tempo {bpm}", f"{bpm} beats per minute"))


def _bars(rng, tags, adjective: bool = False) -> str:
    """``4 bars`` / ``four bars`` (noun), or ``4-bar`` / ``four-bar`` (before a noun)."""
    bars = tags["bars"]
    word = NUMBER_WORDS.get(bars, str(bars)) if rng.random() < 0.4 else str(bars)
    if adjective:
        return f"{word}-bar"
    return f"{word} bar" if bars == 1 else f"{word} bars"


def _meter(rng, tags) -> str:
    meter = tags.get("meter", "4/4")
    if meter == "4/4":
        return "in 4/4" if rng.random() < 0.2 else ""
    if meter == "3/4":
        return _pick(rng, ("in 3/4", "3/4 time", "waltz time"))
    return _pick(rng, ("in 6/8", "6/8 feel", "compound 6/8 time"))


def _instruments(rng, tags) -> str:
    return _join([_pick(rng, names) for names in tags.get("_synonyms", [])])


def _moods(rng, tags, count: int) -> list[str]:
    moods = list(tags.get("moods", []))
    if not moods:
        return []
    order = rng.permutation(len(moods))[:count]
    return [moods[i] for i in sorted(order)]


def caption(tags: dict, rng: np.random.Generator) -> str:
    """One caption for an item's tags; deterministic in ``rng``'s state."""
    kind = tags["kind"]
    if kind in ("loop", "piece"):
        return _music(tags, rng)
    if kind == "one-shot":
        return _one_shot(tags, rng)
    return _sfx(tags, rng)


def _music(tags: dict, rng: np.random.Generator) -> str:
    moods = _moods(rng, tags, 2)
    inst = _instruments(rng, tags)
    genre = tags.get("genre", "")
    has_key = "key" in tags
    key = _key(rng, tags) if has_key else ""
    bpm, meter = _bpm(rng, tags), _meter(rng, tags)
    if tags["kind"] == "piece":
        what = _pick(rng, ("piece", "short track", "arrangement", "instrumental"))
        seconds = tags.get("seconds")
        templates = [
            f"{' '.join(moods)} {genre} {what} with {inst}, {key}, {bpm}",
            f"{genre} {what} {key} at {tags['bpm']:g} bpm featuring {inst}, {_join(moods)}",
            f"{inst} playing a {_join(moods)} {genre} {what}, {key}, {bpm}",
        ]
        text = _pick(rng, templates)
        if seconds and rng.random() < 0.3:
            text += f", about {round(seconds)} seconds"
        return _tidy(text + (f", {meter}" if meter and meter not in text else ""))
    noun = _pick(rng, FLAVOUR_WORDS[tags["flavour"]])
    bars, bars_adj = _bars(rng, tags), _bars(rng, tags, adjective=True)
    mood = " ".join(moods)
    if tags["flavour"] == "drums":
        templates = [
            f"{mood} {genre} {noun} at {tags['bpm']:g} bpm, {bars}",
            f"{genre} {noun}, {bpm}, {bars}, {mood}",
            f"{bars_adj} {genre} {noun} {meter} {bpm}, {_join(moods)}",
        ]
    else:
        templates = [
            f"{mood} {inst} {noun} {key}, {bpm}, {bars}",
            f"{inst} {noun} {key}, {bpm}, {_join(moods)}, {bars}",
            f"{genre} {noun} with {inst}, {key}, {bpm} {meter}, {mood}",
            f"{bars_adj} {noun} of {inst} {key} {bpm}, {_join(moods)}",
        ]
    text = _pick(rng, templates)
    return _tidy(text + (f", {meter}" if meter and meter not in text and rng.random() < 0.3 else ""))


def _one_shot(tags: dict, rng: np.random.Generator) -> str:
    inst = _instruments(rng, tags)
    noun = _pick(rng, ONE_SHOT_WORDS[tags["flavour"]])
    moods = _join(_moods(rng, tags, 1))
    if tags["flavour"] == "chord":
        chord = f"{tags['key']} {tags['mode']}"
        text = _pick(rng, (f"{inst} {chord} {noun}", f"{chord} {noun} on {inst}", f"single {inst} {noun}, {chord}"))
    elif tags["flavour"] == "note":
        text = _pick(rng, (f"{inst} {noun}, {tags['note']}", f"{noun} of {inst} playing {tags['note']}"))
    else:
        text = _pick(rng, (f"{inst} {noun}", f"{moods} {inst} {noun}", f"single {inst} {noun}"))
    return _tidy(text + (f", {moods}" if moods and rng.random() < 0.5 else ""))


def _sfx(tags: dict, rng: np.random.Generator) -> str:
    name = _instruments(rng, tags)
    moods = _moods(rng, tags, 2)
    noun = _pick(rng, SFX_WORDS)
    texture = tags.get("flavour") == "texture"
    templates = [
        f"{' '.join(moods)} {name}",
        f"{name} {noun}, {_join(moods)}",
        f"{moods[0] if moods else ''} {name} {'texture' if texture else noun}",
    ]
    return _tidy(_pick(rng, templates))


def _tidy(text: str) -> str:
    """Collapse the gaps and stray commas that empty template slots leave."""
    parts = [" ".join(p.split()) for p in text.split(",")]
    text = ", ".join(p for p in parts if p)
    return text[:1].upper() + text[1:] if text[:1].islower() else text
