"""``sa3 train lora``: a LoRA for a released Stable Audio 3 base model, trained on a folder of audio.

The run: read the folder and its captions (:mod:`training.lora.data`), resolve ``--base`` (a
released name from the Hugging Face cache, never downloaded, or a released-layout folder),
pre-encode the audio and the captions once (cached), attach trainable adapters to the DiT and the
conditioners exactly where the official ``add_lora`` puts them (every Linear and Conv1d the
include/exclude filters select, :mod:`training.lora.adapters`), then train them with the official
objective (:mod:`training.lora.objective`) through the shared loop (:mod:`training.base`:
resumable atomic checkpoints, TensorBoard, a progress bar, torchrun/DDP).

Out folder (``--out DIR``, its name N):
- ``N.safetensors``: the final adapter, written by :func:`sa3core.lora.save_lora` (the official
  format: ``sa3 generate --lora``, the official loader and ``run_gradio.py`` take it);
- ``adapters/N-stepXXXXXX.safetensors``: the adapter at every checkpoint (all kept);
- ``checkpoints/``: the last ``keep_checkpoints`` training states (adapters, optimizer, random
  states; never the base model) for ``--resume``;
- ``tensorboard/``, ``config.json`` (the run's full config), ``cache/`` (latents and text).

Every random draw of a step comes from a generator seeded by (seed, step, the item's place in
the global batch), and which clip fills a place from a per-epoch shuffle of the same seed, so a
resumed run repeats the uninterrupted one exactly and the split over processes does not change
what an item draws. Defaults are the official ``train_lora.py``'s: dora-rows, rank 16, alpha =
rank, AdamW (lr 1e-4, betas 0.9/0.95, weight decay 0.01, constant), batch 1, seed 42, 10,000
steps, a checkpoint every 500.

Where sa3 departs from the official training, on purpose (docs/lora.md, "Training a LoRA"):
a batch is padded only as far as its items' extended masks reach, not to the crop length (the
frames past them change neither the DiT's output on the others nor the loss; only the OT cost,
which counts whole items, sees fewer padding frames); the model runs in float32 unless
``loop.bf16`` (the official run keeps the frozen weights in bf16); ``crop_seconds`` defaults to
the base model's own ``sample_size`` (the official ``--duration`` default is 380 s whatever the model).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from sa3core import timebase
from sa3core.config import from_dict, merge, read_config_file, to_dict
from sa3core.errors import Sa3Error
from sa3core.lora import ADAPTER_TYPES, LoraConfig, save_lora
from training import TRAINERS
from training.base import LoopConfig, Trainer, setup_distributed
from training.data import item_seed

from .adapters import TrainableAdapter, adapter_tensors, attach_adapters
from .data import EncodedClip, encode_captions, encode_clips, scan_folder, text_encoder_id
from .objective import (
    LengthShift,
    effective_frames,
    inpaint_keep_mask,
    masked_loss,
    ot_permutation,
    silence_extension,
    truncated_logit_normal,
)

BASE_MODELS = ("small-music-base", "small-sfx-base", "medium-base")  # the released checkpoints LoRAs train on


# ----------------------------------------------------------------------------- config
@dataclass
class AdapterSettings:
    """What the adapter file records in its ``lora_config`` (sa3core.lora.LoraConfig)."""

    rank: int = 16
    alpha: float | None = None  # None: the rank (alpha / rank = 1)
    adapter_type: str = "dora-rows"  # lora, dora-rows, dora-cols, bora, and each with -xs
    dropout: float = 0.0  # on the adapter's input, training only
    include: list[str] | None = None  # adapt only layers whose name contains one of these ([a-b] ranges)
    exclude: list[str] | None = None  # ...and none of these

    def lora_config(self) -> LoraConfig:
        """Checked: one-line Sa3Errors for a bad rank, alpha, type, dropout or filter."""
        rank = self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise Sa3Error(f"rank {rank!r} must be a whole number of 1 or more (16 is the usual start)")
        alpha = rank if self.alpha is None else self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha == 0:
            raise Sa3Error(f"alpha {self.alpha!r} must be a non-zero number (the scale is alpha / rank)")
        kind = "dora-rows" if self.adapter_type == "dora" else self.adapter_type  # the official legacy name
        if kind not in ADAPTER_TYPES:
            raise Sa3Error(f"adapter type {self.adapter_type!r} is unknown; use one of {', '.join(ADAPTER_TYPES)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise Sa3Error(f"dropout {self.dropout!r} must be a number from 0 up to 1")
        filters = {}
        for key in ("include", "exclude"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, str) or not all(isinstance(p, str) and p.strip() for p in value)
            ):
                raise Sa3Error(f"{key} {value!r} must be a list of layer-name patterns")
            filters[key] = None if value is None else tuple(value)
        return LoraConfig(rank, alpha, kind, float(self.dropout), **filters)


@dataclass
class LoraLoopConfig(LoopConfig):
    """The shared loop with the official LoRA training's settings as defaults."""

    seed: int = 42
    steps: int = 10_000
    batch_size: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0  # a constant learning rate
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    checkpoint_every: int = 500


@dataclass
class LoraTrainConfig:
    """``sa3 train lora`` settings (YAML keys; flags override the common ones)."""

    base: str = ""  # a released base model name (small-music-base, ...) or a released-layout folder
    data: str = ""  # the folder of audio (and captions)
    lora: AdapterSettings = field(default_factory=AdapterSettings)
    loop: LoraLoopConfig = field(default_factory=LoraLoopConfig)
    cache: str = ""  # pre-encoded latents and text; "" = <out>/cache (point several runs at one to share it)
    crop_seconds: float = 0.0  # longest stretch trained on at once; 0 = the base model's sample_size
    flip_polarity: bool = True  # also train on each file inverted (the official random phase flip)
    cfg_dropout: float = 0.1  # share of items trained without their text (what guidance needs)
    silence_extension_seconds: float = 4.0  # mean silence counted as valid after an item's end
    context_loss_weight: float = 1.0  # weight of the loss on inpainting's kept frames (official mask_loss_weight)
    mask_probabilities: tuple[float, float, float] = (0.1, 0.8, 0.1)  # inpaint masks: segments, full, causal
    max_mask_segments: int = 10
    ot: bool = True  # minibatch optimal-transport pairing of noise to data

    def check(self) -> LoraConfig:
        lora = self.lora.lora_config()
        if not self.data:
            raise Sa3Error("no training data: give --data FOLDER (your audio files, with captions.csv or not)")
        if not self.base:
            raise Sa3Error(
                f"no base model: give --base with a released base model ({', '.join(BASE_MODELS)}) or folder"
            )
        if not (isinstance(self.crop_seconds, (int, float)) and self.crop_seconds >= 0):
            raise Sa3Error(f"crop_seconds {self.crop_seconds!r} must be 0 (the model's own length) or more")
        if not 0 <= self.cfg_dropout < 1:
            raise Sa3Error(f"cfg_dropout {self.cfg_dropout!r} must be in [0, 1)")
        probabilities = self.mask_probabilities
        if len(probabilities) != 3 or min(probabilities) < 0 or not math.isclose(sum(probabilities), 1.0):
            raise Sa3Error(
                f"mask_probabilities {list(probabilities)} must be three shares (segments, full, causal) adding up to 1"
            )
        if self.max_mask_segments < 1:
            raise Sa3Error(f"max_mask_segments {self.max_mask_segments!r} must be 1 or more")
        loop = self.loop
        for name in ("steps", "batch_size", "checkpoint_every", "grad_accum"):
            value = getattr(loop, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Sa3Error(f"{name.replace('_', ' ')} {value!r} must be a whole number of 1 or more")
        if not (isinstance(loop.lr, (int, float)) and loop.lr > 0):
            raise Sa3Error(f"learning rate {loop.lr!r} must be a number above 0 (1e-4 is the usual start)")
        return lora


# Keys a resumed run cannot change: they decide what the adapters are and what they learn from.
FIXED_ON_RESUME = ("base", "data", "lora", "crop_seconds", "flip_polarity")


def load_config(config_path: str | None, out_dir: str, resume: bool, overrides: dict[str, Any]) -> LoraTrainConfig:
    """Defaults < (on --resume) the run's saved config.json < the YAML file < the flags."""
    saved_path = Path(out_dir) / "config.json"
    saved = json.loads(saved_path.read_text()) if resume and saved_path.is_file() else {}
    data = merge(merge(saved, read_config_file(config_path) if config_path else {}), overrides)
    config = from_dict(LoraTrainConfig, data, where=f"config {config_path!r}" if config_path else "config")
    if saved:
        now = to_dict(config)
        for key in FIXED_ON_RESUME:
            if now[key] != saved.get(key):
                raise Sa3Error(
                    f"--resume: this run was started with {key} {saved.get(key)!r}, not {now[key]!r}; "
                    "that cannot change mid-run (start a new --out)"
                )
    return config


# ----------------------------------------------------------------------------- the model
class LoraModel(nn.Module):
    """The adapters (its only state) and, beside them, the frozen DiT and conditioners they adapt.

    The base modules are held outside the module tree, so checkpoints and DDP see only the
    adapters; ``forward`` runs the conditioners and the DiT as the official training does."""

    def __init__(self, dit: nn.Module, conditioners: nn.ModuleDict, diffusion, adapters: dict[str, TrainableAdapter]):
        super().__init__()
        self.adapters = nn.ModuleDict({name.replace(".", ":"): a for name, a in adapters.items()})
        self.__dict__["dit"] = dit  # not submodules: see the class docstring
        self.__dict__["conditioners"] = conditioners
        self.diffusion = diffusion
        self.prompt_id, self.seconds_id = conditioner_ids(diffusion, conditioners)

    def named_adapters(self) -> dict[str, TrainableAdapter]:
        return {key.replace(":", "."): adapter for key, adapter in self.adapters.items()}

    def forward(self, x_t, t, hidden, text_mask, seconds, local, valid, drop) -> torch.Tensor:
        """x_t [B, C, T]; t [B]; hidden [B, L, 768], text_mask bool [B, L] (the text encoder's);
        seconds [B]; local [B, C + 1, T]; valid bool [B, T]; drop bool [B] (CFG dropout) -> v [B, C, T]."""
        from sa3core.released.conditioners import assemble

        with parametrize.cached():  # each adapted weight once per step
            outputs = {
                self.prompt_id: self.conditioners[self.prompt_id](hidden, text_mask),
                self.seconds_id: self.conditioners[self.seconds_id](seconds),
            }
            context, global_cond = assemble(outputs, self.diffusion)  # (B, 257, 768), (B, 768)
            context = torch.where(drop[:, None, None], torch.zeros_like(context), context)
            cond = self.dit.encode_condition(context, global_cond)
            return self.dit(x_t, t, cond, local, valid)


def conditioner_ids(diffusion, conditioners: nn.ModuleDict) -> tuple[str, str]:
    """The prompt (t5gemma) and seconds_total (number) conditioners' ids: the released pair, nothing else."""
    from sa3core.released.conditioners import NumberConditioner, PromptConditioner

    prompt = [k for k, m in conditioners.items() if isinstance(m, PromptConditioner)]
    numbers = [k for k, m in conditioners.items() if isinstance(m, NumberConditioner)]
    if len(prompt) != 1 or numbers != ["seconds_total"] or len(conditioners) != 2:
        raise Sa3Error(
            f"the model's conditioners are {list(conditioners)}; LoRA training takes the released pair "
            "(a t5gemma prompt and seconds_total)"
        )
    return prompt[0], numbers[0]


def build_lora_model(released, lora: LoraConfig, device: torch.device, seed: int) -> LoraModel:
    """The frozen DiT and conditioners of an opened released folder on ``device``, float32, with
    fresh adapters (drawn from ``seed``: the same on every process) where ``lora`` selects."""
    from sa3core.released.checkpoint import load_conditioners, load_dit

    dit = load_dit(released).float().to(device).eval().requires_grad_(False)
    conditioners = load_conditioners(released).float().to(device).eval().requires_grad_(False)
    roots = {"model.": dit, "conditioners.": conditioners}  # the official add_lora roots (file key prefixes)
    adapters = attach_adapters(roots, lora, torch.Generator().manual_seed(seed))
    return LoraModel(dit, conditioners, released.config.model.diffusion, adapters)


def training_loss(model: nn.Module, batch: dict[str, Any], ot: bool, context_weight: float) -> dict[str, torch.Tensor]:
    """One micro-batch's loss (training.lora.objective) given its draws; ``model`` a LoraModel (or its DDP)."""
    x, noise, t, keep = batch["latents"], batch["noise"], batch["t"], batch["keep"]
    if ot and x.shape[0] > 1:
        noise = noise[ot_permutation(x, noise)]
    x_t = x * (1 - t)[:, None, None] + noise * t[:, None, None]
    local = torch.cat([keep, x * keep], dim=1)  # (B, 1 + C, T): the inpainting input
    v = model(x_t, t, batch["hidden"], batch["text_mask"], batch["seconds"], local, batch["valid"], batch["drop"])
    return masked_loss(v.float(), noise - x, batch["valid"], keep, context_weight)


# ----------------------------------------------------------------------------- the trainer
class LoraTrainer(Trainer):
    """Trains one adapter file's tensors; see the module docstring."""

    def __init__(self, config: LoraTrainConfig, out_dir: str, resume: bool = False) -> None:
        from sa3core.released.checkpoint import open_released

        self.config = config
        self.lora = config.check()
        out = Path(out_dir)
        if not resume and (out / "checkpoints" / "latest.json").exists():
            raise Sa3Error(f"run folder {str(out)!r} already has checkpoints; pass --resume or pick a new --out")
        if resume and not (out / "checkpoints" / "latest.json").exists():
            raise Sa3Error(f"--resume given but {str(out / 'checkpoints')!r} has no checkpoint; drop --resume")
        clips = scan_folder(config.data)  # the folder's errors before any model loads
        self.model_folder = resolve_base(config.base)
        self.released = open_released(self.model_folder)
        model_config = self.released.config
        diffusion = model_config.model.diffusion
        self.shift = LengthShift.from_options(diffusion.distribution_shift_options, str(self.model_folder))
        self.crop_frames = crop_frames(config.crop_seconds, model_config.sample_size)
        self.name = out.resolve().name
        dist = setup_distributed()
        progress = config.loop.progress and dist.is_main
        cache = Path(config.cache).expanduser() if config.cache else out / "cache"
        if dist.world_size > 1 and not dist.is_main:
            torch.distributed.barrier()  # rank 0 encodes; the others then read its cache
        self.clips, self.silence = self._encode_audio(clips, cache, dist.device, progress)
        self.text = self._encode_text({c.caption for c in self.clips}, cache)
        if dist.world_size > 1 and dist.is_main:
            torch.distributed.barrier()
        self._orders: dict[int, list[int]] = {}
        super().__init__(config.loop, out_dir, resume, run_config=to_dict(config))

    # ---- data ----
    def _encode_audio(self, clips, cache: Path, device: torch.device, progress: bool):
        from sa3core.released.checkpoint import autoencoder_identity
        from sa3core.released.same import ReleasedAutoencoder

        folder = self.released
        tensors = folder.parts["autoencoder"]
        chunked = folder.config.model.pretransform.chunked

        def load():
            autoencoder = ReleasedAutoencoder.from_state_dict(folder.config.autoencoder, tensors).to(device)
            return lambda audio, generator: autoencoder.encode(audio.to(device), generator, chunked=chunked)

        wrap = _progress("encoding audio") if progress else (lambda items: items)
        identity = autoencoder_identity(folder.config.autoencoder, tensors)
        return encode_clips(clips, cache, identity, load, self.config.flip_polarity, self.crop_frames, wrap, _warn)

    def _encode_text(self, captions: set[str], cache: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sa3core.released.text import load_text_encoder

        prompt = next(s for s in self.released.config.model.conditioning.configs if s.type == "t5gemma")
        text_folder = self.released.text_encoder_dir()
        dtype = torch.bfloat16  # as the official conditioner runs T5Gemma (transformers 5.x), CPU too
        identity = text_encoder_id(text_folder, prompt.config.max_length, dtype)
        return encode_captions(
            captions, cache, identity, lambda: load_text_encoder(text_folder, prompt.config.max_length, dtype).encode
        )

    def clip_at(self, index: int) -> EncodedClip:
        """The clip at place ``index`` of the endless stream: epochs of seeded shuffles of the clips."""
        count = len(self.clips)
        epoch, place = divmod(index, count)
        if epoch not in self._orders:
            seed = np.random.SeedSequence([self.loop.seed, epoch, 0x10A]).generate_state(1)[0]
            self._orders = {epoch: torch.randperm(count, generator=torch.Generator().manual_seed(int(seed))).tolist()}
        return self.clips[self._orders[epoch][place]]

    def draw_item(self, clip: EncodedClip, generator: torch.Generator) -> dict[str, Any]:
        """One item's data and random draws (in this order: polarity, crop, t, silence, inpaint
        mask, CFG dropout, noise); see training.lora.objective for what each is."""
        config = self.config
        crop = self.crop_frames
        flipped = config.flip_polarity and bool(torch.rand(1, generator=generator) < 0.5)
        latents = clip.flipped if flipped else clip.latents
        frames = latents.shape[1]
        if frames > crop:  # a random stretch of crop frames, as the official pre-encoded loader picks it
            last = frames - 1
            start = int(torch.randint(0, last - crop + 1, (1,), generator=generator)) if last > crop else 0
            latents = latents[:, start : start + crop]
        valid = latents.shape[1]
        use_length = self.released.config.model.diffusion.use_effective_length_for_schedule
        length = effective_frames(clip.seconds_total, timebase.SAMPLE_RATE, timebase.SAMPLES_PER_FRAME)
        t = truncated_logit_normal(torch.randn(1, generator=generator))
        if self.shift is not None:
            t = self.shift(t, torch.tensor([length if use_length else crop]))
        scale = config.silence_extension_seconds * timebase.SAMPLE_RATE / timebase.SAMPLES_PER_FRAME
        extended = min(valid + silence_extension(scale, generator), crop)
        keep = inpaint_keep_mask(extended, config.mask_probabilities, config.max_mask_segments, generator)
        drop = bool(torch.rand(1, generator=generator) < config.cfg_dropout)
        noise = torch.randn(latents.shape[0], crop, generator=generator)
        return {"latents": latents, "valid": valid, "extended": extended, "t": t, "keep": keep, "drop": drop,
                "noise": noise, "caption": clip.caption, "seconds": clip.seconds_total}  # fmt: skip

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items padded with the encoding of silence to the longest extended mask of the batch."""
        frames = max(item["extended"] for item in items)
        latents, keep = [], torch.zeros(len(items), 1, frames)
        for i, item in enumerate(items):
            pad = self.silence[:, : frames - item["valid"]]
            latents.append(torch.cat([item["latents"], pad], dim=1))
            keep[i, 0, : item["extended"]] = item["keep"]
        hidden, text_mask = zip(*(self.text[item["caption"]] for item in items))
        return {
            "latents": torch.stack(latents),  # (B, C, T)
            "noise": torch.stack([item["noise"][:, :frames] for item in items]),  # (B, C, T)
            "t": torch.cat([item["t"] for item in items]),  # (B,)
            "valid": torch.arange(frames)[None, :] < torch.tensor([[item["extended"]] for item in items]),  # (B, T)
            "keep": keep,  # (B, 1, T)
            "drop": torch.tensor([item["drop"] for item in items]),  # (B,)
            "hidden": torch.stack([h.float() for h in hidden]),  # (B, L, 768)
            "text_mask": torch.stack(text_mask),  # (B, L)
            "seconds": torch.tensor([float(item["seconds"]) for item in items]),  # (B,)
        }

    def get_batch(self, step: int, micro: int, generator: torch.Generator) -> dict[str, Any]:
        """This process's micro-batch of the step's global batch (every draw per item, module docstring)."""
        world, size = self.dist.world_size, self.loop.batch_size
        per_step = size * world * self.loop.grad_accum
        first = (micro * world + self.dist.rank) * size
        items = []
        for place in range(first, first + size):
            item_generator = torch.Generator().manual_seed(item_seed(self.loop.seed, step, place))
            items.append(self.draw_item(self.clip_at(step * per_step + place), item_generator))
        return self.collate(items)

    # ---- model and step ----
    def build_model(self) -> nn.Module:
        return build_lora_model(self.released, self.lora, self.device, self.loop.seed)

    def build_optimizer(self) -> torch.optim.Optimizer:
        # One group, weight decay on every adapter tensor (magnitudes too), as the official run.
        params = [p for p in self.model.parameters() if p.requires_grad]
        loop = self.loop
        return torch.optim.AdamW(params, lr=loop.lr, betas=tuple(loop.betas), weight_decay=loop.weight_decay)

    def run_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return training_loss(self.train_model, batch, self.config.ot, self.config.context_loss_weight)

    # ---- files ----
    def adapter_file(self, folder: Path, suffix: str = "") -> Path:
        return folder / f"{self.name}{suffix}.safetensors"

    def write_adapter(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_lora(path, adapter_tensors(self.model.named_adapters()), self.lora)

    def save_checkpoint(self) -> Path | None:
        path = super().save_checkpoint()
        if self.dist.is_main:
            self.write_adapter(self.adapter_file(self.out_dir / "adapters", f"-step{self.step:06d}"))
        return path

    def export(self, out_dir: Path) -> None:
        path = self.write_adapter(self.adapter_file(Path(out_dir)))
        if self.loop.progress:
            print(f"wrote {path} (use it with: sa3 generate --model {self.config.base} --lora {path})")


# ----------------------------------------------------------------------------- helpers
def resolve_base(base: str) -> Path:
    """A released base model's folder (from the Hugging Face cache, never downloaded) or a folder."""
    from sa3core.hub import resolve_model
    from sa3core.released.checkpoint import is_released_folder, read_config

    folder = resolve_model(base)
    if not folder.is_dir() or not is_released_folder(folder):
        raise Sa3Error(
            f"{base!r} is not a released Stable Audio 3 model folder; LoRA training takes a released base model "
            f"({', '.join(BASE_MODELS)}) or a folder in their layout"
        )
    config = read_config(folder)
    if not config.is_dit:
        raise Sa3Error(f"{base!r} holds an autoencoder alone; LoRA training needs a DiT ({', '.join(BASE_MODELS)})")
    diffusion = config.model.diffusion
    if diffusion.diffusion_objective != "rectified_flow":
        raise Sa3Error(
            f"{base!r} is a post-trained model; LoRAs are trained on a base model ({', '.join(BASE_MODELS)}), "
            "as the official training requires, and then work with the post-trained one too"
        )
    if not diffusion.mask_padding_attention:
        raise Sa3Error(f"{base!r} does not set mask_padding_attention; sa3 trains the released models' setting only")
    return folder


def crop_frames(crop_seconds: float, sample_size: int) -> int:
    """The crop in latent frames: ``crop_seconds`` (0: the model's ``sample_size``) rounded down to frames."""
    samples = sample_size if crop_seconds == 0 else int(crop_seconds * timebase.SAMPLE_RATE)
    frames = samples // timebase.SAMPLES_PER_FRAME
    if frames < 1:
        raise Sa3Error(f"crop_seconds {crop_seconds!r} is shorter than one latent frame (0.093 s)")
    return frames


def _progress(what: str):
    def wrap(items):
        from tqdm import tqdm

        return tqdm(items, desc=what, unit="file", dynamic_ncols=True)

    return wrap


def _warn(message: str) -> None:
    print(f"sa3 train lora: {message}", file=sys.stderr)


@TRAINERS.register("lora")
def run(config_path: str | None, out_dir: str, resume: bool = False, overrides: dict | None = None) -> None:
    """``sa3 train lora``: train from a YAML of LoraTrainConfig overrides and the flags' ``overrides``."""
    config = load_config(config_path, out_dir, resume, overrides or {})
    LoraTrainer(config, out_dir, resume).fit()
