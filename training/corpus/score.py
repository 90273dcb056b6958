"""A small score model (parts and notes in quarter-note time) and its conversion to MIDI with mido.

The composer writes a :class:`Score`; :func:`to_midi` turns it into a standard MIDI file
(type 1, one track per part, tempo and time signature in the first track), which is what
FluidSynth renders and what a producer could open in a DAW.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mido

from sa3core.timebase import Meter

TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9  # MIDI channel 10, counted from zero


@dataclass
class Part:
    """One instrument on one MIDI channel, with its mixer settings (MIDI CC values 0-127)."""

    role: str  # chords, bass, melody, drums, arp, hit
    name: str  # the caption word for the instrument ("Rhodes", "drum kit")
    program: int  # GM program, 0-based (ignored on the drum channel)
    channel: int
    pan: int = 64  # CC10, 0 = hard left, 64 = centre, 127 = hard right
    reverb: int = 40  # CC91 send
    chorus: int = 0  # CC93 send
    volume: int = 100  # CC7


@dataclass(frozen=True)
class Note:
    start: float  # quarter notes from the start of the score
    length: float  # quarter notes
    pitch: int  # MIDI note number
    velocity: int  # 1-127
    channel: int


@dataclass
class Score:
    bpm: float
    meter: Meter
    parts: list[Part] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def add(self, part: Part, start: float, length: float, pitch: int, velocity: float) -> None:
        velocity = int(max(1, min(127, round(velocity))))
        self.notes.append(Note(float(start), float(max(length, 1e-3)), int(pitch), velocity, part.channel))

    @property
    def end_quarters(self) -> float:
        return max((n.start + n.length for n in self.notes), default=0.0)


def _ticks(quarters: float) -> int:
    return int(round(quarters * TICKS_PER_QUARTER))


def to_midi(score: Score) -> mido.MidiFile:
    """A type-1 MIDI file of ``score``: tempo/meter track, then one track per part."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_QUARTER)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(score.bpm), time=0))
    conductor.append(
        mido.MetaMessage("time_signature", numerator=score.meter.numerator, denominator=score.meter.denominator, time=0)
    )
    midi.tracks.append(conductor)
    for part in score.parts:
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=f"{part.role}: {part.name}", time=0))
        setup = [("control_change", {"control": 7, "value": part.volume})]
        setup += [("control_change", {"control": 10, "value": part.pan})]
        setup += [("control_change", {"control": 91, "value": part.reverb})]
        setup += [("control_change", {"control": 93, "value": part.chorus})]
        if part.channel != DRUM_CHANNEL:
            setup.insert(0, ("program_change", {"program": part.program}))
        for kind, values in setup:
            track.append(mido.Message(kind, channel=part.channel, time=0, **values))
        # (tick, order, message): note-offs sort before note-ons at the same tick so a
        # repeated pitch re-triggers instead of being cut by its own earlier note-off.
        events = []
        for note in score.notes:
            if note.channel != part.channel:
                continue
            on, off = _ticks(note.start), max(_ticks(note.start + note.length), _ticks(note.start) + 1)
            events.append(
                (on, 1, mido.Message("note_on", channel=part.channel, note=note.pitch, velocity=note.velocity))
            )
            events.append((off, 0, mido.Message("note_off", channel=part.channel, note=note.pitch, velocity=0)))
        events.sort(key=lambda e: (e[0], e[1], e[2].note))
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    return midi
