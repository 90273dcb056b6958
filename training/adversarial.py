"""Stage 3: adversarial post-training of the distilled student (``sa3 train adversarial``).

The generator (the stage 2 student) denoises in one step from a point of the ping-pong
schedule: ``x_t = (1 - t) x0 + t noise`` with t one of the few sampling times (t = 1 is pure
noise), ``fake = x_t - t * G(x_t, t)``. Inpaint frames that are given are put back before
judging, as the pipeline splices them back. Three terms:

* **Relativistic adversarial loss** (RpGAN). Real and fake latents are re-noised with the same
  noise to one random s; a small transformer critic ``D(x_s, s, text)`` scores them.
  Critic: ``softplus(-(D(real) - D(fake)))``; generator: ``softplus(-(D(fake) - D(real)))``.
* **Contrastive loss** (critic only, as in ARC): the critic must score a real latent higher
  with its own prompt than with another item's (the batch's prompts rolled by one),
  ``softplus(-(D(real, c) - D(real, c')))``, which makes its judgement prompt-aware and so
  pushes the generator towards prompt adherence.
* **Text-audio alignment** (our stand-in for the paper's CLAP term, which needs a pretrained
  CLAP model we do not ship): the critic carries a projection from mean-pooled real frames
  to the text embedding space (mean-pooled prompt tokens), trained with a symmetric InfoNCE
  loss on real pairs. The generator minimises the same InfoNCE loss for its fakes through
  that frozen projection: its outputs must be identifiable by their own prompt in the batch.
* **Anchor** (optional, ``anchor_weight``): the squared distance of the generator's one-step
  output to that of a frozen copy of its starting point (the distilled student) on the same
  input. On the few steps a CPU affords, a small critic can push the generator anywhere that
  fools it, near-silence included; the anchor keeps it close to the student while the critic
  sharpens it.

The critic (and its projection) has its own AdamW, is checkpointed with the run, and under
DDP is wrapped in its own DistributedDataParallel. It steps once per micro-batch.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sa3core.errors import Sa3Error
from sa3core.models.dit import FourierEmbedding
from sa3core.samplers import length_shift, timesteps
from training import TRAINERS
from training.base import setup_distributed
from training.flow import ConditionedDiT, DiffusionConfig, DiffusionTrainer, build_dit, item_loss, load_stage_config


@dataclass
class CriticConfig:
    """The latent-space critic: a small pre-norm transformer over [CLS, text, frames]."""

    width: int = 256
    depth: int = 4
    heads: int = 4
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.99)  # no momentum in the first moment: the usual GAN choice
    weight_decay: float = 0.0


@dataclass
class AdversarialConfig(DiffusionConfig):
    """Stage 3 settings (plus everything in DiffusionConfig)."""

    critic: CriticConfig = field(default_factory=CriticConfig)
    adversarial_weight: float = 1.0
    contrastive_weight: float = 1.0  # critic's matched-vs-mismatched prompt term
    alignment_weight: float = 0.5  # generator's text-audio alignment term
    anchor_weight: float = 0.0  # generator's squared distance to its frozen starting point's output
    renoise_min: float = 0.02  # the critic judges at s uniform in [renoise_min, renoise_max]
    renoise_max: float = 0.98
    sample_sampler: str = "pingpong"
    sample_steps: int = 8  # the ping-pong schedule the generator trains on and samples with
    sample_cfg: float = 1.0


class Critic(nn.Module):
    """Scores (latents [B,256,T] at noise level s [B], prompt) -> [B]; also the alignment projection."""

    def __init__(self, config: CriticConfig, text_dim: int, latent_channels: int) -> None:
        super().__init__()
        w = config.width
        self.config = config
        self.proj_in = nn.Linear(latent_channels, w)
        self.text_proj = nn.Linear(text_dim, w)
        self.time_embed = FourierEmbedding(256, w)
        self.cls = nn.Parameter(torch.randn(w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, config.heads, 4 * w, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
        self.align = nn.Sequential(nn.Linear(latent_channels, w), nn.GELU(), nn.Linear(w, text_dim))
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # InfoNCE inverse temperature, exp(2.3) = 10

    def forward(self, x, s, text_tokens, text_mask, frame_mask) -> torch.Tensor:
        B = x.shape[0]
        cls = (self.cls + self.time_embed(s)).unsqueeze(1)  # (B, 1, w)
        text = self.text_proj(text_tokens.float())  # (B, L, w)
        frames = self.proj_in(x.float().transpose(1, 2))  # (B, T, w)
        tokens = torch.cat([cls, text, frames], dim=1)  # (B, 1+L+T, w)
        real = torch.cat([frame_mask.new_ones(B, 1), text_mask.bool(), frame_mask.bool()], dim=1)
        hidden = self.encoder(tokens, src_key_padding_mask=~real)
        return self.head(hidden[:, 0]).squeeze(-1).float()  # (B,)

    def audio_embedding(self, x0: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Unit vectors [B, text_dim] from clean latents' real frames."""
        mask = frame_mask.float()[:, :, None]  # (B, T, 1)
        pooled = (x0.float().transpose(1, 2) * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, 256)
        return F.normalize(self.align(pooled), dim=-1)


def text_embedding(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit vectors [B, dim]: the prompt's real tokens, mean-pooled."""
    m = mask.float()[:, :, None]
    return F.normalize((tokens.float() * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


def info_nce(audio: torch.Tensor, text: torch.Tensor, captions: list[str], log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; items with the same caption count as matches of each other (soft targets)."""
    logits = log_scale.exp().clamp(max=100.0) * audio @ text.T  # (B, B)
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32, device=audio.device)
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class AdversarialTrainer(DiffusionTrainer):
    config: AdversarialConfig

    def __init__(self, config: AdversarialConfig, out_dir: str, resume: bool = False) -> None:
        if not config.anchor_weight >= 0.0:
            raise Sa3Error(f"anchor_weight {config.anchor_weight!r} must be 0 or more")
        if not 0.0 <= config.renoise_min < config.renoise_max <= 1.0:
            raise Sa3Error(
                f"renoise_min/max {config.renoise_min}/{config.renoise_max} must satisfy 0 <= min < max <= 1"
            )
        self.config = config
        # build_model places the critic; it must sit on its device before a resume loads its state.
        self._device_early = setup_distributed().device
        super().__init__(config, out_dir, resume)
        self.train_critic: nn.Module = self.critic
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_critic = nn.parallel.DistributedDataParallel(self.critic, device_ids=ids)

    def build_model(self) -> nn.Module:
        config = self.config
        if config.init:
            generator = build_dit(config, self.text.dim, config.init)
        else:
            warnings.warn(
                "no init given: adversarial training of a random DiT (fine for smoke runs only)", stacklevel=2
            )
            generator = build_dit(config, self.text.dim)
        self.critic = Critic(config.critic, self.text.dim, generator.config.latent_channels).to(self._device_early)
        self.anchor: nn.Module | None = None
        if config.anchor_weight > 0:
            frozen = copy.deepcopy(generator).eval().requires_grad_(False)
            self.anchor = ConditionedDiT(frozen).to(self._device_early)
        self.critic_optimizer = torch.optim.AdamW(
            self.critic.parameters(),
            lr=config.critic.lr,
            betas=tuple(config.critic.betas),
            weight_decay=config.critic.weight_decay,
        )
        return ConditionedDiT(generator)

    def extra_state(self) -> dict:
        return {"critic": self.critic, "critic_optimizer": self.critic_optimizer}

    def run_step(self, batch: dict) -> dict[str, torch.Tensor]:
        config = self.config
        x0, noise, frame_mask = batch["latents"], batch["noise"], batch["frame_mask"]
        keep = batch["inpaint_mask"]  # (B, 1, T), 1 = given
        size = x0.shape[0]
        tokens, text_mask, captions = batch["text_tokens"], batch["text_mask"], batch["captions"]

        # Generator: one step from a time of the ping-pong schedule (t = 1 is pure noise).
        schedule = timesteps(config.sample_steps, length_shift(int(frame_mask.sum(1).max())))[:-1].to(x0.device)
        t = schedule[(batch["u"][:, 0] * len(schedule)).long().clamp(max=len(schedule) - 1)]  # (B,)
        x_t = (1.0 - t[:, None, None]) * x0 + t[:, None, None] * noise
        v = self.train_model(batch, x_t, t)
        fake = x_t - t[:, None, None] * v.float()
        fake = keep * x0 + (1.0 - keep) * fake  # given frames are spliced back, as the pipeline does
        fake = fake * frame_mask[:, None, :]
        anchor = torch.zeros((), device=x0.device)
        if self.anchor is not None:
            with torch.no_grad():
                start = x_t - t[:, None, None] * self.anchor(batch, x_t, t).float()
            anchor = item_loss((fake - start) ** 2, self.loss_weight(batch))

        # Both judged at one random noise level with the same noise: the relativistic pair.
        s = config.renoise_min + (config.renoise_max - config.renoise_min) * batch["u"][:, 1]  # (B,)
        renoise = s[:, None, None] * batch["renoise"]

        def noisy(latents: torch.Tensor) -> torch.Tensor:
            return (1.0 - s[:, None, None]) * latents + renoise

        # A mismatched prompt for each real item: the next item's (rolled), where it differs.
        rolled = [captions[(i + 1) % size] for i in range(size)]
        mismatched = torch.tensor([a != b for a, b in zip(captions, rolled)], device=x0.device).float()

        # ---- critic step (its own optimizer; the generator's graph is not touched) ----
        scores = self.train_critic(
            torch.cat([noisy(x0), noisy(fake.detach()), noisy(x0)]),
            s.repeat(3),
            torch.cat([tokens, tokens, tokens.roll(-1, 0)]),
            torch.cat([text_mask, text_mask, text_mask.roll(-1, 0)]),
            frame_mask.repeat(3, 1),
        )
        d_real, d_fake, d_mismatch = scores.chunk(3)
        d_adversarial = F.softplus(-(d_real - d_fake)).mean()
        d_contrastive = (F.softplus(-(d_real - d_mismatch)) * mismatched).sum() / mismatched.sum().clamp_min(1.0)
        audio = self.critic.audio_embedding(x0, frame_mask)
        align_real = info_nce(audio, text_embedding(tokens, text_mask), captions, self.critic.log_scale)
        critic_loss = d_adversarial + config.contrastive_weight * d_contrastive + align_real
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # ---- generator losses through the frozen critic ----
        self.critic.requires_grad_(False)
        try:
            g_scores = self.critic(
                torch.cat([noisy(x0), noisy(fake)]),
                s.repeat(2),
                tokens.repeat(2, 1, 1),
                text_mask.repeat(2, 1),
                frame_mask.repeat(2, 1),
            )
            g_real, g_fake = g_scores.chunk(2)
            g_adversarial = F.softplus(-(g_fake - g_real.detach())).mean()
            fake_audio = self.critic.audio_embedding(fake, frame_mask)
            align_fake = info_nce(fake_audio, text_embedding(tokens, text_mask), captions, self.critic.log_scale)
        finally:
            self.critic.requires_grad_(True)
        loss = (
            config.adversarial_weight * g_adversarial
            + config.alignment_weight * align_fake
            + config.anchor_weight * anchor
        )
        # Distance to the real item, logged only: how far the one-step output strays.
        regression = item_loss((fake.detach() - x0) ** 2, self.loss_weight(batch))
        return {
            "loss": loss,
            "g_adversarial": g_adversarial.detach(),
            "g_alignment": align_fake.detach(),
            "g_anchor": anchor.detach(),
            "d_adversarial": d_adversarial.detach(),
            "d_contrastive": d_contrastive.detach(),
            "d_alignment": align_real.detach(),
            "critic_loss": critic_loss.detach(),
            "mse_to_real": regression,
        }


@TRAINERS.register("adversarial")
def run(config_path: str | None, out_dir: str, resume: bool = False) -> None:
    """``sa3 train adversarial``: stage 3 from a YAML of AdversarialConfig overrides."""
    AdversarialTrainer(load_stage_config(AdversarialConfig, config_path), out_dir, resume).fit()
