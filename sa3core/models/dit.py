"""The diffusion transformer (DiT): predicts flow-matching velocity for SAME latents.

Reading order: config and presets, the condition cache, the conditioning embedders, one
block, the model.

Contracts (docs/architecture.md):
- ``encode_condition(text_tokens [B,L,text_dim], text_mask bool [B,L], seconds [B]) -> Condition``
  runs once per request: text projection, the duration embedding and token, and every block's
  cross-attention keys/values, so sampler steps never recompute them.
- ``forward(x [B,256,T], t [B], cond, inpaint_latents [B,256,T], inpaint_mask [B,1,T],
  frame_mask bool [B,T]) -> v float32 [B,256,T]``; ``v = noise - x0``; padded frames return 0.
- A text row whose mask is all False is unconditional: it attends to a learned null token
  (plus the duration token), so no softmax is ever over nothing.
- Padding never changes the real frames: padded frames are removed from the keys in the
  softmax, and nothing else mixes frames (norms are per token, RoPE positions start at the
  first memory token, so a frame's position does not depend on the batch's length).
- The model predicts velocity only: classifier-free guidance, dropout and timestep shifts live
  in the samplers and trainers.
- Precision: run under ``torch.autocast("cpu", torch.bfloat16)`` for bf16 matmuls; norms, RoPE
  angles and the differential-attention softmaxes stay float32 inside the layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import timebase
from ..checkpoint import MODELS, ModelKind
from ..errors import Sa3Error
from ..modules.attention import CrossAttention, RMSNorm, SelfAttention
from ..modules.rope import rope_angles
from ..musical import MUSIC_DIM
from ..registry import Registry


@dataclass(frozen=True)
class DiTConfig:
    """Constructor schema of :class:`DiT` (saved inside every checkpoint)."""

    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_dim: int = 1024  # SwiGLU inner width
    text_dim: int = 384  # the text encoder's token width (minilm: 384)
    latent_channels: int = timebase.LATENT_CHANNELS
    memory_tokens: int = 64
    differential: bool = False  # differential attention in self- and cross-attention
    inpaint: bool = True  # per-block MLPs reading concat(mask, mask * latents)
    inpaint_dim: int = 0  # hidden width of those MLPs; 0 = width
    fourier_dim: int = 256  # Fourier features for the timestep and the duration
    rope_base: float = 10_000.0
    max_seconds: float = timebase.MAX_SECONDS  # the duration embedding's input is seconds / max_seconds
    music: bool = False  # tempo/key/meter numbers (sa3core.musical): a global embedding and per-frame beat phases


DIT_PRESETS: Registry[DiTConfig] = Registry("DiT preset")
DIT_PRESETS.register("tiny")(DiTConfig(music=True))
DIT_PRESETS.register("small")(DiTConfig(width=1024, depth=20, heads=16, mlp_dim=4096, music=True))
DIT_PRESETS.register("medium")(DiTConfig(width=1536, depth=24, heads=24, mlp_dim=6144, differential=True, music=True))
DIT_PRESETS.register("large")(DiTConfig(width=2048, depth=32, heads=32, mlp_dim=8192, differential=True, music=True))


def dit_preset(name: str) -> DiTConfig:
    """The config of a size preset: tiny (CPU-trainable), small, medium, large."""
    return DIT_PRESETS.get(name)


# ----------------------------------------------------------------------------- condition cache
@dataclass
class Condition:
    """Everything that does not depend on x or t, computed once per request.

    ``duration``: [B, width] global-condition part from the duration (and, with ``music``, the
    tempo and key); ``mask``: bool [B, S] over the context (duration token, null token, text
    tokens); ``keys``/``values``: one entry per block, k float32 ``(B, H, splits, S, qk_dim)``,
    v ``(B, H, S, head_dim)``; ``music``: the [B, 27] rows of :mod:`sa3core.musical` (their
    beat columns drive the per-frame beat phases), None for a DiT without music conditioning.
    """

    duration: torch.Tensor
    mask: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    music: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def repeat(self, times: int) -> Condition:
        """The whole batch ``times`` times over, like ``torch.cat([x] * times)``."""
        return Condition.cat([self] * times)

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        """Concatenate along the batch; shorter contexts are padded with masked-out keys."""
        length = max(c.mask.shape[1] for c in conds)

        def padded(tensor: torch.Tensor, dim: int, c: Condition) -> torch.Tensor:
            extra = length - c.mask.shape[1]
            if extra == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = extra
            return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)

        depth = len(conds[0].keys)
        music = None
        if any(c.music is not None for c in conds):
            music = torch.cat(
                [c.duration.new_zeros(c.batch_size, MUSIC_DIM) if c.music is None else c.music for c in conds]
            )
        return Condition(
            duration=torch.cat([c.duration for c in conds]),
            mask=torch.cat([padded(c.mask, 1, c) for c in conds]),
            keys=[torch.cat([padded(c.keys[i], 3, c) for c in conds]) for i in range(depth)],
            values=[torch.cat([padded(c.values[i], 2, c) for c in conds]) for i in range(depth)],
            music=music,
        )


# ----------------------------------------------------------------------------- embedders
class FourierEmbedding(nn.Module):
    """A scalar in about [0, 1] -> [B, width]: learned-frequency Fourier features then an MLP."""

    def __init__(self, fourier_dim: int, width: int) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.randn(fourier_dim // 2))
        self.mlp = nn.Sequential(nn.Linear(fourier_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * value.float()[:, None] * self.freqs.float()[None, :]  # (B, fourier_dim/2)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


def beat_features(music: torch.Tensor, frames: int) -> torch.Tensor:
    """music [B, 27] -> [B, frames, 8]: per latent frame, the beat phase (sin, cos), the half-bar
    phase of 2 beats, the bar phase, and flags for a known tempo and a known meter; all zero
    where the tempo is unknown. Frame f sits at beat ``start + f * beats_per_frame``."""
    per_frame, start, bar = music[:, 24:25].float(), music[:, 25:26].float(), music[:, 26:27].float()
    index = torch.arange(frames, device=music.device, dtype=torch.float32)[None, :]  # (1, T)
    beats = start + index * per_frame  # (B, T)
    known = (per_frame > 0).float().expand_as(beats)
    has_bar = (bar > 0).float().expand_as(beats)
    bar_turns = beats / bar.clamp_min(1.0)
    angles = [2 * math.pi * beats, math.pi * beats]
    parts = [torch.sin(a) * known for a in angles] + [torch.cos(a) * known for a in angles]
    parts += [torch.sin(2 * math.pi * bar_turns) * has_bar, torch.cos(2 * math.pi * bar_turns) * has_bar]
    return torch.stack([*parts, known, has_bar], dim=-1)


class SwiGLU(nn.Module):
    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * inner)  # fused: one matmul for gate and value
        self.down = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


# ----------------------------------------------------------------------------- block
class DiTBlock(nn.Module):
    """Pre-RMSNorm block: modulated self-attention, cross-attention, inpaint MLP, modulated SwiGLU."""

    def __init__(self, config: DiTConfig, layer: int) -> None:
        super().__init__()
        w = config.width
        self.norm_attn = RMSNorm(w)
        self.attn = SelfAttention(w, config.heads, config.differential, layer)
        self.norm_cross = RMSNorm(w)
        self.cross = CrossAttention(w, config.heads, w, config.differential, layer)
        self.inpaint = None
        if config.inpaint:
            hidden = config.inpaint_dim or w
            self.inpaint = nn.Sequential(nn.Linear(config.latent_channels + 1, hidden), nn.SiLU(), nn.Linear(hidden, w))
        self.norm_mlp = RMSNorm(w)
        self.mlp = SwiGLU(w, config.mlp_dim)
        # AdaLN-Single: the shared modulation plus this block's learned offsets.
        self.mod_offset = nn.Parameter(torch.zeros(6, w))

    def forward(self, x, modulation, cos, sin, self_mask, keys, values, cross_mask, inpaint_in, memory):
        """x [B, M+T, width]; modulation [B, 6, width]; inpaint_in [B, T or 1, 257] or None; memory = M."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (modulation + self.mod_offset).unsqueeze(2).unbind(1)
        h = self.norm_attn(x) * (1 + scale_a) + shift_a  # each modulation term is (B, 1, width)
        x = x + torch.sigmoid(gate_a) * self.attn(h, cos, sin, self_mask)
        x = x + self.cross(self.norm_cross(x), keys, values, cross_mask)
        if self.inpaint is not None:
            added = self.inpaint(inpaint_in)  # (B, T, width), or (B, 1, width) when nothing is kept
            x = torch.cat([x[:, :memory], x[:, memory:] + added], dim=1)  # memory tokens get nothing
        h = self.norm_mlp(x) * (1 + scale_m) + shift_m
        return x + torch.sigmoid(gate_m) * self.mlp(h)


# ----------------------------------------------------------------------------- model
class DiT(nn.Module):
    """Velocity-predicting transformer over SAME latents; see the module docstring for the contract."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        w, c = config.width, config.latent_channels
        if (w // config.heads) % (4 if config.differential else 2):
            raise Sa3Error(f"DiT width {w} with {config.heads} heads leaves a head size RoPE cannot split")
        self.proj_in = nn.Linear(c, w)
        self.memory = nn.Parameter(torch.randn(config.memory_tokens, w) * 0.02)
        self.time_embed = FourierEmbedding(config.fourier_dim, w)
        self.duration_embed = FourierEmbedding(config.fourier_dim, w)
        self.text_norm = RMSNorm(config.text_dim)
        self.text_proj = nn.Linear(config.text_dim, w)
        self.null_token = nn.Parameter(torch.randn(w) * 0.02)  # stands in for an empty prompt
        if config.music:  # tonic + scale -> width (zero when unknown), tempo, per-frame beat phases
            self.tonality_embed = nn.Linear(24, w, bias=False)
            self.tempo_embed = FourierEmbedding(config.fourier_dim, w)
            self.beat_in = nn.Linear(8, w)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))  # ONE, shared by all blocks
        self.blocks = nn.ModuleList(DiTBlock(config, layer + 1) for layer in range(config.depth))
        self.norm_out = RMSNorm(w)
        self.mod_out = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.proj_out = nn.Linear(w, c)
        self.rotary_dims = w // config.heads // (2 if config.differential else 1) // 2  # half of each (sub-)head

    def encode_condition(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        seconds: torch.Tensor,
        music: torch.Tensor | None = None,
    ) -> Condition:
        """text_tokens [B, L, text_dim], text_mask bool [B, L] (all False = unconditional), seconds [B],
        music [B, 27] (:mod:`sa3core.musical`; None = nothing known; ignored without ``config.music``)."""
        B, L, D = text_tokens.shape
        if D != self.config.text_dim:
            raise Sa3Error(
                f"text tokens have width {D} but this DiT expects {self.config.text_dim}; use its text encoder"
            )
        if text_mask.shape != (B, L) or seconds.shape != (B,):
            raise ValueError(
                f"text_mask {tuple(text_mask.shape)} / seconds {tuple(seconds.shape)} do not match B={B}, L={L}"
            )
        text_mask = text_mask.bool()
        duration = self.duration_embed(seconds.float() / self.config.max_seconds)  # (B, width)
        if self.config.music:
            music = seconds.new_zeros(B, MUSIC_DIM) if music is None else music.float()
            if music.shape != (B, MUSIC_DIM):
                raise ValueError(f"music {tuple(music.shape)} must be [B={B}, {MUSIC_DIM}] (see sa3core.musical)")
            per_frame = music[:, 24]
            known = (per_frame > 0).float()[:, None]
            bpm = per_frame.clamp_min(1e-3) * 60.0 * timebase.SAMPLE_RATE / timebase.SAMPLES_PER_FRAME
            tempo = self.tempo_embed(torch.log2(bpm / 120.0) / 2.0 + 0.5) * known  # 60 bpm -> 0, 240 -> 1
            duration = duration + self.tonality_embed(music[:, :24]) + tempo
        else:
            music = None
        text = torch.where(text_mask[..., None], text_tokens.float(), 0.0)  # junk in padding never reaches a key
        text = self.text_proj(self.text_norm(text))  # (B, L, width)
        null = self.null_token.to(text.dtype).expand(B, 1, -1)
        context = torch.cat([duration[:, None].to(text.dtype), null, text], dim=1)  # (B, 2+L, width)
        unconditional = ~text_mask.any(dim=1, keepdim=True)  # (B, 1)
        mask = torch.cat([torch.ones_like(unconditional), unconditional, text_mask], dim=1)  # (B, 2+L)
        keys, values = zip(*(block.cross.project_context(context) for block in self.blocks), strict=True)
        return Condition(duration=duration, mask=mask, keys=list(keys), values=list(values), music=music)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Condition,
        inpaint_latents: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity float32 [B, 256, T]. None for the inpaint inputs means "regenerate everything"
        (mask 0), None for frame_mask means every frame is real."""
        B, C, T = x.shape
        M = self.config.memory_tokens
        if C != self.config.latent_channels:
            raise ValueError(f"x has {C} channels, the DiT expects {self.config.latent_channels}")
        if cond.batch_size != B:
            raise ValueError(f"condition batch {cond.batch_size} != x batch {B}; use Condition.repeat/cat")
        t = t.float().reshape(-1).expand(B)

        tokens = self.proj_in(x.transpose(1, 2))  # (B, T, width)
        if self.config.music:
            music = cond.music if cond.music is not None else x.new_zeros(B, MUSIC_DIM)
            tokens = tokens + self.beat_in(beat_features(music, T)).to(tokens.dtype)
        tokens = torch.cat([self.memory.to(tokens.dtype).expand(B, -1, -1), tokens], dim=1)  # (B, M+T, width)
        self_mask = None
        if frame_mask is not None:
            always = frame_mask.new_ones(B, M, dtype=torch.bool)  # memory tokens are always real
            self_mask = torch.cat([always, frame_mask.bool()], dim=1)  # (B, M+T)
        cos, sin = rope_angles(M + T, self.rotary_dims, self.config.rope_base, device=x.device)

        inpaint_in = None
        if self.config.inpaint:
            if inpaint_mask is None or _nothing_kept(inpaint_mask):
                # Every frame's inpaint input is zero, so each block's inpaint MLP gives the same
                # row for all frames: compute it once (plain generation saves ~5 % of the FLOPs).
                inpaint_in = x.new_zeros(B, 1, C + 1)
            else:
                latents = x.new_zeros(B, C, T) if inpaint_latents is None else inpaint_latents
                inpaint_in = torch.cat([inpaint_mask, inpaint_mask * latents], dim=1).transpose(1, 2)  # (B, T, 257)

        condition = self.time_embed(t) + cond.duration.float()  # (B, width): the AdaLN-Single input
        modulation = self.modulation(condition).view(B, 6, -1)  # (B, 6, width)
        for block, keys, values in zip(self.blocks, cond.keys, cond.values, strict=True):
            tokens = block(tokens, modulation, cos, sin, self_mask, keys, values, cond.mask, inpaint_in, M)

        shift, scale = self.mod_out(condition)[:, None].chunk(2, dim=-1)  # (B, 1, width) each
        out = self.proj_out(self.norm_out(tokens[:, M:]) * (1 + scale) + shift)  # (B, T, 256)
        v = out.float().transpose(1, 2)  # (B, 256, T)
        if frame_mask is not None:
            v = v * frame_mask[:, None, :].to(v.dtype)
        return v


def _nothing_kept(inpaint_mask: torch.Tensor) -> bool:
    """True when the inpaint mask keeps no frame. Never while tracing for export: a data-dependent
    shortcut would be frozen into the graph for whatever the example input was."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    return not bool(inpaint_mask.any())


def parameter_count(config: DiTConfig) -> int:
    """Number of parameters of a DiT with ``config``, without allocating its weights."""
    with torch.device("meta"):
        return sum(p.numel() for p in DiT(config).parameters())


MODELS.register("dit")(ModelKind(DiTConfig, DiT))
