"""RIFF chunks that DAWs read from WAV files: ``acid`` (tempo, beats, meter, loop/one-shot,
root note) and ``LIST``/``INFO`` (title, comment, software).

soundfile writes the audio; :func:`append_chunks` then appends these chunks to that file and
fixes the RIFF size. Call it on a temporary file and rename afterwards, so a reader never sees
a half-written WAV.

The ``acid`` chunk body is 24 bytes, little-endian, laid out as libsndfile reads it
(``wav_read_acid_chunk``): ``u32 flags, i16 root note, i16 unknown (0x8000), f32 unknown (0),
u32 beats, u16 meter denominator, u16 meter numerator, f32 tempo``.
Flags: 0x01 one-shot (clear = loop), 0x02 root note set, 0x04 stretch, 0x08 disk-based.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from sa3core.errors import Sa3Error
from sa3core.timebase import Meter

ACID_ONE_SHOT = 0x01
ACID_ROOT_NOTE_SET = 0x02
ACID_STRETCH = 0x04

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def parse_root_note(value: int | str) -> int:
    """A MIDI note number (0-127) from 60, "C4", "F#3", "Bb2" (C4 = 60, as most DAWs)."""
    if isinstance(value, bool):
        raise Sa3Error(f"root note {value!r} is not a note; write a MIDI number like 60 or a name like C4, F#3")
    if isinstance(value, int):
        note = value
    else:
        match = re.fullmatch(r"\s*([A-Ga-g])([#b]?)(-?\d)\s*", str(value))
        if not match:
            raise Sa3Error(f"root note {value!r} is not a note; write a MIDI number like 60 or a name like C4, F#3")
        letter, accidental, octave = match.groups()
        note = NOTE_NAMES[letter.upper()] + {"#": 1, "b": -1, "": 0}[accidental] + (int(octave) + 1) * 12
    if not 0 <= note <= 127:
        raise Sa3Error(f"root note {value!r} is outside the MIDI range 0-127")
    return note


def acid_chunk(loop: bool, beats: int, meter: Meter, bpm: float, root_note: int | None = None) -> bytes:
    """The ``acid`` chunk body (24 bytes). ``beats`` counts quarter notes, like ``bpm``."""
    flags = (0 if loop else ACID_ONE_SHOT) | (ACID_STRETCH if loop else 0)
    if root_note is not None:
        flags |= ACID_ROOT_NOTE_SET
    return struct.pack(
        "<IhhfIHHf",
        flags,
        root_note if root_note is not None else 0,
        -0x8000,  # unknown field; ACID itself writes 0x8000
        0.0,
        int(beats),
        meter.denominator,
        meter.numerator,
        float(bpm),
    )


def info_chunk(fields: dict[str, str]) -> bytes:
    """A ``LIST`` chunk body of type ``INFO``; ``fields`` maps ids (INAM, ICMT, ISFT) to text."""
    body = bytearray(b"INFO")
    for key, text in fields.items():
        if len(key) != 4:
            raise ValueError(f"INFO id {key!r} must be four characters")
        data = text.encode("utf-8", "replace") + b"\0"
        body += key.encode("ascii") + struct.pack("<I", len(data)) + data
        if len(data) % 2:
            body += b"\0"  # chunks are word-aligned
    return bytes(body)


def append_chunks(path: str | os.PathLike, chunks: list[tuple[bytes, bytes]]) -> None:
    """Append ``(id, body)`` chunks to a RIFF/WAVE file and rewrite the RIFF size field."""
    path = Path(path)
    with open(path, "r+b") as f:
        header = f.read(12)
        if len(header) != 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise Sa3Error(f"{str(path)!r} is not a RIFF/WAVE file; acid/INFO chunks need a .wav output")
        f.seek(0, os.SEEK_END)
        if f.tell() % 2:
            f.write(b"\0")  # the last chunk was odd-sized and unpadded
        for chunk_id, body in chunks:
            f.write(chunk_id + struct.pack("<I", len(body)) + body)
            if len(body) % 2:
                f.write(b"\0")
        size = f.tell()
        if size - 8 > 0xFFFFFFFF:
            raise Sa3Error(f"{str(path)!r} is over 4 GiB, too large for a RIFF size field")
        f.seek(4)
        f.write(struct.pack("<I", size - 8))
