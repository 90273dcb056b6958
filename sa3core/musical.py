"""Musical attributes of a request (tempo, key, meter) and the DiT's ``music`` input.

The text encoder sees "D minor, 92 bpm" as a few word pieces among many; a small model trained
on two CPU cores never learned to turn them into pitch content and a beat grid (key 2/18 and
tempo 0/24 on held-out prompts). So the DiT also gets them as numbers, one row per item:

    music [B, 27] = tonic one-hot [12] | scale pitch classes [12] | beat [3]

- tonic one-hot: the key's tonic (or a one-shot's note), 0 = C; all zero when unknown.
- scale pitch classes: the mode's pitch-class set rotated to the tonic (D dorian = the notes
  of C major with tonic D), all zero when unknown. Modes share notes, so a class seen rarely
  in training still lands near the ones it resembles.
- beat: ``(beats per latent frame, beat position at frame 0, beats per bar)``, beats being
  quarter notes; zeros when the tempo is unknown (and beats per bar 0 when the meter is).
  From these the DiT builds per-frame beat and bar phases (:mod:`sa3core.models.dit`), so a
  generation starts on a downbeat and keeps the asked tempo; training crops carry the beat
  position where they start.

Attributes come from the request (``--bpm`` / a host's tempo win), else from the prompt
(:func:`parse_prompt`, which reads the wordings producers use: "92 bpm", "tempo 92",
"in F# dorian", "key of C# harmonic minor", "Bb minor", "3/4", "waltz"), and in training
from the corpus tags (:func:`from_tags`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import timebase

if TYPE_CHECKING:
    import torch

NATURALS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic minor": (0, 2, 3, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
MUSIC_DIM = 27  # tonic 12 + scale 12 + beat 3

_TONIC = r"(?P<tonic>[A-G])(?P<accidental>#|♯|b|♭)?"
_MODE_WORDS = "|".join(sorted((re.escape(m) for m in SCALES), key=len, reverse=True))
_KEY_WITH_MODE = re.compile(rf"(?<![\w#])(?:key of\s+)?{_TONIC}\s*(?P<mode>{_MODE_WORDS}|maj|min)\b", re.IGNORECASE)
_KEY_OF = re.compile(rf"\b(?:key of|in the key of)\s+{_TONIC}(?![\w#♯♭])", re.IGNORECASE)
_NOTE = re.compile(rf"(?<![\w#/]){_TONIC}(?P<octave>-?\d)\b")
_BPM = [
    re.compile(r"(?P<bpm>\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute)\b", re.IGNORECASE),
    re.compile(r"\btempo\s*(?:of\s*)?(?P<bpm>\d{2,3}(?:\.\d+)?)\b", re.IGNORECASE),
]
_METER = re.compile(r"(?<![\d/])(?P<num>\d{1,2})/(?P<den>2|4|8|16)(?![\d/])")


@dataclass(frozen=True)
class MusicAttributes:
    """What a request says about tempo, tonality and meter; None = not said."""

    bpm: float | None = None
    tonic: int | None = None  # pitch class, 0 = C
    mode: str | None = None  # a key of SCALES; None with a tonic = a note, no scale
    quarters_per_bar: float | None = None  # 4/4 -> 4, 3/4 -> 3, 6/8 -> 3

    def merged(self, **overrides) -> MusicAttributes:
        """A copy where every override that is not None replaces the field."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def row(self, start_frame: float = 0.0) -> torch.Tensor:
        """The DiT's ``music`` row [27]; ``start_frame`` = the latent frame, counted from the
        clip's first downbeat, where this item starts (training crops)."""
        import torch  # here, not at import: the corpus builder reads SCALES without loading torch

        out = torch.zeros(MUSIC_DIM)
        if self.tonic is not None:
            out[self.tonic % 12] = 1.0
            if self.mode is not None:
                for step in SCALES[self.mode]:
                    out[12 + (self.tonic + step) % 12] = 1.0
        if self.bpm is not None:
            per_frame = self.bpm / 60.0 * timebase.SAMPLES_PER_FRAME / timebase.SAMPLE_RATE
            out[24] = per_frame
            bar = self.quarters_per_bar or 0.0
            position = start_frame * per_frame
            out[25] = math.fmod(position, 12.0 * (bar or 1.0))  # whole periods of the beat, 2 beats and bar
            out[26] = bar
        return out


def pitch_class(name: str) -> int | None:
    """``"F#"``, ``"Bb"``, ``"bb"``, ``"E♭"``, ``"B#"`` -> 0-11 (0 = C); None for anything else."""
    name = str(name).strip()
    letter, accidental = name[:1].upper(), name[1:].lower()
    if letter not in NATURALS or accidental not in ACCIDENTALS:
        return None
    return (NATURALS[letter] + ACCIDENTALS[accidental]) % 12


def _tonic(match: re.Match) -> int:
    return pitch_class(match.group("tonic") + (match.group("accidental") or ""))


def parse_key(text: str) -> tuple[int | None, str | None]:
    """(tonic, mode) named in ``text``: "F# dorian", "key of C# harmonic minor", "Ebm" is not
    read (too ambiguous in prose); a note with an octave ("D4") gives (tonic, None)."""
    match = _KEY_WITH_MODE.search(text)
    if match and match.group("tonic").isupper():
        mode = match.group("mode").lower()
        return _tonic(match), {"maj": "major", "min": "minor"}.get(mode, mode)
    match = _KEY_OF.search(text)
    if match and match.group("tonic").isupper():
        return _tonic(match), "major"
    match = _NOTE.search(text)
    if match and match.group("tonic").isupper():
        return _tonic(match), None
    return None, None


def parse_bpm(text: str) -> float | None:
    for pattern in _BPM:
        match = pattern.search(text)
        if match:
            bpm = float(match.group("bpm"))
            if timebase.MIN_BPM <= bpm <= timebase.MAX_BPM:
                return bpm
    return None


def parse_meter(text: str) -> float | None:
    """Quarter notes per bar of a time signature in ``text`` ("6/8" -> 3); "waltz" -> 3."""
    match = _METER.search(text)
    if match:
        return 4.0 * int(match.group("num")) / int(match.group("den"))
    if re.search(r"\bwaltz\b", text, re.IGNORECASE):
        return 3.0
    return None


_ONE_SHOT = re.compile(r"\b(?:one[- ]?shots?|hits?|stabs?|single|samples?)\b", re.IGNORECASE)
_REPEATING = re.compile(r"\b(?:loops?|bpm|bars?|grooves?|beats?)\b", re.IGNORECASE)


def reads_as_one_shot(prompt: str) -> bool:
    """Does the prompt ask for one sound that ends ("kick hit", "G minor chord stab", "snare
    one-shot", "single note") rather than a loop, groove or piece (which name bars, bpm, loops)?"""
    return bool(_ONE_SHOT.search(prompt)) and not _REPEATING.search(prompt)


def parse_prompt(prompt: str) -> MusicAttributes:
    """The tempo, key (or note) and meter a prompt names; fields it does not name stay None."""
    tonic, mode = parse_key(prompt)
    return MusicAttributes(bpm=parse_bpm(prompt), tonic=tonic, mode=mode, quarters_per_bar=parse_meter(prompt))


def from_tags(tags: dict) -> MusicAttributes:
    """Attributes from a corpus item's tags (``bpm``, ``key`` + ``mode``, ``note``, ``meter``)."""
    tonic = mode = None
    if tags.get("key"):
        tonic, mode = parse_key(f"{tags['key']} {tags.get('mode') or 'major'}")
    elif tags.get("note"):
        tonic, mode = parse_key(str(tags["note"]))
    quarters = None
    if tags.get("meter"):
        quarters = parse_meter(str(tags["meter"]))
    bpm = float(tags["bpm"]) if tags.get("bpm") and tags.get("kind") != "one-shot" else None
    return MusicAttributes(bpm=bpm, tonic=tonic, mode=mode, quarters_per_bar=quarters)


def music_rows(attributes: list[MusicAttributes], start_frames: list[float] | None = None) -> torch.Tensor:
    """[B, 27] rows for a batch (``start_frames`` per item, 0 when not given)."""
    import torch

    starts = start_frames or [0.0] * len(attributes)
    return torch.stack([a.row(s) for a, s in zip(attributes, starts, strict=True)])
