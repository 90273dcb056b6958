"""Music facts the composer draws on: keys, modes, chords, General MIDI programs, drum grooves.

Pitches are MIDI note numbers (60 = middle C); pitch classes are 0-11 with 0 = C.
Everything here is plain data or small pure functions so captions and tags can name exactly
what the composer used.
"""

from __future__ import annotations

from dataclasses import dataclass

from sa3core.musical import SCALES

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Scale steps in semitones above the tonic (seven-note modes, so chords stack in thirds).
# The modes the composer writes in, in this order (seeded draws index it), from sa3core's table.
MODES: dict[str, tuple[int, ...]] = {
    name: SCALES[name] for name in ("major", "minor", "dorian", "mixolydian", "lydian", "phrygian", "harmonic minor")
}

# Progressions as 0-based scale degrees. Each starts on the tonic and gives it at least half
# of the time, so the labelled key is the one a listener (and the chroma test) hears; a loop
# that drifts through many chords would make "in D minor" a weak label.
PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 3, 0, 4),
    (0, 5, 0, 4),
    (0, 0, 3, 4),
    (0, 4, 0, 3),
    (0, 3, 4, 0),
    (0, 0, 5, 3),
    (0, 6, 0, 3),
    (0, 1, 0, 4),
    (0, 5, 3, 0),
    (0, 0, 4, 4),
)


def scale_pitch_classes(root: int, mode: str) -> list[int]:
    return [(root + step) % 12 for step in MODES[mode]]


def chord_pitch_classes(root: int, mode: str, degree: int, size: int = 3) -> list[int]:
    """Diatonic chord on ``degree`` of the mode: stacked thirds, ``size`` notes (3 = triad)."""
    scale = scale_pitch_classes(root, mode)
    return [scale[(degree + 2 * k) % 7] for k in range(size)]


def chord_name(pitch_classes: list[int]) -> str:
    """Name a triad (plus optional seventh) like ``Dm``, ``Bb``, ``F#dim``, ``Gmaj7``."""
    root = pitch_classes[0]
    third = (pitch_classes[1] - root) % 12
    fifth = (pitch_classes[2] - root) % 12
    quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}.get((third, fifth), "")
    if len(pitch_classes) > 3:
        seventh = (pitch_classes[3] - root) % 12
        if quality == "" and seventh == 11:
            quality = "maj7"
        elif quality == "dim" and seventh == 10:
            quality = "m7b5"
        else:
            quality += "7"
    return NOTE_NAMES[root] + quality


def voice(pitch_classes: list[int], low: int, high: int) -> list[int]:
    """Close voicing of pitch classes from the lowest note at or above ``low`` (within ``high``)."""
    notes = []
    pitch = low + (pitch_classes[0] - low) % 12
    for pc in pitch_classes:
        while pitch % 12 != pc:
            pitch += 1
        notes.append(pitch)
        pitch += 1
    while notes[-1] > high:
        notes = [n - 12 for n in notes]
    return notes


@dataclass(frozen=True)
class Instrument:
    """A General MIDI program and the words captions use for it."""

    program: int  # 0-based GM program number
    family: str  # piano, keys, organ, strings, pad, guitar, bass, brass, woodwind, lead, mallet
    names: tuple[str, ...]  # synonyms, first is the plain name
    low: int  # comfortable range (MIDI notes)
    high: int


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(0, "piano", ("grand piano", "acoustic piano", "piano"), 36, 96),
    Instrument(1, "piano", ("bright piano", "bright upright piano"), 36, 96),
    Instrument(4, "keys", ("Rhodes", "electric piano", "Rhodes electric piano"), 40, 88),
    Instrument(5, "keys", ("FM electric piano", "DX-style electric piano"), 40, 88),
    Instrument(16, "organ", ("drawbar organ", "Hammond-style organ"), 36, 90),
    Instrument(17, "organ", ("percussive organ", "combo organ"), 36, 90),
    Instrument(19, "organ", ("church organ", "pipe organ"), 36, 90),
    Instrument(48, "strings", ("string ensemble", "strings", "orchestral strings"), 40, 88),
    Instrument(49, "strings", ("slow strings", "soft string section"), 40, 88),
    Instrument(50, "strings", ("synth strings", "analog string machine"), 40, 88),
    Instrument(88, "pad", ("new age pad", "shimmering pad"), 44, 84),
    Instrument(89, "pad", ("warm pad", "soft synth pad"), 44, 84),
    Instrument(90, "pad", ("polysynth pad", "poly synth"), 44, 84),
    Instrument(91, "pad", ("choir pad", "airy vocal pad"), 48, 84),
    Instrument(24, "guitar", ("nylon guitar", "classical guitar"), 40, 84),
    Instrument(25, "guitar", ("steel-string acoustic guitar", "acoustic guitar"), 40, 84),
    Instrument(26, "guitar", ("jazz guitar", "hollow-body guitar"), 40, 84),
    Instrument(27, "guitar", ("clean electric guitar", "clean guitar"), 40, 84),
    Instrument(46, "guitar", ("harp", "concert harp"), 36, 96),
    Instrument(32, "bass", ("upright bass", "acoustic bass"), 28, 55),
    Instrument(33, "bass", ("fingered bass", "electric bass"), 28, 55),
    Instrument(34, "bass", ("picked bass", "picked electric bass"), 28, 55),
    Instrument(38, "bass", ("synth bass", "analog synth bass"), 28, 55),
    Instrument(39, "bass", ("rubbery synth bass", "funky synth bass"), 28, 55),
    Instrument(56, "brass", ("trumpet",), 55, 82),
    Instrument(57, "brass", ("trombone",), 40, 72),
    Instrument(61, "brass", ("brass section", "horn section"), 48, 80),
    Instrument(62, "brass", ("synth brass", "analog brass"), 48, 80),
    Instrument(73, "woodwind", ("flute",), 60, 93),
    Instrument(71, "woodwind", ("clarinet",), 50, 84),
    Instrument(68, "woodwind", ("oboe",), 58, 88),
    Instrument(65, "woodwind", ("alto sax", "alto saxophone"), 49, 80),
    Instrument(66, "woodwind", ("tenor sax", "tenor saxophone"), 44, 75),
    Instrument(80, "lead", ("square lead", "chiptune square lead"), 55, 90),
    Instrument(81, "lead", ("saw lead", "sawtooth lead synth"), 55, 90),
    Instrument(87, "lead", ("bass and lead synth", "fat mono lead"), 48, 84),
    Instrument(11, "mallet", ("vibraphone", "vibes"), 53, 89),
    Instrument(12, "mallet", ("marimba",), 45, 96),
    Instrument(13, "mallet", ("xylophone",), 60, 96),
    Instrument(8, "mallet", ("celesta",), 60, 96),
    Instrument(9, "mallet", ("glockenspiel", "glock"), 72, 100),
    Instrument(14, "mallet", ("tubular bells", "chimes"), 60, 77),
)

CHORD_FAMILIES = ("piano", "keys", "organ", "strings", "pad", "guitar")
MELODY_FAMILIES = ("piano", "keys", "brass", "woodwind", "lead", "mallet", "guitar", "strings")


def instruments_of(families: tuple[str, ...] | str) -> list[Instrument]:
    families = (families,) if isinstance(families, str) else families
    return [inst for inst in INSTRUMENTS if inst.family in families]


# General MIDI percussion keys (channel 10) and what captions call them.
DRUM_KEYS = {
    "kick": 36,
    "snare": 38,
    "rim": 37,
    "clap": 39,
    "hat": 42,
    "pedal": 44,
    "open": 46,
    "crash": 49,
    "ride": 51,
    "tom_lo": 45,
    "tom_mid": 47,
    "tom_hi": 50,
    "tamb": 54,
    "cowbell": 56,
    "shaker": 70,
}
DRUM_HIT_NAMES = {
    "kick": ("kick drum", "kick", "bass drum"),
    "snare": ("snare", "snare drum"),
    "rim": ("rimshot", "side stick"),
    "clap": ("hand clap", "clap"),
    "hat": ("closed hi-hat", "closed hat"),
    "open": ("open hi-hat", "open hat"),
    "crash": ("crash cymbal", "crash"),
    "ride": ("ride cymbal", "ride bell"),
    "tom_lo": ("low tom", "floor tom"),
    "tom_hi": ("high tom", "rack tom"),
    "cowbell": ("cowbell",),
    "tamb": ("tambourine",),
}


@dataclass(frozen=True)
class Groove:
    """A drum pattern on a grid of ``steps`` per bar; each row is 'x' (hit), 'o' (soft) or '.'."""

    name: str  # the genre word captions use
    meter: str
    bpm_range: tuple[int, int]
    rows: dict[str, str]
    swing: float = 0.0  # fraction of a step that off-beat steps are delayed
    moods: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        return len(next(iter(self.rows.values())))


GROOVES: tuple[Groove, ...] = (
    Groove(
        "rock",
        "4/4",
        (90, 150),
        {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
        moods=("driving", "punchy", "energetic"),
    ),
    Groove(
        "house",
        "4/4",
        (118, 128),
        {"kick": "x...x...x...x...", "clap": "....x.......x...", "open": "..x...x...x...x.", "hat": "xoxoxoxoxoxoxoxo"},
        moods=("four-on-the-floor", "groovy", "club-ready"),
    ),
    Groove(
        "hip-hop",
        "4/4",
        (80, 98),
        {"kick": "x......x..x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.xo"},
        swing=0.3,
        moods=("laid-back", "boom-bap", "head-nodding"),
    ),
    Groove(
        "breakbeat",
        "4/4",
        (120, 175),
        {
            "kick": "x.........x.....",
            "snare": "....x..o.o..x..o",
            "hat": "x.x.x.x.x.x.x.x.",
            "open": "..............x.",
        },
        moods=("broken", "energetic", "choppy"),
    ),
    Groove(
        "funk",
        "4/4",
        (95, 115),
        {"kick": "x..x..x...x..x..", "snare": "....x..o.o..x...", "hat": "xxxxxxxxxxxxxxxx"},
        swing=0.15,
        moods=("funky", "tight", "syncopated"),
    ),
    Groove(
        "trap",
        "4/4",
        (130, 160),
        {"kick": "x......x..x.....", "snare": "........x.......", "hat": "xoxoxoxoxxxoxoxo"},
        moods=("half-time", "dark", "hard-hitting"),
    ),
    Groove(
        "disco",
        "4/4",
        (110, 124),
        {
            "kick": "x...x...x...x...",
            "snare": "....x.......x...",
            "open": "..x...x...x...x.",
            "hat": "x...x...x...x...",
        },
        moods=("upbeat", "groovy", "danceable"),
    ),
    Groove(
        "reggae",
        "4/4",
        (66, 90),
        {"kick": "........x.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
        swing=0.2,
        moods=("one-drop", "relaxed", "bouncy"),
    ),
    Groove(
        "waltz",
        "3/4",
        (80, 180),
        {"kick": "x...........", "snare": "....o...o...", "hat": "x...x...x..."},
        moods=("lilting", "graceful", "swaying"),
    ),
    Groove(
        "jazz waltz",
        "3/4",
        (90, 160),
        {"ride": "x...x.xox...", "pedal": "....x.......", "kick": "x...........", "rim": "........o..."},
        swing=0.3,
        moods=("swinging", "brushy", "light"),
    ),
    Groove(
        "6/8 shuffle",
        "6/8",
        (60, 120),
        {"kick": "x.....x.....", "snare": "......x.....", "hat": "x.o.o.x.o.o."},
        moods=("rolling", "swaying", "bluesy"),
    ),
    Groove(
        "6/8 ballad",
        "6/8",
        (60, 100),
        {"kick": "x...........", "snare": "......x.....", "ride": "x.x.x.x.x.x."},
        moods=("gentle", "flowing", "soulful"),
    ),
)

METER_STEPS = {"4/4": 16, "3/4": 12, "6/8": 12}  # sixteenth-note grid per bar


def grooves_for(meter: str) -> list[Groove]:
    return [g for g in GROOVES if g.meter == meter]
