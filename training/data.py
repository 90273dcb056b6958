"""Training data: the manifest, an audio crop loader, pre-encoded latents and their batches.

Manifest (JSONL, one clip a line; paths relative to the manifest's folder)::

    {"path": "clips/a.wav", "caption": "warm rhodes chords", "seconds": 8.0,
     "licence": "CC0", "source": "procedural", "bpm": 92, "key": "A minor",
     "instrument": "rhodes", "tags": ["chords"], "split": "train"}

``path``, ``caption``, ``seconds``, ``licence`` and ``source`` are required; ``bpm``, ``key``,
``instrument``, ``genre``, ``samples`` (exact length), ``tags`` (a list of words, or a mapping
of tag names to values as `sa3 data build` writes) and ``split`` (train / valid / test,
default train) are optional. Any other key is an error that names the line and the key.

Diffusion training reads latents, not audio: ``sa3 data encode`` (:func:`encode_manifest`)
runs the autoencoder once over the corpus and writes safetensors shards plus ``index.json``
(captions, tags, frame counts, the latent of silence). :class:`LatentCorpus` reads them and
:func:`draw_latent_batch` crops, extends with silence and pads a batch (True = real frame).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sa3core import timebase
from sa3core.audio import load_audio
from sa3core.checkpoint import atomic_write
from sa3core.errors import Sa3Error
from sa3core.models.same import model_identity
from sa3core.musical import from_tags

INDEX_FORMAT = 1
SPLITS = ("train", "valid", "test")
REQUIRED = {"path": str, "caption": str, "seconds": (int, float), "licence": str, "source": str}
OPTIONAL = {
    "bpm": (int, float),
    "key": str,
    "instrument": str,
    "genre": str,
    "samples": int,
    "tags": (list, dict),
    "split": str,
}


@dataclass
class ManifestEntry:
    """One clip of the corpus; ``path`` is absolute once read."""

    path: str
    caption: str
    seconds: float
    licence: str
    source: str
    split: str = "train"
    bpm: float | None = None
    key: str | None = None
    instrument: str | None = None
    genre: str | None = None
    samples: int | None = None
    tags: list[str] | dict = field(default_factory=list)

    def tag_dict(self) -> dict:
        """The optional musical tags, for the latent index."""
        out = dict(self.tags) if isinstance(self.tags, dict) else ({"tags": list(self.tags)} if self.tags else {})
        out.update({k: getattr(self, k) for k in ("bpm", "key", "instrument", "genre") if getattr(self, k) is not None})
        return out


def _check_entry(record: object, where: str, base: Path) -> ManifestEntry:
    if not isinstance(record, dict):
        raise Sa3Error(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    for name in REQUIRED:
        if name not in record:
            raise Sa3Error(f"{where}: field {name!r} is missing; every clip needs {', '.join(REQUIRED)}")
    for name, value in record.items():
        kind = REQUIRED.get(name) or OPTIONAL.get(name)
        if kind is None:
            allowed = ", ".join([*REQUIRED, *OPTIONAL])
            raise Sa3Error(f"{where}: unknown field {name!r}; allowed fields are {allowed}")
        if isinstance(value, bool) or not isinstance(value, kind):
            raise Sa3Error(f"{where}: field {name!r} has the wrong type ({value!r}); see the manifest format")
    if not math.isfinite(record["seconds"]) or record["seconds"] <= 0:
        raise Sa3Error(f"{where}: field 'seconds' must be a positive number of seconds (got {record['seconds']!r})")
    if "bpm" in record and not timebase.MIN_BPM <= record["bpm"] <= timebase.MAX_BPM:
        raise Sa3Error(f"{where}: field 'bpm' {record['bpm']!r} is outside {timebase.MIN_BPM:g}-{timebase.MAX_BPM:g}")
    if record.get("split", "train") not in SPLITS:
        raise Sa3Error(f"{where}: field 'split' is {record['split']!r}; use one of {', '.join(SPLITS)}")
    if isinstance(record.get("tags"), list) and not all(isinstance(t, str) for t in record["tags"]):
        raise Sa3Error(f"{where}: field 'tags' must be a list of words or a mapping (got {record['tags']!r})")
    if record.get("samples", 1) <= 0:
        raise Sa3Error(f"{where}: field 'samples' must be a positive whole number (got {record['samples']!r})")
    if not record["path"]:
        raise Sa3Error(f"{where}: field 'path' is empty")
    entry = ManifestEntry(**record)
    entry.seconds = float(entry.seconds)
    entry.path = str((base / entry.path).resolve()) if not os.path.isabs(entry.path) else entry.path
    return entry


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[ManifestEntry]:
    """Read and validate a manifest; errors name the file, the line and the field.

    ``split`` keeps only that split's entries (None keeps all).
    """
    path = Path(path)
    if not path.is_file():
        raise Sa3Error(f"manifest {str(path)!r} does not exist; build one with `sa3 data build` or by hand (JSONL)")
    entries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"manifest {str(path)!r} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise Sa3Error(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            entries.append(_check_entry(record, where, path.parent))
    if not entries:
        raise Sa3Error(f"manifest {str(path)!r} holds no clips")
    return [e for e in entries if split is None or e.split == split]


# ---------------------------------------------------------------- audio loading


@dataclass
class CropConfig:
    """Variable-length crops of audio (or latents), with random silence tails."""

    max_seconds: float = 30.0  # longest crop
    min_seconds: float = 1.0  # shortest crop (shorter clips are used whole)
    silence_prob: float = 0.3  # chance of a silence tail after a clip that ends inside the crop
    silence_mean_seconds: float = 4.0  # tails last an exponential number of seconds with this mean

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise Sa3Error(f"crop min_seconds {self.min_seconds!r} must be positive and at most max_seconds")
        if not 0.0 <= self.silence_prob <= 1.0:
            raise Sa3Error(f"crop silence_prob {self.silence_prob!r} must be a probability in [0, 1]")


class AudioClips(torch.utils.data.Dataset):
    """Audio crops from a manifest: item i is (audio float32 [2, samples], caption, real samples).

    Crops are a random length between min and max seconds at a random offset; a clip that
    ends inside its crop gets, with ``silence_prob``, a silence tail of an exponential length
    (capped at ``max_seconds``) so models learn to end cleanly. Draws come from a generator
    seeded by (seed, epoch, index), so a given epoch always yields the same crops.
    """

    def __init__(self, entries: list[ManifestEntry], config: CropConfig, seed: int = 0) -> None:
        self.entries, self.config, self.seed, self.epoch = entries, config, seed, 0

    def __len__(self) -> int:
        return len(self.entries)

    def nominal_samples(self, index: int) -> int:
        """Length bucketing uses the manifest's duration, capped at the crop maximum."""
        seconds = min(self.entries[index].seconds, self.config.max_seconds)
        return timebase.seconds_to_samples(seconds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        entry, config = self.entries[index], self.config
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
        audio = load_audio(entry.path)
        total = audio.shape[1]
        longest = min(total, timebase.seconds_to_samples(config.max_seconds))
        shortest = min(longest, timebase.seconds_to_samples(config.min_seconds))
        length = int(torch.randint(shortest, longest + 1, (1,), generator=gen).item())
        start = int(torch.randint(0, total - length + 1, (1,), generator=gen).item())
        clip = torch.from_numpy(audio[:, start : start + length])
        if start + length == total and torch.rand(1, generator=gen).item() < config.silence_prob:
            mean = timebase.seconds_to_samples(config.silence_mean_seconds)
            tail = int(torch.empty(1).exponential_(1.0 / mean, generator=gen).item())
            tail = min(tail, timebase.seconds_to_samples(config.max_seconds) - length)
            clip = torch.nn.functional.pad(clip, (0, max(0, tail)))
        return clip, entry.caption, clip.shape[1]


class LengthBuckets(torch.utils.data.Sampler):
    """Batches of indices with similar lengths, so little of each batch is padding.

    Items are sorted by length, cut into batches, and the batches are shuffled per epoch.
    Under DDP each rank takes every ``world_size``-th batch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        jitter = torch.rand(len(self.lengths), generator=gen)  # random order among equal lengths
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], jitter[i].item()))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in shuffled][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def pad_batch(items: list[torch.Tensor], lengths: list[int], hop: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [C, n_i] tensors to the longest: ([B, C, n_max], bool mask [B, ceil(n_max/hop)]).

    ``hop`` converts item lengths to mask units (timebase.SAMPLES_PER_FRAME for audio -> frames).
    """
    longest = max(t.shape[-1] for t in items)
    out = torch.zeros(len(items), items[0].shape[0], longest, dtype=items[0].dtype)
    units = -(-longest // hop)
    mask = torch.zeros(len(items), units, dtype=torch.bool)
    for i, (item, length) in enumerate(zip(items, lengths)):
        out[i, :, : item.shape[-1]] = item
        mask[i, : -(-length // hop)] = True
    return out, mask


def collate_audio(items: list[tuple[torch.Tensor, str, int]]) -> dict:
    """DataLoader collate for :class:`AudioClips`: audio [B, 2, S], frame_mask [B, frames], captions."""
    audio, mask = pad_batch([a for a, _, _ in items], [n for _, _, n in items], timebase.SAMPLES_PER_FRAME)
    seconds = torch.tensor([timebase.samples_to_seconds(n) for _, _, n in items])
    return {"audio": audio, "frame_mask": mask, "captions": [c for _, c, _ in items], "seconds": seconds}


# ---------------------------------------------------------------- pre-encoded latents


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SHARD_PATTERN = "shard_*.safetensors"


def _reusable_latents(out_dir: Path, identity: str, autoencoder_name: str) -> tuple[dict, int]:
    """Latents already in ``out_dir`` made by the autoencoder ``identity``: {audio sha256:
    (shard, key, frames, samples)}, and the next free shard number.

    Every shard names the autoencoder and the audio of each clip in its metadata, so an
    interrupted run's finished shards count as well as an indexed corpus. A folder whose index
    or shards came from another autoencoder is an error: mixing latent spaces would poison
    training, and deleting them would lose work."""
    index_path = out_dir / "index.json"
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        other = old.get("autoencoder_identity")
        if (other and other != identity) or (not other and old.get("autoencoder") != autoencoder_name):
            raise Sa3Error(
                f"{str(out_dir)!r} holds latents from another autoencoder ({old.get('autoencoder')!r}); "
                "choose another -o folder, or delete that one to re-encode"
            )
    reusable, next_shard = {}, 0
    for shard in sorted(out_dir.glob(SHARD_PATTERN)):
        try:
            next_shard = max(next_shard, int(shard.stem.split("_")[1]) + 1)
        except (IndexError, ValueError):
            continue
        with safe_open(str(shard), framework="pt") as handle:
            meta = handle.metadata() or {}
            if "clips" not in meta:
                continue  # written before shards described themselves: re-encoded
            if meta.get("autoencoder_identity") != identity:
                raise Sa3Error(
                    f"{str(shard)!r} holds latents from another autoencoder; choose another -o folder, "
                    "or delete that one to re-encode"
                )
            for key, clip in json.loads(meta["clips"]).items():
                frames = handle.get_slice(key).get_shape()[1]
                reusable[clip["audio_sha256"]] = (shard.name, key, frames, clip["samples"])
    return reusable, next_shard


def encode_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    autoencoder: torch.nn.Module,
    autoencoder_name: str = "",
    items_per_shard: int = 256,
    progress: bool = True,
) -> Path:
    """Encode every clip with ``autoencoder`` (one pass, whole clips) into shards + ``index.json``.

    The index records, per clip: shard, key, frames, samples, caption, split, tags and the
    audio file's sha256, and once: the latent of silence (for silence extension during
    training) and which autoencoder made the latents (its file and
    :func:`sa3core.models.same.model_identity`), so training never mixes latent spaces. Returns the index path.

    Resumable: clips whose audio (by content) already has latents from the same autoencoder in
    ``out_dir`` (an earlier index, or the finished shards of an interrupted run) are not
    encoded again; captions, splits and tags always come from ``manifest``. So a corpus grown
    with ``sa3 data build`` (same seed, more hours) encodes only its new clips, also into a
    copy of the old latents folder. Shards no clip refers to are removed once the new index
    is written.
    """
    entries = read_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    autoencoder = autoencoder.eval()
    identity = model_identity(autoencoder)
    reusable, shard_id = _reusable_latents(out_dir, identity, autoencoder_name)
    records, shard, clips = [], {}, {}
    reused = 0

    def flush() -> None:
        nonlocal shard, clips, shard_id
        if shard:
            tensors = dict(shard)
            meta = {"autoencoder_identity": identity, "clips": json.dumps(clips)}
            atomic_write(
                out_dir / f"shard_{shard_id:05d}.safetensors", lambda tmp: save_file(tensors, tmp, metadata=meta)
            )
            shard, clips, shard_id = {}, {}, shard_id + 1

    iterator = entries
    if progress:
        from tqdm import tqdm

        iterator = tqdm(entries, desc="encode", unit="clip", dynamic_ncols=True)
    with torch.inference_mode():
        # Silence in the middle of a long silent stretch, so the encoder's edges play no part.
        silent = torch.zeros(1, timebase.CHANNELS, timebase.frames_to_samples(8))
        silence = autoencoder.encode(silent)[0, :, 4].float().contiguous()  # (256,)
        for number, entry in enumerate(iterator):
            audio_sha = file_sha256(entry.path)
            if audio_sha in reusable:
                shard_name, key, frames, samples = reusable[audio_sha]
                reused += 1
            else:
                audio = torch.from_numpy(load_audio(entry.path))
                latents = autoencoder.encode(audio[None])[0].float().contiguous()  # (256, frames)
                key, frames, samples = f"clip_{number:07d}", latents.shape[1], audio.shape[1]
                shard_name = f"shard_{shard_id:05d}.safetensors"
                shard[key] = latents
                clips[key] = {"audio_sha256": audio_sha, "samples": samples}
                reusable[audio_sha] = (shard_name, key, frames, samples)  # a clip listed twice
            records.append(
                {
                    "key": key,
                    "shard": shard_name,
                    "frames": frames,
                    "samples": samples,
                    "caption": entry.caption,
                    "split": entry.split,
                    "source": entry.source,
                    "licence": entry.licence,
                    "tags": entry.tag_dict(),
                    "audio_sha256": audio_sha,
                }
            )
            if len(shard) >= items_per_shard:
                flush()
    flush()
    silence_file = "silence.safetensors"
    atomic_write(out_dir / silence_file, lambda tmp: save_file({"silence": silence}, tmp))
    index = {
        "format": INDEX_FORMAT,
        "autoencoder": autoencoder_name,
        "autoencoder_identity": identity,
        "latent_channels": int(silence.shape[0]),
        "silence": silence_file,
        "reused": reused,
        "items": records,
    }
    path = out_dir / "index.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    referenced = {r["shard"] for r in records}
    for stale in out_dir.glob(SHARD_PATTERN):
        if stale.name not in referenced:
            stale.unlink()
    return path


class LatentCorpus:
    """Pre-encoded latents from :func:`encode_manifest`; item i is latents float32 [256, frames]."""

    def __init__(self, folder: str | os.PathLike, split: str | None = "train") -> None:
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        if not index_path.is_file():
            raise Sa3Error(f"{str(self.folder)!r} has no index.json; run `sa3 data encode MANIFEST -o DIR` first")
        index = json.loads(index_path.read_text())
        if index.get("format") != INDEX_FORMAT:
            raise Sa3Error(f"latent index {str(index_path)!r} has format {index.get('format')!r}; re-encode the corpus")
        self.autoencoder = index.get("autoencoder", "")
        self.items = [r for r in index["items"] if split is None or r["split"] == split]
        if not self.items:
            raise Sa3Error(f"latent corpus {str(self.folder)!r} has no clips in split {split!r}")
        with safe_open(str(self.folder / index["silence"]), framework="pt") as handle:
            self.silence = handle.get_tensor("silence")  # (256,)
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def frames(self) -> list[int]:
        return [r["frames"] for r in self.items]

    def caption(self, index: int) -> str:
        return self.items[index]["caption"]

    def latents(self, index: int, start: int = 0, frames: int | None = None) -> torch.Tensor:
        """Frames [start, start + frames) of item ``index``: float32 [256, frames]."""
        record = self.items[index]
        handle = self._handles.get(record["shard"])
        if handle is None:
            handle = self._handles[record["shard"]] = safe_open(str(self.folder / record["shard"]), framework="pt")
        end = record["frames"] if frames is None else start + frames
        return handle.get_slice(record["key"])[:, start:end].float()


@dataclass
class LatentCropConfig:
    """Crops of pre-encoded latents: lengths in seconds, converted with sa3core.timebase."""

    max_seconds: float = 30.0  # longest crop before any silence extension
    min_seconds: float = 1.0
    silence_mean_seconds: float = 4.0  # silence extension after a clip's true end (exponential)
    silence_prob: float = 0.5  # chance of extending an item whose crop reaches the clip's end
    whole_one_shots: bool = True  # one-shots start at their attack, never cropped (has_envelope)

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise Sa3Error(f"data min_seconds {self.min_seconds!r} must be positive and at most max_seconds")
        if not 0.0 <= self.silence_prob <= 1.0:
            raise Sa3Error(f"data silence_prob {self.silence_prob!r} must be a probability in [0, 1]")


@dataclass
class ItemPlan:
    """Which frames of which clip one batch item holds (drawn before any tensor is read)."""

    index: int
    start: int
    frames: int  # real frames taken from the clip
    silence: int  # frames of silence appended (the valid mask covers them)


def has_envelope(tags: dict) -> bool:
    """Whether a clip is one sound from its attack to its end (tags ``kind`` one-shot, or an
    effect whose ``flavour`` is one-shot or recorded), which crops must not cut.

    Why: a batch's length is drawn log-uniform from 0.5 s, and a one-shot longer than it was
    cropped at a random start, so a third of the one-shots the DiT saw began mid-sound, under a
    caption that says it is one sound; loops and textures, which have no start, are still
    cropped anywhere. Measured: 2000 flow steps from the shipped DiT with the rule (lr 2e-4)
    raised clean one-shot endings from 4/45 to 9/45 over five eval seeds, and the takes of short
    one-shots loudest in their first tenth from 19 to 26 of 72; keys fell from 36/90 to 31/90, so that
    DiT was not shipped. On the 4-hour corpus (configs/default/flow-more.yaml, the shipped DiT) the
    rule is on, with better keys and tempi (docs/notes/2026-12-02-flow-stages-and-tempo.md); the stages
    recorded before it keep it off.
    Cost: a batch pads to its longest whole sound; that run made 1.07 steps/s where flow-long made
    1.9 (on the same 2 cores, beside a decoder run).
    """
    return tags.get("kind") == "one-shot" or (
        tags.get("kind") == "sfx" and tags.get("flavour") in ("one-shot", "recorded")
    )


def plan_batch(corpus: LatentCorpus, size: int, config: LatentCropConfig, gen: torch.Generator) -> list[ItemPlan]:
    """Draw ``size`` items of similar length (a length bucket per batch).

    One target length is drawn per batch, log-uniform between min and max; every item is
    cropped to about that length (clips shorter than it, and sounds with an envelope
    (:func:`has_envelope`), are used whole), so a batch pads little.
    """
    max_frames = timebase.seconds_to_frames(config.max_seconds)
    min_frames = max(1, timebase.seconds_to_frames(config.min_seconds))
    log_lo, log_hi = math.log(min_frames), math.log(max_frames)
    target = int(round(math.exp(log_lo + (log_hi - log_lo) * torch.rand(1, generator=gen).item())))
    fps = timebase.frames_per_second()
    plans = []
    for index in torch.randint(0, len(corpus), (size,), generator=gen).tolist():
        total = corpus.items[index]["frames"]
        jitter = 0.85 + 0.15 * torch.rand(1, generator=gen).item()  # a little length variety inside the bucket
        frames = max(1, min(total, int(target * jitter)))
        start = int(torch.randint(0, total - frames + 1, (1,), generator=gen).item())
        if config.whole_one_shots and has_envelope(corpus.items[index].get("tags") or {}):
            # From its attack (see has_envelope). The start above is still drawn, so every later
            # draw comes in the same order as in the stages recorded with the rule off.
            frames, start = min(total, max_frames), 0
        silence = 0
        # Only a crop that holds the clip's true end is followed by silence: extending a
        # crop cut mid-phrase would teach the model to stop sounds abruptly.
        if start + frames == total and torch.rand(1, generator=gen).item() < config.silence_prob:
            drawn = torch.empty(1).exponential_(1.0 / (config.silence_mean_seconds * fps), generator=gen).item()
            silence = min(int(drawn), max_frames - frames)
        plans.append(ItemPlan(index, start, frames, max(0, silence)))
    return plans


def load_batch(corpus: LatentCorpus, plans: list[ItemPlan]) -> dict:
    """Read planned items: latents [B, 256, T], frame_mask bool [B, T], seconds [B], captions,
    and the tags' musical attributes with each crop's first frame (for the DiT's ``music`` rows).

    ``seconds`` is each item's valid length (crop plus silence), the duration the DiT is told.
    """
    items, lengths = [], []
    for plan in plans:
        latents = corpus.latents(plan.index, plan.start, plan.frames)
        if plan.silence:
            latents = torch.cat([latents, corpus.silence[:, None].expand(-1, plan.silence)], dim=1)
        items.append(latents)
        lengths.append(latents.shape[1])
    latents, mask = pad_batch(items, lengths)
    seconds = torch.tensor([timebase.samples_to_seconds(timebase.frames_to_samples(n)) for n in lengths])
    return {
        "latents": latents,
        "frame_mask": mask,
        "seconds": seconds,
        "captions": [corpus.caption(p.index) for p in plans],
        # what the tags say about tempo, key and meter, and where each crop starts (in frames)
        "attributes": [from_tags(corpus.items[p.index].get("tags") or {}) for p in plans],
        "start_frames": [float(p.start) for p in plans],
    }


def item_seed(seed: int, step: int, position: int) -> int:
    """A seed for one item of one step's global batch, independent of how ranks split the batch."""
    state = np.random.SeedSequence([seed, step, position, 0x5A3]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1
