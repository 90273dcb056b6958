"""The released Stable Audio 3 DiT (small; medium with differential attention), official numerics.

Reading order: the condition cache, norm and rotary tables, attention, feed-forward, one block,
the model. Module names are the released ones under ``model.model.``, so the checkpoint's state
dict loads 1:1 (:mod:`sa3core.released.checkpoint`). Read from the official implementation
(Stability-AI/stable-audio-3, MIT); none of its code is copied.

What one forward computes (E = embed_dim, M = memory tokens, T = latent frames):
- global: ``to_global_embed(global conditions) + to_timestep_embed(expo features of t)``, then
  ``transformer.global_cond_embedder`` -> ``[B, 6E]``; context: ``to_cond_embed(tokens)``, no mask.
- ``x + preprocess_conv(x)``, ``project_in``, M memory tokens prepended; RoPE (fp32, rotate-half,
  the checkpoint's ``inv_freq``, positions from 0 at the first memory token) on the first 32
  dims of every query/key of self-attention, after the QK RMSNorm; none in cross-attention.
- block: ``(scale, shift, gate) x 2 = to_scale_shift_gate + global``;
  ``x += sigmoid(1 - gate) * attn(norm(x) * (1 + scale) + shift)``; ``x += cross(norm(x))``;
  ``x[M:] += to_local_embed(local)`` (always, also for a zero local input); then the same
  modulated form for the SwiGLU feed-forward (``ff.ff.0.proj``: first half value, second gate).
- differential attention: ``softmax(q k^T) v - softmax(q_diff k_diff^T) v``, no lambda, where
  q_diff/k_diff are full-width projections sharing the q/k norm.
- output: drop the memory tokens, ``project_out``, ``+ postprocess_conv``; a velocity.

Where sa3 departs from the official code, on purpose: a zero local input (plain generation) is
one row through ``to_local_embed`` broadcast to every frame (the same numbers up to float32
rounding, 5e-7 relative on random weights; ~5 % fewer FLOPs); and at half precision the timestep
stays float32 up to its features and ``inv_freq`` stays float32 (the official fp16 path rounds
both, which moves the highest-frequency angles by radians). At float32 with a local input the
output equals the official one bit for bit on random weights.

Padding (``frame_mask``): the semantics the weights were trained with (flash-attention varlen):
padded frames leave every self-attention softmax, and self-attention and the feed-forward write
exactly zero at padded positions. Cross-attention and the local input still reach padded
frames, as in training, so their outputs are defined (not zero): the SAME decoder sees them.
Real frames never depend on padded ones (tests/released/test_dit.py). The official CPU path
differs: it only multiplies padded values by zero, which changes real frames too.

Why a second DiT beside :mod:`sa3core.models.dit` (one class was weighed and rejected; each
item is a different computation, not a renaming a state-dict mapping could absorb):
1. differential attention: sa3 splits each 64-dim head into two 32-dim halves with a learned
   lambda and a per-head sub-norm scaled by (1 - lambda_init); released q_diff/k_diff are extra
   full-width projections (to_qkv 5E), no lambda, no sub-norm, RoPE on 32 of 64 dims of each;
2. modulation: sa3 ``SiLU -> Linear(E, 6E)``, order (shift, scale, gate), ``sigmoid(gate)``, a
   final norm + modulation before the output; released ``Linear -> SiLU -> Linear(E, 6E)``, order
   (scale, shift, gate), ``sigmoid(1 - gate)``, no final norm or modulation;
3. conditioning: sa3 RMSNorm + one Linear on text, a learned null token, a key mask, a duration
   token embedded by learned-frequency Fourier features, music rows; released an MLP
   (``to_cond_embed``) over 257 unmasked tokens, a number conditioner, ``to_global_embed``;
4. residual 1x1 convs around the transformer, bias-free projections, norm eps 1e-5 (sa3 1e-6).
Options for all of that would turn one forward into two interleaved ones (the string-switch
style STYLE.md warns against) and folding the released layers into sa3's would change the order
of rounding, so exact parity could not be promised. What both share lives in
:mod:`sa3core.modules` (``rope.apply_rope``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.rope import apply_rope
from .conditioners import ExpoFourierFeatures
from .config import ReleasedDiTConfig
from .modules import RotaryTable

# The logSNR range the official code maps t into when ``timestep_features_logsnr`` is set.
_LOGSNR_MIN, _LOGSNR_MAX = -12.0, 5.0


# ----------------------------------------------------------------------------- condition cache
@dataclass
class ReleasedCondition:
    """What does not depend on x or t, computed once per request by :meth:`ReleasedDiT.encode_condition`.

    ``global_embed`` [B, E] (before the timestep is added); per block ``keys`` [B, splits, H, S,
    head_dim] (normalised) and ``values`` [B, H, S, head_dim]; splits = 2 with differential attention.
    """

    global_embed: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.global_embed.shape[0]

    @staticmethod
    def cat(conds: list[ReleasedCondition]) -> ReleasedCondition:
        """Concatenate along the batch (every released context has the same length)."""
        return ReleasedCondition(
            global_embed=torch.cat([c.global_embed for c in conds]),
            keys=[torch.cat(k) for k in zip(*(c.keys for c in conds))],
            values=[torch.cat(v) for v in zip(*(c.values for c in conds))],
        )


# ----------------------------------------------------------------------------- norm, rotary tables
class RMSNorm(nn.Module):
    """RMSNorm over the last dim with weight ``gamma``; in float32 when ``force_fp32``."""

    def __init__(self, dim: int, eps: float, force_fp32: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.eps, self.force_fp32 = eps, force_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.force_fp32:
            return F.rms_norm(x.float(), x.shape[-1:], self.gamma.float(), self.eps).to(x.dtype)
        # The weight in x's dtype: a float32 weight on bf16 input (the q/k norms under autocast)
        # takes torch's slow unfused path, with a warning.
        return F.rms_norm(x, x.shape[-1:], self.gamma.to(x.dtype), self.eps)


# ----------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Multi-head attention with QK RMSNorm, optionally differential; no biases.

    Self-attention: ``to_qkv`` gives (q, k, v) or (q, k, v, q_diff, k_diff). Cross-attention:
    ``to_q`` gives (q) or (q, q_diff), ``to_kv`` (k, v) or (k, k_diff, v).
    """

    def __init__(self, dim: int, head_dim: int, differential: bool, qk_eps: float, cross: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.splits = 2 if differential else 1
        if cross:
            self.to_q = nn.Linear(dim, dim * self.splits, bias=False)
            self.to_kv = nn.Linear(dim, dim * (self.splits + 1), bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * (1 + 2 * self.splits), bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, qk_eps)
        self.k_norm = RMSNorm(head_dim, qk_eps)

    def _heads(self, *parts: torch.Tensor) -> torch.Tensor:
        """each (B, N, H*hd) -> stacked (B, len(parts), H, N, hd)."""
        B, N, _ = parts[0].shape
        return torch.stack([p.view(B, N, self.heads, self.head_dim).transpose(1, 2) for p in parts], dim=1)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, S, E] -> (k [B, splits, H, S, hd] normalised, v [B, H, S, hd]); cached per request."""
        parts = self.to_kv(context).chunk(self.splits + 1, dim=-1)  # k, (k_diff), v
        k, v = self._heads(*parts[:-1]), self._heads(parts[-1])[:, 0]
        return self.k_norm(k), v

    def cross(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x [B, N, E] attends to the cached context (every context token is real)."""
        q = self.q_norm(self._heads(*self.to_q(x).chunk(self.splits, dim=-1)))  # (B, splits, H, N, hd)
        return self._attend(q, k, v, None)

    def self_attend(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None):
        """x [B, N, E]; cos/sin float32 [N, rot/2]; mask bool [B, N] (True = real) or None."""
        parts = self.to_qkv(x).chunk(1 + 2 * self.splits, dim=-1)  # q, k, v, (q_diff, k_diff)
        q = self._heads(*parts[0::3])  # q (, q_diff): chunks 0 (and 3)
        k = self._heads(*parts[1::3])  # k (, k_diff): chunks 1 (and 4)
        v = parts[2]
        q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, cos, sin).to(v.dtype)  # RoPE in float32, back to the working dtype
        k = apply_rope(k, cos, sin).to(v.dtype)
        key_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) over keys
        out = self._attend(q, k, self._heads(v)[:, 0], key_mask)  # (B, N, E)
        return out if mask is None else torch.where(mask[..., None], out, 0.0)  # padded queries write 0

    def _attend(self, q, k, v, key_mask) -> torch.Tensor:
        """q [B, splits, H, Nq, hd], k [B, splits, H, Nk, hd], v [B, H, Nk, hd] -> [B, Nq, E]."""
        out = F.scaled_dot_product_attention(q[:, 0], k[:, 0], v, attn_mask=key_mask)  # (B, H, Nq, hd)
        if self.splits == 2:
            out = out - F.scaled_dot_product_attention(q[:, 1], k[:, 1], v, attn_mask=key_mask)
        B, H, N, hd = out.shape
        return self.to_out(out.transpose(1, 2).reshape(B, N, H * hd))  # (B, Nq, E)


# ----------------------------------------------------------------------------- feed-forward
class _GLUProjection(nn.Module):
    """Holds ``proj`` (E -> 2 * inner) under the released name ``ff.ff.0.proj``."""

    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner, bias=bias)


class FeedForward(nn.Module):
    """SwiGLU: ``ff.ff.2(value * silu(gate))`` with ``value, gate = ff.ff.0.proj(x).chunk(2)``."""

    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.ff = nn.ModuleList([_GLUProjection(dim, inner, bias), nn.Identity(), nn.Linear(inner, dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.ff[0].proj(x).chunk(2, dim=-1)  # (B, N, inner) each
        return self.ff[2](value * F.silu(gate))


# ----------------------------------------------------------------------------- block
class TransformerBlock(nn.Module):
    """adaLN block: modulated self-attention, cross-attention, local input, modulated SwiGLU."""

    def __init__(self, config: ReleasedDiTConfig) -> None:
        super().__init__()
        E, norm, attn = config.embed_dim, config.norm_kwargs, config.attn_kwargs
        self.pre_norm = RMSNorm(E, norm.eps, norm.force_fp32)
        self.self_attn = Attention(E, config.head_dim, attn.differential, attn.qk_norm_eps, cross=False)
        self.cross_attend_norm = RMSNorm(E, norm.eps, norm.force_fp32)
        self.cross_attn = Attention(E, config.head_dim, attn.differential, attn.qk_norm_eps, cross=True)
        self.ff_norm = RMSNorm(E, norm.eps, norm.force_fp32)
        self.ff = FeedForward(E, config.ff_inner, bias=not config.ff_kwargs.no_bias)
        self.to_scale_shift_gate = nn.Parameter(torch.zeros(6 * E))
        self.to_local_embed = None
        if config.local_add_cond_dim is not None:
            self.to_local_embed = nn.Sequential(nn.Linear(config.local_add_cond_dim, E), nn.SiLU(), nn.Linear(E, E))

    def forward(self, x, global_cond, cos, sin, mask, keys, values, local, memory: int) -> torch.Tensor:
        """x [B, M+T, E]; global_cond [B, 6E]; mask bool [B, M+T] or None; local [B, T or 1, C] or None."""
        modulation = (self.to_scale_shift_gate + global_cond).unsqueeze(1).chunk(6, dim=-1)  # 6 x (B, 1, E)
        scale_attn, shift_attn, gate_attn, scale_ff, shift_ff, gate_ff = modulation
        h = self.pre_norm(x) * (1 + scale_attn) + shift_attn
        x = x + self.self_attn.self_attend(h, cos, sin, mask) * torch.sigmoid(1 - gate_attn)
        x = x + self.cross_attn.cross(self.cross_attend_norm(x), keys, values)
        if self.to_local_embed is not None:
            added = self.to_local_embed(local)  # (B, T, E), or (B, 1, E) for an all-zero local input
            x = torch.cat([x[:, :memory], x[:, memory:] + added], dim=1)  # memory tokens get nothing
        h = self.ff(self.ff_norm(x) * (1 + scale_ff) + shift_ff)
        if mask is not None:
            h = torch.where(mask[..., None], h, 0.0)  # the feed-forward writes 0 at padded frames
        return x + h * torch.sigmoid(1 - gate_ff)


class _Transformer(nn.Module):
    """Holds the ``transformer.*`` weights; :class:`ReleasedDiT` runs them."""

    def __init__(self, config: ReleasedDiTConfig) -> None:
        super().__init__()
        E = config.embed_dim
        self.project_in = nn.Linear(config.io_channels, E, bias=False)
        self.project_out = nn.Linear(E, config.io_channels, bias=False)
        self.rotary_pos_emb = RotaryTable(config.rotary_dims)
        if config.num_memory_tokens:
            self.memory_tokens = nn.Parameter(torch.zeros(config.num_memory_tokens, E))
        self.global_cond_embedder = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, 6 * E))
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.depth))


# ----------------------------------------------------------------------------- model
class ReleasedDiT(nn.Module):
    """The released DiT; predicts a velocity (``denoised = x - t * v``). See the module docstring."""

    def __init__(self, config: ReleasedDiTConfig) -> None:
        super().__init__()
        self.config = config
        E, C = config.embed_dim, config.io_channels
        self.timestep_features = ExpoFourierFeatures(config.timestep_features_dim)
        self.to_timestep_embed = nn.Sequential(nn.Linear(config.timestep_features_dim, E), nn.SiLU(), nn.Linear(E, E))
        self.to_cond_embed = nn.Sequential(
            nn.Linear(config.cond_token_dim, E, bias=False), nn.SiLU(), nn.Linear(E, E, bias=False)
        )
        self.to_global_embed = nn.Sequential(
            nn.Linear(config.global_cond_dim, E, bias=False), nn.SiLU(), nn.Linear(E, E, bias=False)
        )
        self.transformer = _Transformer(config)
        self.preprocess_conv = nn.Conv1d(C, C, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(C, C, 1, bias=False)

    def encode_condition(self, context: torch.Tensor, global_cond: torch.Tensor) -> ReleasedCondition:
        """context [B, S, cond_token_dim] (prompt tokens + seconds token), global_cond [B, global_cond_dim]."""
        if context.shape[-1] != self.config.cond_token_dim or global_cond.shape[-1] != self.config.global_cond_dim:
            raise ValueError(
                f"context {tuple(context.shape)} / global {tuple(global_cond.shape)} do not match the DiT's "
                f"cond_token_dim {self.config.cond_token_dim} / global_cond_dim {self.config.global_cond_dim}"
            )
        tokens = self.to_cond_embed(context)  # (B, S, E)
        cached = [block.cross_attn.project_context(tokens) for block in self.transformer.layers]
        keys, values = (list(kv) for kv in zip(*cached)) if cached else ([], [])
        return ReleasedCondition(self.to_global_embed(global_cond), keys, values)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: ReleasedCondition,
        local_cond: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, io_channels, T]; t [B] or scalar in [0, 1]; local_cond [B, local_add_cond_dim, T]
        (concat(mask, mask * latents)) or None for all zeros; frame_mask bool [B, T] or None.
        Returns the velocity, float32 [B, io_channels, T] (padded frames: see the module docstring)."""
        B, C, T = x.shape
        M = self.config.num_memory_tokens
        if C != self.config.io_channels or cond.batch_size != B:
            raise ValueError(
                f"x {tuple(x.shape)} does not match io_channels {self.config.io_channels} / batch {cond.batch_size}"
            )
        t = t.float().reshape(-1).expand(B)
        if self.config.timestep_features_logsnr:  # normalised logSNR in [0, 1], t=0 -> 0, t=1 -> 1
            clamped = t.clamp(1e-7, 1 - 1e-7)
            logsnr = torch.log((1 - clamped) / clamped).clamp(_LOGSNR_MIN, _LOGSNR_MAX)
            t = (_LOGSNR_MAX - logsnr) / (_LOGSNR_MAX - _LOGSNR_MIN)
        # t stays float32 up to the features: the official code first rounds it to the model's dtype,
        # which at half precision moves the 10^4-frequency angles by radians (same at float32).
        timestep = self.to_timestep_embed(self.timestep_features(t).to(x.dtype))  # (B, E)
        global_cond = self.transformer.global_cond_embedder(cond.global_embed + timestep)  # (B, 6E)

        h = x + self.preprocess_conv(x)  # (B, C, T)
        tokens = self.transformer.project_in(h.transpose(1, 2))  # (B, T, E)
        if M:
            tokens = torch.cat([self.transformer.memory_tokens.to(tokens.dtype).expand(B, -1, -1), tokens], dim=1)
        mask = None
        if frame_mask is not None:
            always = frame_mask.new_ones(B, M, dtype=torch.bool)  # memory tokens are always real
            mask = torch.cat([always, frame_mask.bool()], dim=1)  # (B, M+T)
        cos, sin = self.transformer.rotary_pos_emb.cos_sin(M + T, x.device)

        local = None
        if self.config.local_add_cond_dim is not None:
            if local_cond is None:  # all zeros: every frame gets the same row, computed once
                local = x.new_zeros(B, 1, self.config.local_add_cond_dim)
            else:
                local = local_cond.to(x.dtype).transpose(1, 2)  # (B, T, local_add_cond_dim)

        for block, keys, values in zip(self.transformer.layers, cond.keys, cond.values, strict=True):
            tokens = block(tokens, global_cond, cos, sin, mask, keys, values, local, M)

        out = self.transformer.project_out(tokens[:, M:]).transpose(1, 2)  # (B, C, T)
        return (out + self.postprocess_conv(out)).float()


def parameter_count(config: ReleasedDiTConfig) -> int:
    """Parameters of a released DiT with ``config``, without allocating its weights."""
    with torch.device("meta"):
        return sum(p.numel() for p in ReleasedDiT(config).parameters())
