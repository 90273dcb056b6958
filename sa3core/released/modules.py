"""Layers of the released SAME autoencoders (Stable Audio 3's SAME-S and SAME-L).

Each module's parameter names are the released checkpoint's names, so a state dict loads 1:1
(see :func:`sa3core.released.same.load_released_state_dict`). What each layer computes was
settled by reading the official implementation (Stability-AI/stable-audio-3, MIT); none of its
code is copied here.

- :class:`DynamicTanh`: ``gamma * tanh(alpha * x) + beta`` (alpha a scalar, initialised to 4).
  It replaces every norm of the blocks and the per-head query/key norm; no epsilon.
- :class:`DifferentialSelfAttention`: ``to_qkv`` gives (q, k, v, q_diff, k_diff) in that order;
  q and q_diff (k and k_diff) share one DynamicTanh over the head dims, then RoPE rotates the
  first half of each head's dims, then ``out = softmax(q k^T/sqrt(d)) v - softmax(q_diff k_diff^T
  /sqrt(d)) v`` (no lambda, no sub-norm), then ``to_out``. No biases.
- RoPE (:class:`RotaryTable`): "rotate half" pairing, angles ``position * inv_freq`` from the
  checkpoint's ``rope.inv_freq`` (16 values for 64-dim heads), positions counted from 0 at the
  first token of each attention unit: a SAME-S chunk restarts them, a SAME-L window does not.
- :class:`GLUFeedForward`: ``ff.ff.0.proj`` (D -> 2*3D with bias: first half value, second half
  gate), ``value * act(gate)`` with act = SiLU or ``sin(pi * gate)`` (the "sinusoidal" blocks of
  the SAME-L decoder), then ``ff.ff.2`` (3D -> D with bias). ``ff.ff.1`` is empty.
- :class:`WeightNormConv1d`: old-style weight norm (``weight_g`` [out, 1, 1], ``weight_v``
  [out, in, k], optional ``bias``); the effective weight ``v * g / ||v||`` (norm over all dims
  but the first) is formed on each call, so no second copy of the weights is kept.

Shapes: tokens are ``[B, N, D]``; heads ``[B, H, N, 64]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.rope import apply_rope

# The official sinusoidal gate multiplies by this literal, not by math.pi.
_PI_AS_RELEASED = 3.14159265359


def scaled_randn(shape: tuple[int, ...], std: float) -> torch.Tensor:
    """Normal draws with standard deviation ``std`` (a random model's initial weights). On the
    meta device (models built to take a checkpoint's weights) nothing is drawn or computed:
    arithmetic there imports torch._dynamo, 1.3 s of a cold start."""
    x = torch.empty(shape)  # torch.randn on the meta device would import sympy (0.3 s)
    return x if x.is_meta else x.normal_().mul_(std)


class DynamicTanh(nn.Module):
    """``gamma * tanh(alpha * x) + beta`` over the last dim. Params: alpha [1], gamma, beta [dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), 4.0))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.tanh(self.alpha * x) + self.beta


class RotaryTable(nn.Module):
    """Holds ``inv_freq`` [rotary_dims/2] (a checkpoint buffer, kept float32) and makes float32
    angle tables from it. Shared by the SAME blocks and the released DiT."""

    def __init__(self, rotary_dims: int, base: float = 10_000.0) -> None:
        super().__init__()
        # Made on the CPU even while the model is built on the meta device, where arithmetic
        # would import torch._dynamo (1.3 s of a cold start); the checkpoint's values replace it.
        exponents = torch.arange(0, rotary_dims, 2, device="cpu").float() / rotary_dims
        self.register_buffer("inv_freq", 1.0 / base**exponents)

    def _apply(self, fn, recurse=True):
        # .half()/.to(bfloat16) must not round the frequencies (at position 4,000 a bf16 frequency
        # is off by radians; a SAME-L window spans 2,176 positions); device moves still apply.
        exact = self.inv_freq
        super()._apply(fn, recurse)
        self.inv_freq = exact.to(self.inv_freq.device)
        return self

    def cos_sin(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 cos and sin, each [length, rotary_dims/2], for positions 0..length-1."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        return angles.cos(), angles.sin()


def band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, left: int, right: int, block: int = 256):
    """Softmax attention where query i sees keys i-left .. i+right (inclusive) of the same sequence.

    q, k, v: [B, H, N, d] -> [B, H, N, d]. Queries go in blocks of ``block`` with a halo of keys
    on each side, so memory grows with N * (block + left + right), not N^2; the result equals one
    masked softmax over the whole sequence.
    """
    B, H, N, d = q.shape
    if N <= block:
        pos = torch.arange(N, device=q.device)
        delta = pos[None, :] - pos[:, None]  # (N queries, N keys)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=(delta >= -left) & (delta <= right))
    blocks = -(-N // block)
    padded = blocks * block
    width = block + left + right
    q = F.pad(q, (0, 0, 0, padded - N)).reshape(B * H, blocks, block, d)
    k = F.pad(k, (0, 0, left, padded - N + right)).unfold(2, width, block)  # (B, H, blocks, d, width)
    v = F.pad(v, (0, 0, left, padded - N + right)).unfold(2, width, block)
    k = k.transpose(-1, -2).reshape(B * H, blocks, width, d)
    v = v.transpose(-1, -2).reshape(B * H, blocks, width, d)
    local_q = torch.arange(block, device=q.device)
    local_k = torch.arange(width, device=q.device)
    in_band = (local_k[None, :] - local_q[:, None] >= 0) & (local_k[None, :] - local_q[:, None] <= left + right)
    start = torch.arange(blocks, device=q.device)[:, None] * block
    key_pos = start + local_k[None, :] - left  # (blocks, width) absolute key positions
    query_pos = start + local_q[None, :]  # (blocks, block)
    key_real = (key_pos >= 0) & (key_pos < N)
    # Padded queries (discarded below) may see their padded selves, so no row is empty.
    mask = in_band[None] & (key_real[:, None, :] | (query_pos >= N)[:, :, None])  # (blocks, block, width)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*H, blocks, block, d)
    return out.reshape(B, H, padded, d)[:, :, :N]


class DifferentialSelfAttention(nn.Module):
    """Differential self-attention with DynamicTanh QK norm and partial RoPE (see module docstring).

    Params: ``to_qkv`` [5D, D], ``to_out`` [D, D], ``q_norm``/``k_norm`` DynamicTanh(head_dim).
    Attention runs in float32 whatever the weights' dtype: the difference of two softmaxes
    cancels most of their magnitude and half precision would keep little but rounding.
    """

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not a multiple of the head size {head_dim}")
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.to_qkv = nn.Linear(dim, 5 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = DynamicTanh(head_dim)
        self.k_norm = DynamicTanh(head_dim)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, window: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """x [B, N, D]; cos/sin [N, rotary/2] float32; window (left, right) in tokens or None (all)."""
        B, N, D = x.shape
        q, k, v, q_diff, k_diff = self.to_qkv(x).chunk(5, dim=-1)  # each (B, N, D)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

        q = self.q_norm(torch.stack([heads(q), heads(q_diff)], dim=1))  # (B, 2, H, N, hd)
        k = self.k_norm(torch.stack([heads(k), heads(k_diff)], dim=1))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # float32
        v = heads(v).float()

        def attend(q1: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
            if window is None:
                return F.scaled_dot_product_attention(q1, k1, v)
            return band_attention(q1, k1, v, *window)

        out = attend(q[:, 0], k[:, 0]) - attend(q[:, 1], k[:, 1])  # (B, H, N, hd)
        out = out.transpose(1, 2).reshape(B, N, D).to(x.dtype)
        return self.to_out(out)


class _GLUProjection(nn.Module):
    """Holds ``proj`` (D -> 2 * inner, with bias) under the released name ``ff.ff.0.proj``."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)


class GLUFeedForward(nn.Module):
    """``ff.ff.2(value * act(gate))`` with ``value, gate = ff.ff.0.proj(x).chunk(2)``.

    act is SiLU, or ``sin(pi * gate)`` when ``sinusoidal``. inner = int(dim * mult).
    """

    def __init__(self, dim: int, mult: float, sinusoidal: bool) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.sinusoidal = sinusoidal
        self.ff = nn.ModuleList([_GLUProjection(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.ff[0].proj(x).chunk(2, dim=-1)  # (B, N, inner) each
        gate = torch.sin(_PI_AS_RELEASED * gate) if self.sinusoidal else F.silu(gate)
        return self.ff[2](value * gate)


class SameBlock(nn.Module):
    """Pre-norm block: ``x += attn(pre_norm(x))``; ``x += ff(ff_norm(x))``. RoPE restarts at x[:, 0]."""

    def __init__(self, dim: int, head_dim: int, ff_mult: float, sinusoidal: bool) -> None:
        super().__init__()
        self.pre_norm = DynamicTanh(dim)
        self.self_attn = DifferentialSelfAttention(dim, head_dim)
        self.ff_norm = DynamicTanh(dim)
        self.ff = GLUFeedForward(dim, ff_mult, sinusoidal)
        self.rope = RotaryTable(head_dim // 2)

    def forward(self, x: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]; window (left, right) in tokens, or None for all N tokens."""
        cos, sin = self.rope.cos_sin(x.shape[1], x.device)
        x = x + self.self_attn(self.pre_norm(x), cos, sin, window)
        return x + self.ff(self.ff_norm(x))


class WeightNormConv1d(nn.Module):
    """Conv1d with old-style weight norm and "same" padding (kernel 1 or 3 in the released files).

    x [B, in, T] -> [B, out, T]. Params: weight_g [out, 1, 1], weight_v [out, in, k], bias [out].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} must be odd for symmetric 'same' padding")
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(
            scaled_randn((out_channels, in_channels, kernel), 1 / math.sqrt(in_channels * kernel))
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v.float()  # the norm in float32 whatever the weights' dtype
        weight = v * (self.weight_g.float() / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        return F.conv1d(x, weight.to(x.dtype), self.bias, padding=v.shape[-1] // 2)
