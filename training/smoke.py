"""A tiny real corpus for smoke runs and tests, built procedurally in seconds.

:func:`render_corpus` writes a handful of captioned WAV clips (sine/saw tones, triads, kick
and hat patterns at a tempo) and their manifest; :func:`build_latent_corpus` also encodes
them with an autoencoder. Captions name what is audible (instrument, pitch, tempo), so text
conditioning has something real to learn. Every draw is seeded: the same call makes the
same files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from sa3core import timebase
from sa3core.audio import save_audio

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def _midi_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _tone(freqs: list[float], seconds: float, wave: str, rng: np.random.Generator) -> np.ndarray:
    samples = timebase.seconds_to_samples(seconds)
    time = np.arange(samples) / timebase.SAMPLE_RATE
    out = np.zeros(samples)
    for freq in freqs:
        phase = 2 * np.pi * freq * time + rng.uniform(0, 2 * np.pi)
        out += np.sin(phase) if wave == "sine" else 2.0 * ((phase / (2 * np.pi)) % 1.0) - 1.0
    attack = np.minimum(1.0, time / 0.01)
    release = np.minimum(1.0, (seconds - time) / 0.05).clip(0, 1)
    return out / len(freqs) * attack * release * 0.4


def _drums(bpm: float, bars: int, rng: np.random.Generator) -> np.ndarray:
    seconds = timebase.bars_to_seconds(bars, bpm)
    samples = timebase.seconds_to_samples(seconds)
    out = np.zeros(samples)
    beat = timebase.beat_seconds(bpm)
    hit = np.arange(timebase.seconds_to_samples(0.25)) / timebase.SAMPLE_RATE
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-hit * 30)) * hit) * np.exp(-hit * 12)
    hat = rng.standard_normal(len(hit)) * np.exp(-hit * 60) * 0.3
    for k in range(int(bars * 4)):
        start = timebase.seconds_to_samples(k * beat)
        for sound, offset in ((kick, 0.0), (hat, beat / 2)):
            at = start + timebase.seconds_to_samples(offset)
            span = min(len(sound), samples - at)
            if span > 0:
                out[at : at + span] += sound[:span]
    return out * 0.5


def render_corpus(folder: str | os.PathLike, clips: int = 12, seed: int = 0, max_seconds: float = 6.0) -> Path:
    """Render ``clips`` captioned clips of 0.5 to ``max_seconds`` s into ``folder``; returns the manifest."""
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for number in range(clips):
        kind = ("tone", "chord", "drums")[number % 3]
        note = int(rng.integers(48, 72))
        name = f"{NOTE_NAMES[note % 12]}{note // 12 - 1}"
        wave = ("sine", "saw")[int(rng.integers(0, 2))]
        record: dict = {"licence": "CC0", "source": "sa3 procedural smoke corpus"}
        if kind == "drums":
            bpm = float(rng.choice([90, 110, 128]))
            bars = max(1, int(max_seconds // timebase.bar_seconds(bpm)))
            mono = _drums(bpm, bars, rng)
            record.update(caption=f"kick and hi-hat drum loop at {bpm:g} bpm", bpm=bpm, instrument="drums")
        else:
            seconds = float(rng.uniform(0.5, max_seconds))
            if kind == "tone":
                mono = _tone([_midi_hz(note)], seconds, wave, rng)
                record.update(caption=f"{wave} tone on {name}", instrument=f"{wave} synth")
            else:
                quality = ("major", "minor")[int(rng.integers(0, 2))]
                third = 4 if quality == "major" else 3
                mono = _tone([_midi_hz(note + k) for k in (0, third, 7)], seconds, wave, rng)
                record.update(
                    caption=f"{wave} {name} {quality} chord", key=f"{name} {quality}", instrument=f"{wave} synth"
                )
        pan = float(rng.uniform(0.3, 0.7))
        stereo = np.stack([mono * math.sqrt(1 - pan), mono * math.sqrt(pan)]).astype(np.float32)
        path = f"clips/clip_{number:03d}.wav"
        save_audio(folder / path, stereo, bit_depth="float", overwrite=True)
        record.update(path=path, seconds=round(stereo.shape[1] / timebase.SAMPLE_RATE, 6))
        records.append(record)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def tiny_autoencoder(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised tiny SAME (fixed seed): a stand-in where no trained one is given."""
    from sa3core.models.same import SAME, same_preset

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SAME(same_preset("tiny")).eval()


def build_latent_corpus(
    folder: str | os.PathLike,
    autoencoder: torch.nn.Module | None = None,
    clips: int = 12,
    seed: int = 0,
    max_seconds: float = 6.0,
) -> Path:
    """Render a corpus into ``folder``/audio and encode it into ``folder``/latents; returns the latent folder."""
    from training.data import encode_manifest

    folder = Path(folder)
    manifest = render_corpus(folder / "audio", clips, seed, max_seconds)
    model = autoencoder if autoencoder is not None else tiny_autoencoder(seed)
    name = f"random tiny SAME (seed {seed})" if autoencoder is None else type(autoencoder).__name__
    encode_manifest(manifest, folder / "latents", model, autoencoder_name=name, progress=False)
    return folder / "latents"
