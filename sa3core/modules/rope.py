"""Partial rotary position embedding (RoPE) for self-attention.

Only the first ``rotary_dims`` of each head's dims rotate; the rest carry content with no
position, which the SA3 DiT uses (half of each head). Angles are always computed and applied
in float32: at 380 s (about 4,100 latent frames plus memory tokens) bf16 keeps too few
mantissa bits for ``position * frequency`` and neighbouring frames would share an angle.
"""

from __future__ import annotations

import torch


def rope_angles(
    positions: int, rotary_dims: int, base: float = 10_000.0, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each float32 ``[positions, rotary_dims // 2]`` for positions 0..positions-1."""
    if rotary_dims % 2:
        raise ValueError(f"rotary_dims must be even, got {rotary_dims}")
    exponents = torch.arange(0, rotary_dims, 2, dtype=torch.float32, device=device) / rotary_dims
    inv_freq = base**-exponents  # (rotary_dims/2,)
    pos = torch.arange(positions, dtype=torch.float32, device=device)
    angles = pos[:, None] * inv_freq[None, :]  # (positions, rotary_dims/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of ``x [..., S, head_dim]``; returns float32.

    Pairs are (i, i + rotary_dims/2) ("rotate half" layout); the remaining dims pass through.
    """
    half = cos.shape[-1]
    if torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad or sin.requires_grad):  # training
        x = x.float()
        a, b, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin, rest], dim=-1)
    # Written into one float32 output (no concatenation of three temporaries, and a bf16 input
    # is converted a slice at a time): the same operations in the same order, so the same bits.
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    a, b = x[..., :half].float(), x[..., half : 2 * half].float()
    first, second = out[..., :half], out[..., half : 2 * half]
    torch.mul(a, cos, out=first).sub_(b * sin)  # a cos - b sin
    torch.mul(b, cos, out=second).add_(a * sin)  # b cos + a sin
    out[..., 2 * half :] = x[..., 2 * half :]
    return out
