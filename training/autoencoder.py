"""Stage 0: train the SAME autoencoder (``sa3 train autoencoder --config FILE --out DIR [--resume]``).

Data: ``data.source`` is a JSONL manifest (one ``{"path", "caption", "seconds", "licence",
"source"}`` object a line; relative paths are relative to the manifest) or a folder of audio
files; empty means the built-in procedural audio of :mod:`training.synthetic`. Each item is a
random crop of ``data.segment_frames`` latent frames (shorter files are zero-padded).

Losses: :class:`sa3core.losses.AutoencoderLoss` with ``loss`` weights (MR-STFT, IFGD, chroma and
ILD heads on; adversarial and contrastive off). Final EMA weights go to ``OUT/same.safetensors``.

Fine-tuning: ``init`` starts from a ``same.safetensors``; ``train: decoder`` freezes the encoder
and its latent statistics, so the latent space (and any corpus already encoded with it, and a
DiT trained on that corpus) stays valid while the decoder keeps learning. The shipped recipe
uses it to train the decoder with the mel loss at the same time as the flow stage.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from torch import nn

from sa3core import config as cfg
from sa3core.audio import to_model_audio
from sa3core.checkpoint import load_model, save_model
from sa3core.errors import Sa3Error
from sa3core.losses import AutoencoderLoss, LossInputs, LossWeights, MultiResolutionSTFTLoss
from sa3core.models.same import (
    HEAD_SPANS,
    SAME,
    SAMEConfig,
    add_pitch_channels,
    add_pitch_front_end,
    add_pitch_skip,
    add_refiner,
    pad_to_frames,
    resize_head,
    same_preset,
)
from sa3core.timebase import SAMPLE_RATE, frames_to_samples

from . import TRAINERS
from .base import LoopConfig, Trainer
from .synthetic import render_batch

AUDIO_SUFFIXES = {".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3"}


@dataclass
class DataConfig:
    source: str = ""  # JSONL manifest or folder of audio; "" = procedural audio
    segment_frames: int = 16  # crop length in latent frames (16 frames = 1.49 s)
    silence_prob: float = 0.0  # chance a crop's tail or head is silenced (10 ms fade): teaches clean endings


# SAMEConfig fields that `model:` may set on a model loaded with `init:` (e.g. turn on
# peak_frequency part-way through training). The head's fields leave the encoder, and so the
# latents, alone; head_patches resizes the head's output layer (sa3core.models.same.resize_head).
# pitch_patches adds a longer spectrum to the encoder's input (add_pitch_front_end) and
# pitch_channels makes the last latent channels measured semitone energies (add_pitch_channels):
# both change the latents, so they need `train: all`.
# pitch_skip (the head renders the semitone channels; add_pitch_skip) leaves the latents alone, as
# does refiner_layers (a wider transformer after the decoder, its head starting at zero; add_refiner).
HEAD_FIELDS = frozenset(
    {
        "peak_frequency",
        "chunk_frames",
        "head_patches",
        "pitch_patches",
        "pitch_channels",
        "pitch_skip",
        "refiner_layers",
        "refiner_width",
    }
)
ENCODER_FIELDS = ("pitch_patches", "pitch_channels")


@dataclass
class AutoencoderConfig:
    preset: str = "tiny"  # SAME size preset
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's SAMEConfig fields
    init: str = ""  # a same.safetensors to start from ("" = random init; its config replaces preset/model,
    # except the HEAD_FIELDS that `model:` sets)
    train: str = "all"  # "all" or "decoder" (encoder and latent statistics frozen)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval_items: int = 2  # fixed procedural clips scored at each evaluation

    def same_config(self) -> SAMEConfig:
        base = cfg.to_dict(same_preset(self.preset))
        return cfg.from_dict(SAMEConfig, cfg.merge(base, self.model), where="autoencoder config model")


class AudioFiles:
    """Random crops from a manifest or folder of audio files (read lazily, resampled at the edge)."""

    def __init__(self, source: str) -> None:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            files = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    files.append(path.parent / json.loads(line)["path"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise Sa3Error(f"manifest {source!r} line {number} is not a JSON object with a 'path'") from None
        else:
            raise Sa3Error(f"training data {source!r} does not exist; give a JSONL manifest or a folder of audio")
        if not files:
            raise Sa3Error(f"training data {source!r} lists no audio files")
        self.files = files
        self._info: dict[int, tuple[int, int]] = {}

    def crop(self, samples: int, generator: torch.Generator) -> torch.Tensor:
        index = int(torch.randint(len(self.files), (), generator=generator))
        if index not in self._info:
            info = sf.info(str(self.files[index]))
            self._info[index] = (info.frames, info.samplerate)
        frames, rate = self._info[index]
        need = int(samples * rate / SAMPLE_RATE) + 1
        start = int(torch.randint(max(1, frames - need + 1), (), generator=generator))
        data, rate = sf.read(str(self.files[index]), start=start, frames=need, dtype="float32", always_2d=True)
        audio = torch.from_numpy(to_model_audio(data.T, rate, what=str(self.files[index])))[:, :samples]
        return torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))


ENCODER_PARTS = ("patch_in", "patch_position", "summary", "encoder", "encoder_norm", "to_latent", "latent_norm")


class AutoencoderWithLosses(nn.Module):
    """The trained module: SAME plus the loss terms (some have heads); forward returns the losses.

    ``decoder_only``: the encoder's parameters are frozen and its pass runs without gradients
    (so the latent running statistics do not move either).
    """

    def __init__(self, same: SAME, weights: LossWeights, decoder_only: bool = False) -> None:
        super().__init__()
        self.same = same
        self.losses = AutoencoderLoss(weights)
        self.decoder_only = decoder_only
        if decoder_only:
            for name in ENCODER_PARTS:
                part = getattr(same, name)
                for param in part.parameters() if isinstance(part, nn.Module) else [part]:
                    param.requires_grad_(False)

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        same, padded = self.same, pad_to_frames(audio)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.decoder_only):
            latents = same._encode_frames(padded)
        log_magnitude, phase = same.head_spectra(same.decoder_outputs(latents), latents=latents)
        reconstruction = same.spectra_to_audio(log_magnitude, phase)[..., : audio.shape[-1]]
        head = None
        if self.losses.weights["head"] > 0:
            with torch.no_grad():
                head = (log_magnitude, same.head_target(padded))
        return self.losses(LossInputs(audio, reconstruction, latents, head))


class AutoencoderTrainer(Trainer):
    def __init__(self, config: AutoencoderConfig, out_dir: str | Path, resume: bool = False) -> None:
        self.config = config
        self.files = AudioFiles(config.data.source) if config.data.source else None
        self.segment = frames_to_samples(config.data.segment_frames)
        generator = torch.Generator().manual_seed(1_234_567)  # the same held-out clips in every run
        self.eval_audio = render_batch(config.eval_items, self.segment, generator)
        super().__init__(config.loop, out_dir, resume, run_config=cfg.to_dict(config))
        self.eval_loss = MultiResolutionSTFTLoss().to(self.device)

    def build_model(self) -> nn.Module:
        config = self.config
        if config.init:
            same = load_model(config.init, expect_kind="same")[0].train()
            head_patches = config.model.get("head_patches", same.config.head_patches)
            if head_patches != same.config.head_patches:
                same = resize_head(same, head_patches)
            if config.model.get("pitch_patches", 0) and not same.config.pitch_patches:
                same = add_pitch_front_end(same, config.model["pitch_patches"])
            if config.model.get("pitch_channels", 0) and not same.config.pitch_channels:
                same = add_pitch_channels(same, config.model["pitch_channels"], self.calibration_audio())
            if config.model.get("pitch_skip") and not same.config.pitch_skip:
                same = add_pitch_skip(same)
            refiner = {k: v for k, v in config.model.items() if k.startswith("refiner_")}
            if refiner and same.config.refiner_layers:
                if any(getattr(same.config, k) != v for k, v in refiner.items()):
                    raise Sa3Error(
                        f"{config.init} already has a {same.config.refiner_layers}-layer refiner "
                        f"{same.config.refiner_width} wide; drop model.refiner_* or start from a model without one"
                    )
            elif refiner.get("refiner_layers", 0):
                same = add_refiner(same, refiner["refiner_layers"], refiner.get("refiner_width"))
            elif refiner:
                raise Sa3Error("model.refiner_width needs model.refiner_layers (how many layers the refiner has)")
            head = {k: v for k, v in config.model.items() if k not in refiner}
            same.config = dataclasses.replace(same.config, **head)  # head settings only (checked)
        else:
            same = SAME(config.same_config())
        return AutoencoderWithLosses(same, config.loss, decoder_only=config.train == "decoder")

    def calibration_audio(self, crops: int = 32) -> torch.Tensor:
        """Fixed crops of the training data (procedural audio without a source), for statistics."""
        generator = torch.Generator().manual_seed(7_654_321)
        if self.files is None:
            return render_batch(crops, self.segment, generator)
        return torch.stack([self.files.crop(self.segment, generator) for _ in range(crops)])

    def get_batch(self, step: int, micro: int, generator: torch.Generator) -> torch.Tensor:
        if self.files is None:
            return render_batch(self.loop.batch_size, self.segment, generator)
        crops = [self.files.crop(self.segment, generator) for _ in range(self.loop.batch_size)]
        return torch.stack([self.silence(crop, generator) for crop in crops])

    def silence(self, crop: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """With ``data.silence_prob``, silence a random tail (or head) of ``crop`` [2, S] behind a
        10 ms fade: the corpus's own silences are short, and a decoder that never sees digital
        silence fills it with a noise floor (-53 dBFS measured), so one-shots never end."""
        draw = torch.rand(3, generator=generator)
        if draw[0] >= self.config.data.silence_prob:
            return crop
        samples = crop.shape[-1]
        cut = int(samples * (0.1 + 0.8 * float(draw[1])))
        fade = min(cut, SAMPLE_RATE // 100)
        gain = torch.ones(samples)
        gain[cut - fade : cut] = torch.linspace(1.0, 0.0, fade)
        gain[cut:] = 0.0
        return crop * (gain if draw[2] < 0.5 else gain.flip(0))

    def run_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.train_model(batch)

    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        same = self.model.same
        with torch.no_grad():
            return same.decode(same.encode(audio.to(self.device)))[..., : audio.shape[-1]]

    def evaluate(self) -> dict[str, float]:
        audio = self.eval_audio.to(self.device)
        reconstruction = self.reconstruct(audio)
        return {
            "mrstft": float(self.eval_loss(reconstruction, audio)),
            "l1": float((reconstruction - audio).abs().mean()),
        }

    def log_samples(self, writer, step: int) -> None:
        audio = self.eval_audio[:1]
        reconstruction = self.reconstruct(audio).cpu()
        for name, clip in (("input", audio), ("reconstruction", reconstruction)):
            writer.add_audio(f"audio/{name}", clip[0].mean(0, keepdim=True).clamp(-1, 1), step, SAMPLE_RATE)

    def export(self, out_dir: Path) -> None:
        save_model(out_dir / "same.safetensors", "same", self.ema_model().same, extra={"step": self.step})


def load_config(config_path: str | None) -> AutoencoderConfig:
    data = cfg.read_config_file(config_path) if config_path else {}
    return cfg.from_dict(AutoencoderConfig, data, where=config_path or "autoencoder config")


def check_config(config: AutoencoderConfig) -> None:
    """Sa3Error for a config that cannot run, before any work."""
    config.same_config()  # validate the model overrides
    if config.train not in ("all", "decoder"):
        raise Sa3Error(f"autoencoder config train {config.train!r} must be 'all' or 'decoder'")
    if config.train == "decoder" and not config.init:
        raise Sa3Error("train: decoder fine-tunes a trained autoencoder; set init: to its same.safetensors")
    if config.init and set(config.model) - HEAD_FIELDS:
        raise Sa3Error(
            f"`model:` overrides cannot change the shape of the autoencoder loaded from {config.init!r}; "
            f"with init only {', '.join(sorted(HEAD_FIELDS))} may be set"
        )
    if config.model.get("head_patches", HEAD_SPANS[0]) not in HEAD_SPANS:
        raise Sa3Error(
            f"autoencoder config model.head_patches {config.model['head_patches']!r} must be one of "
            f"{', '.join(map(str, HEAD_SPANS))}"
        )
    for name in ENCODER_FIELDS:
        if config.train == "decoder" and config.model.get(name):
            raise Sa3Error(f"model.{name} changes the encoder (and every latent); it needs train: all, not decoder")
    if config.init and not Path(config.init).is_file():
        raise Sa3Error(f"autoencoder init {config.init!r} does not exist; train the autoencoder first")


@TRAINERS.register("autoencoder")
def run(config_path: str | None, out_dir: str, resume: bool) -> None:
    config = load_config(config_path)
    check_config(config)
    AutoencoderTrainer(config, out_dir, resume).fit()
