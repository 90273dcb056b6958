"""Build the corpus: plan items from the seed, render them in parallel, write the manifest last.

Item ``i`` depends only on ``(seed, i, max_seconds)``, so a corpus of N items is the first N
of any larger one, workers can render in any order, and a build can resume. Each item writes
its FLAC and then a JSON sidecar (both atomically); an item whose sidecar exists is skipped
unless ``overwrite``. ``manifest.jsonl`` is assembled from the sidecars in index order at the
end, so it only ever lists complete items.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sa3core.audio import save_audio
from sa3core.errors import Sa3Error
from sa3core.files import publish
from sa3core.timebase import MAX_SECONDS, SAMPLE_RATE, samples_to_seconds, seconds_to_samples

from . import captions, compose, sfx, sources
from .score import to_midi
from .synth import Renderer

FORMAT_VERSION = 1
# The mix of kinds, repeated every 20 items; its first 12 hold one of each kind so that even a
# tiny test corpus covers them all.
KIND_CYCLE = (
    "chord loop", "drum loop", "note one-shot", "sfx", "ensemble loop", "piece", "recorded sfx",
    "melody loop", "drum one-shot", "chord loop", "bass loop", "chord one-shot", "drum loop",
    "ensemble loop", "sfx", "melody loop", "chord loop", "ensemble loop", "drum loop", "piece",
)  # fmt: skip
LOOP_FLAVOURS = {"chord": "chords", "drum": "drums", "bass": "bass", "melody": "melody", "ensemble": "ensemble"}
SPLITS = (("valid", 0.05), ("test", 0.05))  # the rest is train


@dataclass(frozen=True)
class CorpusConfig:
    """What ``sa3 data build`` makes. Exactly one of ``hours`` and ``items`` sets the size."""

    out_dir: str
    seed: int = 0
    hours: float | None = None
    items: int | None = None
    max_seconds: float = 60.0
    jobs: int = 2
    overwrite: bool = False
    bit_depth: str = "16"
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.hours is None) == (self.items is None):
            raise Sa3Error("give the corpus size as either --hours H or --items N, not both or neither")
        if self.hours is not None and not 0 < self.hours <= 1000:
            raise Sa3Error(f"--hours {self.hours} is out of range; use more than 0 and at most 1000")
        if self.items is not None and self.items < 1:
            raise Sa3Error(f"--items {self.items} must be at least 1")
        if not 4.0 <= self.max_seconds <= MAX_SECONDS:
            raise Sa3Error(f"--max-seconds {self.max_seconds:g} is out of range; use 4 to {MAX_SECONDS:g}")
        if self.jobs < 1:
            raise Sa3Error(f"--jobs {self.jobs} must be at least 1")
        if self.bit_depth not in ("16", "24"):
            raise Sa3Error(f"bit depth {self.bit_depth!r} is not 16 or 24")


@dataclass(frozen=True)
class BuildReport:
    items: int
    seconds: float
    rendered: int  # items rendered in this run (the rest were already there)
    wall_seconds: float
    bytes_on_disk: int


def split_of(group: str) -> str:
    """Held-out split for a group of items; stable, and the same for every item of the group."""
    fraction = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 2**32
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if fraction < edge:
            return name
    return "train"


def ring_out(audio: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Cut ``audio`` where it has decayed 60 dB below its peak, fade, and add a silence tail.

    The result is at most ``max_samples`` long; a sound longer than that gets a 100 ms fade.
    """
    envelope = np.abs(audio).max(axis=0)
    peak = float(envelope.max())
    audible = np.flatnonzero(envelope > peak * 1e-3) if peak > 0 else np.array([0])
    tail = seconds_to_samples(rng.uniform(0.05, 0.35))
    natural = int(audible[-1]) + 1
    end = max(1, min(natural, max_samples - tail))
    fade = min(end, seconds_to_samples(0.02 if end == natural else 0.1))
    audio = audio[:, :end].copy()
    audio[:, end - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return np.concatenate([audio, np.zeros((audio.shape[0], tail), np.float32)], axis=1)


def _wrap_loop(audio: np.ndarray, samples: int) -> np.ndarray:
    """Fold the ring-out past the loop end back onto its start: the loop plays seamlessly."""
    body = audio[:, :samples].copy()
    for start in range(samples, audio.shape[1], samples):
        ring = audio[:, start : start + samples]
        body[:, : ring.shape[1]] += ring
    return body


def _normalise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak-normalise to a random level between -6 and -1 dBFS (level variation)."""
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise Sa3Error("an item rendered as pure silence; this is a corpus builder bug, please report it")
    return (audio * (10 ** (rng.uniform(-6.0, -1.0) / 20) / peak)).astype(np.float32)


_RENDERER: Renderer | None = None


def make_item(seed: int, index: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Audio float32 [2, samples] and the manifest fields (without path) of item ``index``."""
    global _RENDERER
    rng = np.random.default_rng([seed, index])
    slot = KIND_CYCLE[index % len(KIND_CYCLE)]
    group = f"{seed}:{index}"
    if slot == "sfx":
        item = sfx.make_procedural(rng, max_seconds)
        audio, tags, origin = item.audio, item.tags, sources.PROCEDURAL
        audio = ring_out(audio, seconds_to_samples(max_seconds), rng)
    elif slot == "recorded sfx":
        clips = sources.hedgewars_sounds()
        path = clips[int(rng.integers(len(clips)))]
        item = sfx.make_hedgewars(rng, path, max_seconds)
        audio, tags, origin = item.audio, item.tags, sources.HEDGEWARS
        audio = ring_out(audio, seconds_to_samples(max_seconds), rng)
        group = f"hedgewars:{path.stem}"  # variations of one clip never straddle splits
    else:
        flavour, _, shape = slot.partition(" ")
        if shape == "loop":
            music = compose.make_loop(rng, max_seconds, LOOP_FLAVOURS[flavour])
        elif shape == "one-shot":
            music = compose.make_one_shot(rng, max_seconds, flavour)
        else:
            music = compose.make_piece(rng, max_seconds)
        path, origin = sources.SOUNDFONTS[music.soundfont]
        if _RENDERER is None:
            _RENDERER = Renderer()
        ring = seconds_to_samples(3.0) if music.loop else 0
        audio = _RENDERER.render(to_midi(music.score), path, music.score.bpm, music.render_samples + ring)
        if music.loop:
            audio = _wrap_loop(audio, music.render_samples)
        else:
            audio = ring_out(audio, min(music.render_samples, seconds_to_samples(max_seconds)), rng)
        tags = music.tags | {"soundfont": music.soundfont}
    audio = _normalise(audio, rng)
    tags["seconds"] = round(samples_to_seconds(audio.shape[1]), 3)
    text = captions.caption(tags, np.random.default_rng([seed, index, 1]))
    tags = {k: v for k, v in tags.items() if not k.startswith("_") and k != "seconds"}
    fields = {
        "caption": text,
        "seconds": round(samples_to_seconds(audio.shape[1]), 6),
        "samples": int(audio.shape[1]),
        "licence": origin.licence,
        "source": origin.package,
        "tags": tags,
        "split": split_of(group),
    }
    return audio, fields


def _relative_path(index: int) -> str:
    slot = KIND_CYCLE[index % len(KIND_CYCLE)]
    kind = {"sfx": "sfx", "recorded sfx": "sfx", "piece": "piece"}.get(slot, slot.split(" ")[-1])
    return f"audio/{kind}/{index:06d}.flac"


def _write_json_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".sa3-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_one(out_dir: str, seed: int, index: int, max_seconds: float, overwrite: bool, bit_depth: str):
    """Render item ``index`` into ``out_dir`` unless it is there; returns (entry, rendered)."""
    relative = _relative_path(index)
    audio_path = Path(out_dir) / relative
    sidecar = audio_path.with_suffix(".json")
    if sidecar.exists() and audio_path.exists() and not overwrite:
        return json.loads(sidecar.read_text(encoding="utf-8")), False
    audio, fields = make_item(seed, index, max_seconds)
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(audio_path, audio, SAMPLE_RATE, bit_depth=bit_depth, overwrite=True)
    entry = {"path": relative} | fields
    _write_json_atomic(sidecar, json.dumps(entry, ensure_ascii=False))
    return entry, True


def _prepare(config: CorpusConfig) -> Path:
    out = Path(config.out_dir)
    settings = {"format": FORMAT_VERSION, "seed": config.seed, "max_seconds": config.max_seconds}
    settings["bit_depth"] = config.bit_depth
    marker = out / "corpus.json"
    if out.exists() and not out.is_dir():
        raise Sa3Error(f"output {str(out)!r} is a file; give a folder for the corpus")
    if out.exists() and any(out.iterdir()):
        if not marker.exists() and not config.overwrite:
            raise Sa3Error(
                f"output folder {str(out)!r} is not empty and holds no sa3 corpus; choose an empty folder or pass --overwrite"
            )
        if marker.exists():
            old = json.loads(marker.read_text(encoding="utf-8"))
            if old != settings and not config.overwrite:
                raise Sa3Error(
                    f"{str(out)!r} holds a corpus built with other settings ({old}); pass --overwrite to rebuild it "
                    "or choose another folder"
                )
            if config.overwrite and (out / "audio").is_dir():
                shutil.rmtree(out / "audio")  # ours: marked by corpus.json
    out.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(marker, json.dumps(settings, indent=2) + "\n")
    return out


def _write_licences(out: Path) -> None:
    records = sources.licence_records()
    _write_json_atomic(out / "licences.json", json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    lines = ["# Licences of the material in this corpus", ""]
    lines += ["Every manifest line names its `licence` and `source` package; the packages are:", ""]
    for r in records:
        version = f" {r['version']}" if r["version"] else ""
        lines += [f"## {r['package']}{version}", "", f"- licence: {r['licence']}", f"- copyright: {r['copyright']}"]
        lines += [f"- files used: {r['files']}"] + ([f"- note: {r['note']}"] if r["note"] else []) + [""]
    lines += ["MIDI is composed by sa3 from the seed; FluidSynth (LGPL-2.1+) renders it and adds no rights."]
    _write_json_atomic(out / "licences.md", "\n".join(lines) + "\n")


def build_corpus(config: CorpusConfig) -> BuildReport:
    """Build (or resume) the corpus described by ``config``; returns counts and timings.

    Raises Sa3Error when FluidSynth or a source package is missing, or the folder holds
    something else. Item order, audio and manifest depend only on the seed and settings.
    """
    sources.check_installed()
    out = _prepare(config)
    _write_licences(out)
    started = time.perf_counter()
    target_seconds = config.hours * 3600 if config.hours is not None else None
    limit = config.items if config.items is not None else 10**9
    entries: dict[int, dict] = {}
    rendered: set[int] = set()
    args = (str(out), config.seed)
    opts = (config.max_seconds, config.overwrite, config.bit_depth)
    bar = tqdm(
        total=config.items or round(target_seconds), unit="item" if config.items else "s", disable=not config.progress
    )
    bar.set_description("building corpus")

    prefix = {"items": 0, "seconds": 0.0}  # the contiguous finished prefix: only it counts for --hours

    def done_seconds() -> float:
        while prefix["items"] in entries:
            prefix["seconds"] += entries[prefix["items"]]["seconds"]
            prefix["items"] += 1
        return prefix["seconds"]

    def enough(next_index: int) -> bool:
        if next_index >= limit:
            return True
        return target_seconds is not None and done_seconds() >= target_seconds

    def record(index: int, result) -> None:
        entry, was_rendered = result
        entries[index] = entry
        if was_rendered:
            rendered.add(index)
        if config.items is not None:
            bar.update(1)
        else:
            bar.n = min(round(done_seconds()), bar.total)
            bar.refresh()

    next_index = 0
    if config.jobs == 1:
        while not enough(next_index):
            record(next_index, build_one(*args, next_index, *opts))
            next_index += 1
    else:
        context = multiprocessing.get_context("spawn")  # clean workers: no inherited threads or synths
        with futures.ProcessPoolExecutor(max_workers=config.jobs, mp_context=context) as pool:
            pending: dict[futures.Future, int] = {}
            while True:
                while len(pending) < 3 * config.jobs and not enough(next_index):
                    pending[pool.submit(build_one, *args, next_index, *opts)] = next_index
                    next_index += 1
                if not pending:
                    break
                finished, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    record(pending.pop(future), future.result())
    bar.close()
    count = len(entries) if target_seconds is None else _prefix_length(entries, target_seconds)
    for index in range(count, max(entries, default=-1) + 1):  # rendered past the --hours target
        for suffix in (".flac", ".json"):
            (out / _relative_path(index)).with_suffix(suffix).unlink(missing_ok=True)
    manifest = "".join(json.dumps(entries[i], ensure_ascii=False) + "\n" for i in range(count))
    _write_json_atomic(out / "manifest.jsonl", manifest)
    seconds = sum(entries[i]["seconds"] for i in range(count))
    size = sum(p.stat().st_size for p in (out / "audio").rglob("*.flac"))
    kept_rendered = sum(1 for index in rendered if index < count)
    return BuildReport(count, seconds, kept_rendered, time.perf_counter() - started, size)


def _prefix_length(entries: dict[int, dict], target_seconds: float) -> int:
    total, index = 0.0, 0
    while index in entries and total < target_seconds:
        total += entries[index]["seconds"]
        index += 1
    return index


def report_text(report: BuildReport) -> str:
    """Two lines for the terminal: size and speed, and disk use per hour of audio."""
    minutes = max(report.wall_seconds / 60, 1e-9)
    audio_minutes = report.seconds / 60
    speed = audio_minutes / minutes
    lines = [
        f"{report.items} items, {audio_minutes:.1f} min of audio ({report.rendered} rendered now) in "
        f"{report.wall_seconds:.1f} s: {report.items / minutes:.0f} items/min, {speed:.1f} min of audio per minute"
        + (f" (1 h of audio in {60 / speed:.1f} min)" if report.rendered == report.items and speed > 0 else "")
    ]
    if report.seconds > 0:
        per_hour = report.bytes_on_disk / 2**20 / (report.seconds / 3600)
        lines.append(f"{report.bytes_on_disk / 2**20:.1f} MiB on disk, {per_hour:.0f} MiB per hour of audio")
    return "\n".join(lines)


__all__ = ["CorpusConfig", "BuildReport", "build_corpus", "make_item", "split_of", "report_text"]
