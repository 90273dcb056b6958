"""Stage 1: flow-matching pre-training of the DiT on pre-encoded latents (``sa3 train flow``).

Objective (docs/architecture.md): ``x_t = (1 - t) x0 + t noise``; the DiT predicts
``v = noise - x0`` and the loss is the squared error of v, where:

* t is truncated logit-normal (lowest 7.5% cut) and shifted per item by its length
  (training/timesteps.py), with the same shift constants the samplers use at inference;
* noise is re-paired with data inside each micro-batch by minibatch OT (training/ot.py);
* a crop that holds its clip's true end is extended with encoded silence of an exponential
  length (mean 4 s) and the valid mask covers it (training/data.py);
* 10% of items get the empty prompt (classifier-free guidance learns the unconditional model);
* items get random inpaint masks: none, one region, several regions, continuation tail;
* the loss counts real frames only, and among them the *regenerated* frames with weight 1 and
  the kept (given) frames with ``kept_frame_weight`` (default 0): the pipeline splices the
  original latents back over kept frames, so their velocity is never used, and spending
  capacity on copying them would teach nothing;
* each item's loss is its weighted mean over frames and channels, then items are averaged:
  a 1 s one-shot counts as much as a 30 s loop, and the loss of a global batch does not
  depend on how processes split it (DDP gives the same gradient as one process).

Every random draw of a step depends only on (seed, step, item position in the global batch),
so a resumed run and a run on a different number of processes see the same items, noise,
timesteps and masks. :class:`DiffusionTrainer` holds what all three diffusion stages share.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa3core import checkpoint, timebase
from sa3core.config import from_dict, merge, read_config_file, to_dict
from sa3core.errors import Sa3Error
from sa3core.models.dit import DiT, DiTConfig, dit_preset
from sa3core.musical import MusicAttributes, music_rows
from training import TRAINERS
from training.base import LoopConfig, Trainer, step_generator
from training.data import LatentCorpus, LatentCropConfig, item_seed, load_batch, plan_batch
from training.masks import MaskConfig, random_inpaint_masks
from training.ot import ot_couple
from training.timesteps import TimestepConfig, training_timesteps


@dataclass
class DiffusionConfig:
    """Settings every diffusion stage shares (YAML keys at the top level of a stage config)."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    corpus: str = ""  # folder written by `sa3 data encode`; "smoke" renders a tiny corpus in a temp folder
    split: str = "train"
    data: LatentCropConfig = field(default_factory=LatentCropConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    preset: str = "tiny"  # DiT size preset
    dit: dict = field(default_factory=dict)  # overrides of the preset's DiTConfig fields
    init: str = ""  # a dit.safetensors to start from ("" = random init, or the teacher for distill)
    text_encoder: str = "minilm"  # a name in sa3core.text.TEXT_ENCODERS
    autoencoder: str = ""  # the same.safetensors that encoded the corpus: decodes TensorBoard samples
    sample_sampler: str = "dpmpp"  # how TensorBoard samples are drawn and what the exported model.json says
    sample_steps: int = 15
    sample_cfg: float = 5.0
    sample_seconds: float = 4.0


@dataclass
class FlowConfig(DiffusionConfig):
    """Stage 1 settings; see the module docstring for what each does."""

    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    cond_dropout: float = 0.1  # chance an item gets the empty prompt (and no musical attributes)
    ot: bool = True  # minibatch optimal-transport coupling of noise to data
    ot_epsilon: float = 0.05  # Sinkhorn entropy, relative to the mean cost
    ot_iterations: int = 20
    kept_frame_weight: float = 0.0  # loss weight of inpaint frames given to the model (regenerated = 1)


# Each attribute a tag gives is withheld this often, so the model also serves prompts that
# name only some of them; captions seldom name the meter, so it is withheld most.
TEMPO_DROPOUT, KEY_DROPOUT, METER_DROPOUT = 0.2, 0.2, 0.5


def drop_attributes(attributes: MusicAttributes, gen: torch.Generator) -> MusicAttributes:
    """``attributes`` with tempo, key and meter each withheld at random (draws from ``gen``)."""
    tempo, key, meter = (
        torch.rand(3, generator=gen) < torch.tensor([TEMPO_DROPOUT, KEY_DROPOUT, METER_DROPOUT])
    ).tolist()
    return MusicAttributes(
        bpm=None if tempo else attributes.bpm,
        tonic=None if key else attributes.tonic,
        mode=None if key else attributes.mode,
        quarters_per_bar=None if meter else attributes.quarters_per_bar,
    )


def load_stage_config(cls: type, path: str | None) -> Any:
    """The stage's dataclass with the YAML file's overrides (unknown keys are errors naming them)."""
    overrides = read_config_file(path) if path else {}
    return from_dict(cls, overrides, where=f"config {path!r}" if path else "config")


class ConditionedDiT(nn.Module):
    """The DiT with its condition encoder in one ``forward``, so DDP sees every parameter used."""

    def __init__(self, dit: DiT) -> None:
        super().__init__()
        self.dit = dit
        self.config = dit.config

    def forward(self, batch: dict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self.dit.encode_condition(batch["text_tokens"], batch["text_mask"], batch["seconds"], batch.get("music"))
        return self.dit(x, t, cond, batch["latents"], batch["inpaint_mask"], batch["frame_mask"])


class TextCache:
    """Frozen text encoder with one cached embedding per caption (captions repeat every epoch)."""

    def __init__(self, name: str) -> None:
        from sa3core.text import TEXT_ENCODERS

        self.encoder = TEXT_ENCODERS.get(name)()
        self.dim = self.encoder.dim
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens float32 [B, L, dim], mask bool [B, L]) padded to the batch's longest prompt."""
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            tokens, mask = self.encoder.encode(missing)
            for i, caption in enumerate(missing):
                length = max(1, int(mask[i].sum()))  # the empty prompt keeps its one masked position
                self.cache[caption] = (tokens[i, :length].float().cpu(), mask[i, :length].cpu())
        longest = max(self.cache[c][0].shape[0] for c in captions)
        tokens = torch.zeros(len(captions), longest, self.dim)
        mask = torch.zeros(len(captions), longest, dtype=torch.bool)
        for i, caption in enumerate(captions):
            item_tokens, item_mask = self.cache[caption]
            tokens[i, : len(item_mask)] = item_tokens
            mask[i, : len(item_mask)] = item_mask
        return tokens, mask


def resolve_corpus(config: DiffusionConfig) -> tuple[Path, nn.Module | None]:
    """The latent folder, and the autoencoder that made it when one is known (for audio logs)."""
    from training.smoke import build_latent_corpus, tiny_autoencoder

    if config.corpus == "smoke":
        autoencoder = tiny_autoencoder(seed=0)
        folder = Path(tempfile.mkdtemp(prefix="sa3-smoke-corpus-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # a smoke corpus lives as long as its run
        return build_latent_corpus(folder, autoencoder, clips=12, seed=0, max_seconds=4.0), autoencoder
    if not config.corpus:
        raise Sa3Error("config has no corpus; set `corpus:` to a folder from `sa3 data encode` (or 'smoke')")
    import sa3core.models.same  # noqa: F401  (registers the "same" model kind)

    autoencoder = checkpoint.load_model(config.autoencoder, expect_kind="same")[0] if config.autoencoder else None
    return Path(config.corpus), autoencoder


def build_dit(config: DiffusionConfig, text_dim: int, init: str = "") -> DiT:
    """A DiT from the preset + overrides, or loaded from ``init``; its text width must match the encoder."""
    if init:
        dit, _ = checkpoint.load_model(init, expect_kind="dit")
        if config.dit:
            raise Sa3Error(f"`dit:` overrides cannot change a model loaded from {init!r}; remove them")
    else:
        fields = merge(to_dict(dit_preset(config.preset)), {"text_dim": text_dim, **config.dit})
        dit = DiT(from_dict(DiTConfig, fields, where="config dit"))
    if dit.config.text_dim != text_dim:
        raise Sa3Error(
            f"the DiT takes {dit.config.text_dim}-wide text but text encoder {config.text_encoder!r} gives {text_dim}; "
            "use the encoder it was trained with"
        )
    return dit.train()


def item_loss(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over items of each item's weighted mean squared error.

    error: [B, C, T] (squared errors); weight: [B, T] (0 on padding). Returns a scalar.
    """
    per_frame = error.float().mean(1)  # (B, T)
    per_item = (per_frame * weight).sum(1) / weight.sum(1).clamp_min(1e-8)  # (B,)
    return per_item.mean()


class DiffusionTrainer(Trainer):
    """Shared parts of the diffusion stages: corpus, text cache, batches, export, audio samples."""

    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig, out_dir: str, resume: bool = False) -> None:
        self.config = config
        self.text = TextCache(config.text_encoder)
        corpus_dir, self.autoencoder = resolve_corpus(config)
        self.corpus = LatentCorpus(corpus_dir, config.split)
        self.max_frames = timebase.seconds_to_frames(config.data.max_seconds)
        self.empty_prompt = self.text.encode([""])
        super().__init__(config.loop, out_dir, resume, run_config=to_dict(config))

    # ---- batches ----
    def get_batch(self, step: int, micro: int, generator: torch.Generator) -> dict:
        """This process's slice of the step's global batch; all randomness per item (see module doc)."""
        world, size = self.dist.world_size, self.loop.batch_size
        plans = plan_batch(
            self.corpus, size * world * self.loop.grad_accum, self.config.data, step_generator(self.loop.seed, step)
        )
        first = (micro * world + self.dist.rank) * size
        batch = load_batch(self.corpus, plans[first : first + size])
        frames = batch["frame_mask"].shape[1]
        lengths = batch["frame_mask"].sum(1)
        noise, renoise, t, u, masks, captions, attributes = [], [], [], [], [], [], []
        for i in range(size):
            gen = torch.Generator().manual_seed(item_seed(self.loop.seed, step, first + i))
            # Noise for the longest possible item, cut to this batch: an item's noise never
            # depends on its neighbours, and OT re-pairing never hands an item padding zeros.
            longest = max(frames, self.max_frames + 1)
            noise.append(torch.randn(timebase.LATENT_CHANNELS, longest, generator=gen)[:, :frames])
            renoise.append(torch.randn(timebase.LATENT_CHANNELS, longest, generator=gen)[:, :frames])
            t.append(self.draw_t(lengths[i : i + 1], gen))
            u.append(torch.rand(2, generator=gen))
            mask, _ = random_inpaint_masks(batch["frame_mask"][i : i + 1], self.config.masks, gen)
            masks.append(mask)
            dropped = torch.rand(1, generator=gen).item() < self.cond_dropout
            captions.append("" if dropped else batch["captions"][i])
            attributes.append(MusicAttributes() if dropped else drop_attributes(batch["attributes"][i], gen))
        tokens, text_mask = self.text.encode(captions)
        batch.update(
            noise=torch.stack(noise),
            renoise=torch.stack(renoise),
            t=torch.cat(t),
            u=torch.stack(u),
            inpaint_mask=torch.cat(masks),
            text_tokens=tokens,
            text_mask=text_mask,
            captions=captions,
            music=music_rows(attributes, batch["start_frames"]),
        )
        return batch

    cond_dropout = 0.0

    def draw_t(self, frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(1, generator=gen)

    def loss_weight(self, batch: dict) -> torch.Tensor:
        """[B, T]: 1 on regenerated real frames, ``kept`` weight on given ones, 0 on padding."""
        kept = getattr(self.config, "kept_frame_weight", 0.0)
        keep = batch["inpaint_mask"][:, 0]  # (B, T)
        return batch["frame_mask"].float() * ((1.0 - keep) + kept * keep)

    # ---- sampling, export, logs ----
    def velocity_fn(self, dit: DiT, batch: dict, guidance: float, inpaint: bool = True, rescale: float = 0.0):
        """A sampler's ``velocity_fn(x, t)`` for ``dit`` on ``batch``'s prompts, with CFG when guidance != 1
        (``rescale`` as in :func:`sa3core.samplers.cfg_velocity`)."""
        from sa3core.models.dit import Condition
        from sa3core.samplers import cfg_velocity

        cond = dit.encode_condition(batch["text_tokens"], batch["text_mask"], batch["seconds"], batch.get("music"))
        size = batch["seconds"].shape[0]
        empty_tokens, empty_mask = (x.to(self.device).expand(size, *x.shape[1:]) for x in self.empty_prompt)
        uncond = dit.encode_condition(empty_tokens, empty_mask, batch["seconds"]) if guidance != 1.0 else None
        both = Condition.cat([cond, uncond]) if uncond is not None else cond
        keep = batch["inpaint_mask"] if inpaint else torch.zeros_like(batch["inpaint_mask"])
        frame_mask = batch["frame_mask"]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if uncond is None:
                return dit(x, t, cond, batch["latents"], keep, frame_mask)
            twice = [torch.cat([a, a]) for a in (x, t, batch["latents"], keep, frame_mask)]
            v_cond, v_uncond = dit(twice[0], twice[1], both, *twice[2:]).chunk(2)
            return cfg_velocity(v_cond, v_uncond, guidance, rescale, x, t)

        return velocity

    def export(self, out_dir: Path) -> None:
        """``out_dir/model``: dit.safetensors (EMA weights), model.json, and same.safetensors when known."""
        from sa3core.families.sa3 import ModelSettings

        folder = Path(out_dir) / "model"
        dit = self.ema_model().dit
        checkpoint.save_model(folder / "dit.safetensors", "dit", dit, extra={"stage": type(self).__name__})
        if self.autoencoder is not None:
            checkpoint.save_model(folder / "same.safetensors", "same", self.autoencoder)
        settings = ModelSettings(
            name=f"{Path(out_dir).name}",
            text_encoder=self.config.text_encoder,
            sampler=self.config.sample_sampler,
            steps=self.config.sample_steps,
            cfg=self.config.sample_cfg,
        )
        (folder / "model.json").write_text(json.dumps(to_dict(settings), indent=2) + "\n")

    @torch.no_grad()
    def log_samples(self, writer: Any, step: int) -> None:
        """Sample one clip per prompt with the EMA weights; audio when the autoencoder is known."""
        from sa3core.samplers import SAMPLERS

        config = self.config
        dit = self.ema_model().dit.to(self.device)
        frames = min(self.max_frames, timebase.seconds_to_frames(config.sample_seconds))
        prompts = [self.corpus.caption(0)]
        tokens, mask = self.text.encode(prompts)
        batch = {
            "text_tokens": tokens.to(self.device),
            "text_mask": mask.to(self.device),
            "seconds": torch.full((1,), timebase.samples_to_seconds(timebase.frames_to_samples(frames))),
            "latents": torch.zeros(1, timebase.LATENT_CHANNELS, frames),
            "inpaint_mask": torch.zeros(1, 1, frames),
            "frame_mask": torch.ones(1, frames, dtype=torch.bool),
        }
        batch = self.to_device(batch)
        noise = torch.randn(1, timebase.LATENT_CHANNELS, frames, generator=torch.Generator().manual_seed(0))
        sampler = SAMPLERS.get(config.sample_sampler)()
        velocity = self.velocity_fn(dit, batch, config.sample_cfg)
        latents = sampler.sample(velocity, noise.to(self.device), config.sample_steps, torch.Generator().manual_seed(1))
        writer.add_scalar("sample/latent_std", latents.std().item(), step)
        if self.autoencoder is None:
            return
        audio = self.autoencoder.to(self.device).decode(latents)[0].float().clamp(-1, 1)  # (2, samples)
        writer.add_audio("sample/" + prompts[0][:40], audio.mean(0, keepdim=True).cpu(), step, timebase.SAMPLE_RATE)


class FlowTrainer(DiffusionTrainer):
    """Stage 1: velocity regression with the augmentations in the module docstring."""

    config: FlowConfig

    def __init__(self, config: FlowConfig, out_dir: str, resume: bool = False) -> None:
        if not 0.0 <= config.cond_dropout < 1.0:
            raise Sa3Error(f"cond_dropout {config.cond_dropout!r} must be in [0, 1)")
        self.cond_dropout = config.cond_dropout
        super().__init__(config, out_dir, resume)

    def build_model(self) -> nn.Module:
        return ConditionedDiT(build_dit(self.config, self.text.dim, self.config.init))

    def draw_t(self, frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return training_timesteps(frames, self.config.timesteps, gen)

    def run_step(self, batch: dict) -> dict[str, torch.Tensor]:
        config = self.config
        x0, noise, mask = batch["latents"], batch["noise"], batch["frame_mask"]
        if config.ot:
            noise = ot_couple(x0, noise, mask, config.ot_epsilon, config.ot_iterations)
        t = batch["t"][:, None, None]  # (B, 1, 1)
        x_t = (1.0 - t) * x0 + t * noise
        v = self.train_model(batch, x_t, batch["t"])
        loss = item_loss((v.float() - (noise - x0)) ** 2, self.loss_weight(batch))
        return {"loss": loss}


@TRAINERS.register("flow")
def run(config_path: str | None, out_dir: str, resume: bool = False) -> None:
    """``sa3 train flow``: train stage 1 from a YAML of FlowConfig overrides."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage.*")
        FlowTrainer(load_stage_config(FlowConfig, config_path), out_dir, resume).fit()
