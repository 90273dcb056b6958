"""Attention layers of the DiT: self-attention (QK-RMSNorm, partial RoPE) and cross-attention
(cached keys/values), each optionally *differential*.

Contracts shared by both:
- ``x`` is ``[B, S, width]``; a key mask is ``bool [B, S_keys]`` with True = a real key.
  Padding is removed inside the softmax through SDPA's ``attn_mask``, never by zeroing values,
  so a padded key gets exactly zero weight and cannot change any real output.
  Every row must have at least one real key (the DiT guarantees it: memory tokens and the
  duration token are always real).
- QK-RMSNorm and RoPE run in float32 whatever autocast says; the plain attention then runs in
  the value dtype (bf16 under autocast), differential attention's two softmaxes in float32
  because their difference cancels most of the magnitude and bf16 would leave only noise.
- Differential attention (Ye et al., 2024, "Differential Transformer"): each head's query and
  key are split into two halves, ``out = softmax(q1 k1) v - lambda * softmax(q2 k2) v`` with a
  learned ``lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init`` per layer, then a per-head
  RMSNorm scaled by ``1 - lambda_init``. By linearity it is two SDPA calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm  # noqa: F401  (re-exported: the DiT imports it from here)
from .rope import apply_rope


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim, computed in float32; returns float32."""
    return F.rms_norm(x.float(), (x.shape[-1],), None if weight is None else weight.float(), eps)


def lambda_init_for(layer: int) -> float:
    """The Differential Transformer's depth schedule, ``0.8 - 0.6 exp(-0.3 (layer - 1))``, 1-based."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """bool [B, S] -> SDPA mask [B, 1, 1, S]; None when nothing is masked (faster kernels).

    While tracing for export the mask is always kept: a data-dependent shortcut would be frozen
    into the graph for whatever the example input was."""
    if mask is None:
        return None
    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    if not exporting and bool(mask.all()):
        return None
    return mask[:, None, None, :]


class _Attention(nn.Module):
    """Shared part: normalise q/k per head, run (differential) SDPA, merge heads."""

    def __init__(self, width: int, heads: int, differential: bool, layer: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.differential = differential
        self.splits = 2 if differential else 1
        if self.head_dim % (2 * self.splits):
            raise ValueError(f"head_dim {self.head_dim} must be divisible by {2 * self.splits}")
        self.qk_dim = self.head_dim // self.splits  # dims of each (sub-)query/key
        self.q_norm = nn.Parameter(torch.ones(self.qk_dim))
        self.k_norm = nn.Parameter(torch.ones(self.qk_dim))
        self.out = nn.Linear(width, width)
        if differential:
            self.lambda_init = lambda_init_for(layer)
            self.lambda_q = nn.Parameter(torch.randn(2, self.qk_dim) * 0.1)
            self.lambda_k = nn.Parameter(torch.randn(2, self.qk_dim) * 0.1)
            self.sub_norm = nn.Parameter(torch.ones(self.head_dim))

    def split_qk(self, qk: torch.Tensor, norm: torch.Tensor, cos=None, sin=None) -> torch.Tensor:
        """(B, H, S, head_dim) -> float32 (B, H, splits, S, qk_dim), normalised (and rotated)."""
        B, H, S, _ = qk.shape
        qk = qk.view(B, H, S, self.splits, self.qk_dim).transpose(2, 3)  # (B, H, splits, S, qk_dim)
        qk = rms_norm(qk, norm)
        if cos is not None:
            qk = apply_rope(qk, cos, sin)
        return qk

    def attend(self, q, k, v, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """q (B,H,splits,Sq,qk_dim), k (B,H,splits,Sk,qk_dim) float32, v (B,H,Sk,head_dim) -> (B, Sq, width).

        ``dtype`` is the query stream's dtype (bf16 under autocast); cached cross-attention values
        made under another precision are cast to it."""
        attn_mask = _key_mask(mask)
        v = v.to(dtype)
        if not self.differential:
            out = F.scaled_dot_product_attention(q[:, :, 0].to(v.dtype), k[:, :, 0].to(v.dtype), v, attn_mask=attn_mask)
        else:
            with torch.autocast(v.device.type, enabled=False):
                vf = v.float()
                a1 = F.scaled_dot_product_attention(q[:, :, 0], k[:, :, 0], vf, attn_mask=attn_mask)
                a2 = F.scaled_dot_product_attention(q[:, :, 1], k[:, :, 1], vf, attn_mask=attn_mask)
                lq, lk = self.lambda_q.float(), self.lambda_k.float()
                lam = torch.exp((lq[0] * lk[0]).sum()) - torch.exp((lq[1] * lk[1]).sum()) + self.lambda_init
                out = rms_norm(a1 - lam * a2, self.sub_norm) * (1.0 - self.lambda_init)  # (B, H, Sq, head_dim)
            out = out.to(v.dtype)
        B, H, Sq, D = out.shape
        out = out.transpose(1, 2).reshape(B, Sq, H * D)  # (B, Sq, width)
        return self.out(out)


class SelfAttention(_Attention):
    """Self-attention with a fused QKV projection, QK-RMSNorm and partial RoPE."""

    def __init__(self, width: int, heads: int, differential: bool = False, layer: int = 1) -> None:
        super().__init__(width, heads, differential, layer)
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, S, width]; cos/sin float32 [S, rotary_dims/2] (see rope.py); mask bool [B, S] or None."""
        B, S, _ = x.shape
        qkv = self.qkv(x).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, S, head_dim)
        q = self.split_qk(qkv[0], self.q_norm, cos, sin)
        k = self.split_qk(qkv[1], self.k_norm, cos, sin)
        return self.attend(q, k, qkv[2], mask, qkv.dtype)


class CrossAttention(_Attention):
    """Cross-attention to a context whose keys/values are computed once (``project_context``)."""

    def __init__(self, width: int, heads: int, context_dim: int, differential: bool = False, layer: int = 1) -> None:
        super().__init__(width, heads, differential, layer)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim, 2 * width)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, S, context_dim] -> (k float32 (B,H,splits,S,qk_dim), v (B,H,S,head_dim)), cached per request."""
        B, S, _ = context.shape
        kv = self.kv(context).view(B, S, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, S, head_dim)
        return self.split_qk(kv[0], self.k_norm), kv[1]

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, Sq, width]; k, v from :meth:`project_context`; mask bool [B, S_context]."""
        B, Sq, _ = x.shape
        q = self.q(x).view(B, Sq, self.heads, self.head_dim).transpose(1, 2)  # (B, H, Sq, head_dim)
        return self.attend(self.split_qk(q, self.q_norm), k, v, mask, q.dtype)
