"""Sound effects: procedurally designed one-shots and textures, and hedgewars-data recordings.

Procedural designs start from numpy oscillators and noise and are shaped with pedalboard
effects (filters, distortion, compressor, delay, chorus, reverb). Every choice comes from the
item's seeded ``Generator``; pedalboard's effects are deterministic, so a seed gives the same
audio. Audio is float32 [2, samples] at 44.1 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pedalboard as pb
import soundfile as sf

from sa3core.audio import to_model_audio
from sa3core.timebase import SAMPLE_RATE, seconds_to_samples

from .theory import NOTE_NAMES


@dataclass
class SfxItem:
    audio: np.ndarray  # float32 [2, samples]
    tags: dict = field(default_factory=dict)


def _time(seconds: float) -> np.ndarray:
    return np.arange(seconds_to_samples(seconds), dtype=np.float64) / SAMPLE_RATE


def _sweep(rng: np.random.Generator, noise: np.ndarray, cutoffs: np.ndarray, highpass: bool = False) -> np.ndarray:
    """Noise [2, n] through a filter whose cutoff follows ``cutoffs`` (one value per 512 samples)."""
    block = 512
    plugin = pb.HighpassFilter() if highpass else pb.LowpassFilter()
    out = np.zeros_like(noise)
    for k, start in enumerate(range(0, noise.shape[1], block)):
        plugin.cutoff_frequency_hz = float(cutoffs[min(k, len(cutoffs) - 1)])
        out[:, start : start + block] = plugin.process(noise[:, start : start + block], SAMPLE_RATE, reset=False)
    return out


def _stereo(mono: np.ndarray, pan: float = 0.0) -> np.ndarray:
    """Equal-power pan of a mono signal; ``pan`` in [-1, 1] (scalar or per sample)."""
    angle = (np.asarray(pan) + 1.0) * np.pi / 4.0
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)]).astype(np.float32)


def _impact(rng, max_seconds):
    t = _time(min(rng.uniform(0.8, 3.0), max_seconds))
    drop = rng.uniform(40, 90) * np.exp(-t * rng.uniform(8, 20)) + rng.uniform(35, 55)
    body = np.sin(2 * np.pi * np.cumsum(drop) / SAMPLE_RATE) * np.exp(-t * rng.uniform(3, 8))
    crack = rng.standard_normal(len(t)) * np.exp(-t * rng.uniform(30, 80)) * rng.uniform(0.3, 0.8)
    fx = [pb.Distortion(drive_db=float(rng.uniform(4, 20))), pb.Reverb(room_size=float(rng.uniform(0.5, 0.95)))]
    return _stereo(body + crack), fx, ("impact", "hit", "boom"), ("cinematic", "heavy", "punchy")


def _riser(rng, max_seconds, falling=False):
    seconds = min(rng.uniform(2.0, 8.0) if not falling else rng.uniform(1.0, 5.0), max_seconds)
    t = _time(seconds)
    shape = (t / seconds) ** rng.uniform(1.0, 2.5)
    shape = 1 - shape if falling else shape
    f0, f1 = rng.uniform(80, 200), rng.uniform(800, 3000)
    freq = f0 + (f1 - f0) * shape
    tone = np.sign(np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE)) * 0.2 if rng.random() < 0.5 else None
    noise = rng.standard_normal((2, len(t))).astype(np.float32) * 0.5
    cutoffs = 200 + 12000 * shape[::512]
    audio = _sweep(rng, noise, cutoffs) * (0.2 + 0.8 * shape).astype(np.float32)
    if tone is not None:
        audio += _stereo(tone * (0.3 + 0.7 * shape))
    fx = [pb.Phaser(rate_hz=float(rng.uniform(0.2, 2))), pb.Reverb(room_size=0.8, wet_level=0.3)]
    if falling:
        return audio, fx, ("downlifter", "falling sweep", "drop-down"), ("descending", "tension-release")
    return audio, fx, ("riser", "uplifter", "build-up sweep"), ("tense", "building", "EDM-style")


def _whoosh(rng, max_seconds):
    seconds = min(rng.uniform(0.5, 2.0), max_seconds)
    t = _time(seconds)
    bell = np.sin(np.pi * t / seconds) ** rng.uniform(1.5, 4)
    noise = rng.standard_normal((2, len(t))).astype(np.float32)
    cutoffs = 300 + 5000 * bell[::512]
    audio = _sweep(rng, noise, cutoffs) * bell.astype(np.float32)
    direction = rng.choice([-1.0, 1.0])
    pan = direction * (2 * t / seconds - 1)
    audio = np.stack([audio[0] * np.cos((pan + 1) * np.pi / 4), audio[1] * np.sin((pan + 1) * np.pi / 4)])
    side = "left to right" if direction > 0 else "right to left"
    return (
        audio.astype(np.float32),
        [pb.Reverb(room_size=0.4)],
        ("whoosh", "swoosh", "fly-by"),
        (f"panning {side}", "airy"),
    )


def _ui(rng, max_seconds):
    kind = rng.choice(["blip", "click", "chime"])
    t = _time(rng.uniform(0.05, 0.3))
    if kind == "click":
        sound = rng.standard_normal(len(t)) * np.exp(-t * 400)
        fx = [pb.HighpassFilter(cutoff_frequency_hz=float(rng.uniform(1000, 4000)))]
        return _stereo(sound), fx, ("UI click", "interface click", "tick"), ("crisp", "tiny")
    f = rng.uniform(500, 2000)
    second = f * rng.choice([1.25, 1.5, 2.0])
    half = len(t) // 2
    freq = np.where(np.arange(len(t)) < half, f, second) if kind == "chime" else np.full(len(t), f)
    sound = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.exp(-t * rng.uniform(10, 40))
    fx = [pb.Delay(delay_seconds=float(rng.uniform(0.05, 0.15)), feedback=0.3, mix=0.25)]
    names = ("UI blip", "notification blip", "beep") if kind == "blip" else ("UI chime", "confirmation chime", "alert")
    return _stereo(sound * 0.6), fx, names, ("clean", "digital", "friendly")


def _noise_bed(rng, max_seconds):
    t = _time(min(rng.uniform(3.0, 12.0), max_seconds))
    colour = rng.choice(["white", "pink", "brown"])
    noise = rng.standard_normal((2, len(t)))
    if colour != "white":
        spectrum = np.fft.rfft(noise, axis=1)
        freqs = np.maximum(np.fft.rfftfreq(len(t), 1 / SAMPLE_RATE), 20.0)
        spectrum /= np.sqrt(freqs) if colour == "pink" else freqs
        noise = np.fft.irfft(spectrum, n=len(t), axis=1)
        noise /= np.abs(noise).max() + 1e-9
    lfo = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t)
    fx = [pb.LowpassFilter(cutoff_frequency_hz=float(rng.uniform(1500, 12000))), pb.Compressor(-20, 3)]
    names = (f"{colour} noise bed", f"{colour} noise texture", f"{colour} noise ambience")
    return (noise * lfo).astype(np.float32), fx, names, ("steady", "ambient", "textural")


def _drone(rng, max_seconds):
    t = _time(min(rng.uniform(4.0, 20.0), max_seconds))
    root = int(rng.integers(12))
    base = 440.0 * 2 ** ((root + 36 - 69) / 12)  # an octave below the bass clef's C-B
    sound = np.zeros(len(t))
    for ratio in (1.0, 1.5, 2.0, 2.0 * 1.005, 1.0 * 0.997):
        sound += np.sin(2 * np.pi * base * ratio * t + rng.uniform(0, 6.28))
    sound *= np.minimum(1, t / 1.5) * np.minimum(1, (t[-1] - t) / 1.5)
    fx = [pb.LowpassFilter(cutoff_frequency_hz=float(rng.uniform(400, 3000))), pb.Chorus(), pb.Reverb(room_size=0.9)]
    names = ("drone", "sustained drone", "dark drone pad")
    return _stereo(sound * 0.2), fx, names, ("dark", "hypnotic", "evolving", f"rooted on {NOTE_NAMES[root]}")


DESIGNS = {
    "impact": _impact,
    "riser": _riser,
    "downlifter": lambda rng, s: _riser(rng, s, falling=True),
    "whoosh": _whoosh,
    "ui": _ui,
    "noise bed": _noise_bed,
    "drone": _drone,
}
TEXTURES = ("noise bed", "drone")


def make_procedural(rng: np.random.Generator, max_seconds: float) -> SfxItem:
    design = str(rng.choice(list(DESIGNS)))
    audio, fx, names, moods = DESIGNS[design](rng, max_seconds)
    if rng.random() < 0.4:
        fx.insert(0, pb.Compressor(threshold_db=float(rng.uniform(-24, -10)), ratio=float(rng.uniform(2, 6))))
    audio = pb.Pedalboard(fx)(np.ascontiguousarray(audio, dtype=np.float32), SAMPLE_RATE)
    tags = {
        "kind": "sfx",
        "flavour": "texture" if design in TEXTURES else "one-shot",
        "sfx_type": design,
        "instruments": [names[0]],
        "_synonyms": [list(names)],
        "moods": [str(rng.choice(moods[:2]))] + [m for m in moods[2:] if m.startswith(("rooted", "panning"))],
        "effects": [type(p).__name__.lower() for p in fx],
    }
    return SfxItem(audio.astype(np.float32), tags)


# What captions call each hedgewars clip; clips not listed are named from their file name.
HEDGEWARS_NAMES = {
    "airmine_impact": "mine explosion",
    "baseballbat": "baseball bat hit",
    "bee": "buzzing bee",
    "beewater": "bee splashing into water",
    "blowtorch": "blowtorch hiss",
    "bump": "soft bump",
    "cake2": "cartoon cake fuse",
    "CollectCrate": "item pickup jingle",
    "denied": "denied buzzer",
    "drillgun": "drill",
    "explosion": "explosion",
    "firepunch_hit": "fiery punch hit",
    "flamethrower": "flamethrower roar",
    "frozen_hog_impact": "ice impact",
    "graveimpact": "heavy thud",
    "grenadeimpact": "grenade bounce",
    "gun": "gunshot",
    "hammer": "hammer strike",
    "ice_beam": "ice beam zap",
    "jetpackboost": "jetpack thrust",
    "knife_impact": "knife thunk",
    "lasersight": "laser sight hum",
    "melonimpact": "squishy impact",
    "minetick": "mine ticking",
    "minigun": "minigun burst",
    "molotov": "glass smash and fire",
    "mortar": "mortar launch",
    "parachute": "parachute opening",
    "pickhammer": "pneumatic drill",
    "plane": "propeller plane flyby",
    "portalopen": "portal opening",
    "portalshot": "sci-fi portal shot",
    "ropeshot": "grappling rope shot",
    "shotgunfire": "shotgun blast",
    "shotgunreload": "shotgun reload",
    "shutterclick": "camera shutter click",
    "sniperreload": "rifle bolt reload",
    "splash": "water splash",
    "steam": "steam hiss",
    "steps": "footsteps",
    "TARDIS": "sci-fi materialise whoosh",
    "ufo": "UFO hum",
    "warp": "warp zap",
    "whipcrack": "whip crack",
    "Whistle": "whistle",
}


def hedgewars_name(path: Path) -> str:
    stem = path.stem
    if stem in HEDGEWARS_NAMES:
        return HEDGEWARS_NAMES[stem]
    if len(stem) == 2 and stem[0].isdigit():
        return f"toy piano note {stem[1]}"
    words = "".join(" " + c.lower() if c.isupper() else c for c in stem).replace("_", " ")
    return " ".join(w for w in words.split() if not w.isdigit()).strip() or "sound effect"


def make_hedgewars(rng: np.random.Generator, path: Path, max_seconds: float) -> SfxItem:
    """A hedgewars recording at 44.1 kHz stereo with light variation: gain and trims."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = to_model_audio(data.T, rate, what=f"hedgewars clip {path.name}")
    loud = np.flatnonzero(np.abs(audio).max(axis=0) > 10 ** (-50 / 20))
    if loud.size:  # drop leading and trailing near-silence, keep a few ms before the onset
        audio = audio[:, max(0, loud[0] - int(rng.integers(0, 200))) : loud[-1] + 1]
    limit = seconds_to_samples(max_seconds * rng.uniform(0.7, 1.0))
    if audio.shape[1] > limit:
        audio = audio[:, :limit]
    if rng.random() < 0.3:
        audio = audio[::-1].copy()  # swap left and right
    name = hedgewars_name(path)
    tags = {
        "kind": "sfx",
        "flavour": "recorded",
        "sfx_type": "recorded",
        "instruments": [name],
        "_synonyms": [[name]],
        "moods": [str(rng.choice(["game-style", "cartoonish", "retro game", "arcade"]))],
        "file": path.name,
    }
    return SfxItem(np.ascontiguousarray(audio, dtype=np.float32), tags)
