"""A producer's folder of audio as LoRA training data: captions, pre-encoded latents, text conditions.

**The folder.** Audio files (``.wav .flac .aif .aiff .ogg .mp3``, any rate, mono or stereo, at most
380 s each; sub-folders are searched too; names starting with ``.`` are skipped) and, optionally,
a caption table at its top, ``captions.csv`` or ``captions.jsonl`` (not both):

- CSV: UTF-8, a header row naming the columns ``file`` and ``caption`` (other columns are
  ignored), one row per clip; quote a caption holding commas (``"dusty, lo-fi breakbeat"``).
- JSONL: one JSON object per line, ``{"file": "...", "caption": "..."}`` (other keys ignored;
  blank lines skipped).

``file`` is the path relative to the folder, ``/`` between folders (``drums/break_01.wav``). Each
clip's caption comes from, first found: its row in the table; a ``.txt`` beside it with the same
stem (the official layout, ``clip.wav`` + ``clip.txt``); its file name, with ``_`` and ``-`` read as
spaces and trailing numbers dropped (``dusty_breakbeat_01.wav`` -> "dusty breakbeat"). A row
naming a file that is not there, a file named twice, a table without those columns or a line
that is not JSON are one-line errors naming the table and line.

**Pre-encoding**, as the official ``pre_encode_dataset.py`` does it: each file is read once at
44.1 kHz stereo, clamped to [-1, 1], encoded whole by the model's own autoencoder (frames =
ceil(samples / 4096)) and stored with ``seconds_total`` = its length in whole seconds rounded up.
With ``flip_polarity`` the inverted file is encoded too and training picks one of the two at
random, as the official data loader's random phase flip does. Files quieter than -60 dBFS at
their peak are left out, as the official loader skips them. The encoding of silence pads items
shorter than the crop. Latents are cached in ``<cache>/latents/<autoencoder id>/``, named by the
file's content hash: a changed file is encoded again, an unchanged one (renamed or moved too)
is not, and another autoencoder (its config and weights, ``autoencoder_identity``) has a folder
of its own. The text encoder's output for each caption is cached the same way in
``<cache>/text/<text encoder id>/`` (the id hashes its config, tokenizer and weights file's size
and time), so a resumed run or a second LoRA on the same folder loads neither model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sa3core import timebase
from sa3core.audio import load_audio
from sa3core.checkpoint import atomic_write
from sa3core.errors import Sa3Error

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
CAPTION_TABLES = ("captions.csv", "captions.jsonl")
SILENT_PEAK = 10 ** (-60 / 20)  # -60 dBFS: the official loader's silence threshold
CACHE_FORMAT = "1"  # bump when what a cached file holds changes


@dataclass(frozen=True)
class Clip:
    """One audio file of the folder: its path, name relative to the folder, caption and where that came from."""

    path: Path
    name: str
    caption: str
    caption_from: str


@dataclass
class EncodedClip:
    """A clip's latents [C, frames] (and its inverted file's, when encoded) and its conditioning."""

    name: str
    caption: str
    seconds_total: int
    latents: torch.Tensor
    flipped: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return self.latents.shape[1]


# ----------------------------------------------------------------------------- captions
def caption_from_name(stem: str) -> str:
    """``dusty_breakbeat_01`` -> ``dusty breakbeat``: ``_``/``-`` as spaces, trailing numbers dropped."""
    words = [w for w in re.split(r"[_\-\s]+", stem) if w]
    while words and words[-1].isdigit():
        words.pop()
    return " ".join(words)


def read_caption_table(path: Path) -> dict[str, tuple[str, str]]:
    """``{relative file: (caption, "table:line")}`` from a captions.csv / captions.jsonl (module docstring)."""
    where = repr(str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (spreadsheet exports) is not part of the header
    except UnicodeDecodeError:
        raise Sa3Error(f"caption file {where} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise Sa3Error(f"caption file {where} cannot be read ({err.strerror or err})") from None
    rows: list[tuple[int, object, object]] = []  # (line, file, caption)
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        missing = [c for c in ("file", "caption") if c not in columns]
        if missing:
            raise Sa3Error(
                f"caption file {where} has no {missing[0]!r} column (its header: {', '.join(columns) or 'none'}); "
                "the first row must name the columns file and caption"
            )
        try:
            rows = [(reader.line_num, row["file"], row["caption"]) for row in reader]
        except csv.Error as err:
            raise Sa3Error(f"caption file {where} line {reader.line_num} is not valid CSV ({err})") from None
    else:
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise Sa3Error(f"caption file {where} line {line_number} is not JSON ({err.msg})") from None
            if not isinstance(item, dict):
                raise Sa3Error(f"caption file {where} line {line_number} is not a JSON object with file and caption")
            rows.append((line_number, item.get("file"), item.get("caption")))
    table: dict[str, tuple[str, str]] = {}
    for line_number, file, caption in rows:
        if not isinstance(file, str) or not file.strip() or not isinstance(caption, str):
            raise Sa3Error(f"caption file {where} line {line_number} needs a file and a caption (text)")
        key = Path(file.strip().replace("\\", "/")).as_posix()
        if key in table:
            raise Sa3Error(f"caption file {where} line {line_number} names {key!r} a second time")
        table[key] = (caption.strip(), f"{path.name}:{line_number}")
    return table


def scan_folder(folder: str | Path) -> list[Clip]:
    """The clips of a training folder with their captions (module docstring), sorted by name."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise Sa3Error(f"training data {str(folder)!r} is not a folder; give --data the folder of your audio files")
    tables = [folder / name for name in CAPTION_TABLES if (folder / name).exists()]
    if len(tables) > 1:
        raise Sa3Error(f"{str(folder)!r} has both captions.csv and captions.jsonl; keep one")
    table = read_caption_table(tables[0]) if tables else {}
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        others = sum(1 for p in folder.rglob("*") if p.is_file())
        what = "is empty" if others == 0 else f"holds no audio files ({others} other files)"
        raise Sa3Error(f"training data {str(folder)!r} {what}; sa3 trains on {' '.join(AUDIO_SUFFIXES)} files")
    names = {p.relative_to(folder).as_posix() for p in files}
    for key, (_, line) in table.items():
        if key not in names:
            raise Sa3Error(f"{line} names {key!r}, which is not an audio file in {str(folder)!r}")
    clips = []
    for path in files:
        name = path.relative_to(folder).as_posix()
        if name in table:
            caption, source = table[name]
        elif path.with_suffix(".txt").is_file():
            source = path.with_suffix(".txt").name
            try:
                caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
            except (UnicodeDecodeError, OSError):
                raise Sa3Error(f"caption file {str(path.with_suffix('.txt'))!r} is not readable UTF-8 text") from None
        else:
            caption, source = caption_from_name(path.stem), "file name"
        if not caption:
            raise Sa3Error(
                f"{name!r} has no caption (its {source} gives none); add a row for it to captions.csv or a .txt beside it"
            )
        clips.append(Clip(path, name, caption, source))
    return clips


# ----------------------------------------------------------------------------- caches
def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cached(path: Path) -> dict[str, torch.Tensor] | None:
    """A cache file's tensors, or None when it is missing or unreadable (it is then made again)."""
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError):
        return None


def _write_cached(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


def encode_clips(
    clips: list[Clip],
    cache: Path,
    autoencoder_id: str,
    load_autoencoder: Callable[[], Callable[[torch.Tensor, torch.Generator], torch.Tensor]],
    flip_polarity: bool,
    silence_frames: int,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
    warn: Callable[[str], None] = print,
) -> tuple[list[EncodedClip], torch.Tensor]:
    """Every clip's latents (cached, module docstring) and the encoding of ``silence_frames`` of silence.

    ``load_autoencoder()`` is called at most once, when something is not cached, and returns
    ``encode(audio [1, 2, S], generator) -> latents [1, C, ceil(S / 4096)]``."""
    folder = cache / "latents" / autoencoder_id
    encoder = None

    def encode(audio: np.ndarray, seed: int) -> torch.Tensor:
        nonlocal encoder
        if encoder is None:
            encoder = load_autoencoder()
        generator = torch.Generator().manual_seed(seed)  # SAME-L's encoder draws token noise
        with torch.inference_mode():
            return encoder(torch.from_numpy(np.ascontiguousarray(audio))[None], generator)[0].float().cpu()

    encoded = []
    for clip in progress(clips):
        digest = file_digest(clip.path)
        seed = int(digest[:15], 16)
        path = folder / f"{digest[:40]}.safetensors"
        stored = _read_cached(path)
        wanted = ("latents", "flipped") if flip_polarity else ("latents",)
        if stored is None or not all(k in stored for k in wanted):
            audio = np.clip(load_audio(clip.path), -1.0, 1.0)  # [2, samples] at 44.1 kHz
            peak = float(np.abs(audio).max())
            stored = {"samples": torch.tensor([audio.shape[1]]), "peak": torch.tensor([peak])}
            if peak >= SILENT_PEAK:
                stored["latents"] = encode(audio, seed)
                if flip_polarity:
                    stored["flipped"] = encode(-audio, seed + 1)
            _write_cached(path, stored)
        if "latents" not in stored:
            warn(f"left out {clip.name!r}: it is silent (peak below -60 dBFS)")
            continue
        samples = int(stored["samples"][0])
        seconds_total = math.ceil(samples / timebase.SAMPLE_RATE)
        encoded.append(EncodedClip(clip.name, clip.caption, seconds_total, stored["latents"], stored.get("flipped")))
    if not encoded:
        raise Sa3Error("every audio file in the training folder is silent (peak below -60 dBFS); nothing to train on")
    silence_path = folder / f"silence-{silence_frames}.safetensors"
    stored = _read_cached(silence_path)
    if stored is None or "latents" not in stored:
        zeros = np.zeros((timebase.CHANNELS, silence_frames * timebase.SAMPLES_PER_FRAME), dtype=np.float32)
        stored = {"latents": encode(zeros, 0)}
        _write_cached(silence_path, stored)
    return encoded, stored["latents"]


def text_encoder_id(folder: Path, max_length: int, dtype: torch.dtype) -> str:
    """A short hash of a T5Gemma folder: its config and tokenizer files' contents, its weights
    file's size and modification time (not its contents: hundreds of MB), and the settings."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}:{max_length}:{dtype}".encode())
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".json", ".model"):
            digest.update(path.name.encode() + b":" + path.read_bytes())
        elif path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def encode_captions(
    captions: Iterable[str],
    cache: Path,
    encoder_id: str,
    load_encoder: Callable[[], Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{caption: (hidden [L, width], mask bool [L])}``, the text encoder's output, cached; hidden is
    bfloat16 where that holds it exactly (a bf16 encoder's output: half the memory), else float32.

    ``load_encoder()`` is called at most once, when a caption is not cached, and returns
    ``encode(prompts) -> (hidden [B, L, width], mask [B, L])``."""
    folder = cache / "text" / encoder_id
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    missing = []
    for caption in sorted(set(captions)):
        stored = _read_cached(folder / f"{hashlib.sha256(caption.encode()).hexdigest()[:40]}.safetensors")
        if stored is None or "hidden" not in stored or "mask" not in stored:
            missing.append(caption)
        else:
            found[caption] = (stored["hidden"], stored["mask"].bool())
    if missing:
        encode = load_encoder()
        for start in range(0, len(missing), 8):
            batch = missing[start : start + 8]
            with torch.inference_mode():
                hidden, mask = encode(batch)
            for i, caption in enumerate(batch):
                item = hidden[i].float().cpu()
                narrow = item.to(torch.bfloat16)  # a bf16 encoder's output is stored at half the size, exactly
                stored = narrow if torch.equal(narrow.float(), item) else item
                _write_cached(
                    folder / f"{hashlib.sha256(caption.encode()).hexdigest()[:40]}.safetensors",
                    {"hidden": stored, "mask": mask[i].cpu().to(torch.uint8)},
                )
                found[caption] = (stored, mask[i].cpu().bool())
    return found
