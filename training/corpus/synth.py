"""Render MIDI to audio with FluidSynth (libfluidsynth through ctypes), sample-accurately.

Why the library and not the ``fluidsynth`` command: the MuseScore soundfont is an .sf3 whose
samples are Vorbis-compressed, so loading it costs about 4 s. FluidSynth keeps loaded sample
data in a process-wide cache while any synth uses it, so each worker holds one idle "anchor"
synth per soundfont and every item gets a *fresh* synth (about 0.03-0.1 s); .sf3 samples are
loaded on demand (see :class:`Synth`). A fresh synth per
item makes the audio independent of which items a worker rendered before (the reverb and
chorus keep state; ``system_reset`` does not clear it), so a seed always gives the same bits.

Events are placed at exact sample positions computed with :mod:`sa3core.timebase`; FluidSynth
applies them at its next 64-sample block boundary (at most 1.5 ms late), and the rendered
length is exactly what the caller asks for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import mido
import numpy as np

from sa3core.errors import Sa3Error
from sa3core.timebase import SAMPLE_RATE, ppq_to_seconds, seconds_to_samples

INSTALL_HINT = "run scripts/install-corpus-deps (it apt-installs fluidsynth and the soundfonts)"

_LIB = None
_CHUNK = 8192  # samples rendered per call between events


def _library() -> ctypes.CDLL:
    global _LIB
    if _LIB is not None:
        return _LIB
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise Sa3Error(f"the FluidSynth library ({name}) is not installed; {INSTALL_HINT}") from None
    ptr, cstr, i, d = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_double
    signatures = {
        "new_fluid_settings": ([], ptr),
        "delete_fluid_settings": ([ptr], None),
        "fluid_settings_setnum": ([ptr, cstr, d], i),
        "fluid_settings_setint": ([ptr, cstr, i], i),
        "new_fluid_synth": ([ptr], ptr),
        "delete_fluid_synth": ([ptr], None),
        "fluid_synth_sfload": ([ptr, cstr, i], i),
        "fluid_synth_noteon": ([ptr, i, i, i], i),
        "fluid_synth_noteoff": ([ptr, i, i], i),
        "fluid_synth_cc": ([ptr, i, i, i], i),
        "fluid_synth_program_change": ([ptr, i, i], i),
        "fluid_synth_pitch_bend": ([ptr, i, i], i),
        "fluid_synth_write_float": ([ptr, i, ptr, i, i, ptr, i, i], i),
        "fluid_set_log_function": ([i, ptr, ptr], ptr),
    }
    for fn, (args, res) in signatures.items():
        getattr(lib, fn).argtypes = args
        getattr(lib, fn).restype = res
    for level in range(5):  # FluidSynth logs to stderr by default; keep the progress bar clean
        lib.fluid_set_log_function(level, None, None)
    _LIB = lib
    return lib


class Synth:
    """One FluidSynth instance with one soundfont loaded; use once per item, then :meth:`close`."""

    def __init__(self, soundfont: Path) -> None:
        lib = _library()
        self._lib = lib
        self._settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self._settings, b"synth.sample-rate", float(SAMPLE_RATE))
        lib.fluid_settings_setint(self._settings, b"synth.threadsafe-api", 0)
        lib.fluid_settings_setint(self._settings, b"synth.polyphony", 256)
        # Compressed (.sf3) soundfonts decode only the presets an item plays: a full decode
        # costs 4-7 CPU-s per worker, on-demand about 35 ms per item. Always on for .sf3 (the
        # two modes differ by ~1e-4 in sample values, so mixing them would break bit-identity).
        dynamic = int(Path(soundfont).suffix.lower() == ".sf3")
        lib.fluid_settings_setint(self._settings, b"synth.dynamic-sample-loading", dynamic)
        self._synth = lib.new_fluid_synth(self._settings)
        if not self._synth or lib.fluid_synth_sfload(self._synth, str(soundfont).encode(), 1) < 0:
            self.close()
            raise Sa3Error(f"FluidSynth could not load the soundfont {str(soundfont)!r}; {INSTALL_HINT}")

    def close(self) -> None:
        if getattr(self, "_synth", None):
            self._lib.delete_fluid_synth(self._synth)
            self._synth = None
        if getattr(self, "_settings", None):
            self._lib.delete_fluid_settings(self._settings)
            self._settings = None

    def send(self, message: mido.Message) -> None:
        lib, synth = self._lib, self._synth
        if message.type == "note_on" and message.velocity > 0:
            lib.fluid_synth_noteon(synth, message.channel, message.note, message.velocity)
        elif message.type in ("note_on", "note_off"):
            lib.fluid_synth_noteoff(synth, message.channel, message.note)
        elif message.type == "control_change":
            lib.fluid_synth_cc(synth, message.channel, message.control, message.value)
        elif message.type == "program_change":
            lib.fluid_synth_program_change(synth, message.channel, message.program)
        elif message.type == "pitchwheel":
            lib.fluid_synth_pitch_bend(synth, message.channel, message.pitch + 8192)

    def render_into(self, left: np.ndarray, right: np.ndarray, start: int, stop: int) -> None:
        """Render samples ``[start, stop)`` into the float32 arrays ``left`` and ``right``."""
        while start < stop:
            count = min(_CHUNK, stop - start)
            self._lib.fluid_synth_write_float(
                self._synth, count, left.ctypes.data, start, 1, right.ctypes.data, start, 1
            )
            start += count


class Renderer:
    """Renders MIDI files with any of the soundfonts; one per worker process."""

    def __init__(self) -> None:
        self._anchors: dict[Path, Synth] = {}

    def render(self, midi: mido.MidiFile, soundfont: Path, bpm: float, samples: int) -> np.ndarray:
        """Render ``midi`` (constant tempo ``bpm``) to float32 [2, samples] at 44.1 kHz.

        Audio past ``samples`` is cut; callers ask for the tail they want to keep.
        """
        soundfont = Path(soundfont)
        if soundfont not in self._anchors:
            self._anchors[soundfont] = Synth(soundfont)  # keeps the sample cache warm
        synth = Synth(soundfont)
        left = np.zeros(samples, np.float32)
        right = np.zeros(samples, np.float32)
        try:
            now, ticks = 0, 0
            for message in mido.merge_tracks(midi.tracks):
                ticks += message.time
                if message.is_meta:
                    continue
                at = min(samples, seconds_to_samples(ppq_to_seconds(ticks / midi.ticks_per_beat, bpm)))
                synth.render_into(left, right, now, at)
                now = at
                synth.send(message)
            synth.render_into(left, right, now, samples)
        finally:
            synth.close()
        return np.stack([left, right])

    def close(self) -> None:
        for synth in self._anchors.values():
            synth.close()
        self._anchors.clear()
