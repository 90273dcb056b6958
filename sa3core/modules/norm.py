"""Normalisation layers shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in float32 (bf16 squares lose too much), cast back."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class RunningNorm(nn.Module):
    """Per-channel normalisation by running mean and variance (no affine), for latents [B, C, T].

    Training forward passes (with grad enabled) update the statistics by an exponential moving
    average of the batch's statistics; every pass, training or not, normalises by the *running*
    values, so an item's latent never depends on what else is in its batch and encoding is
    deterministic. The point is to hand the diffusion model roughly zero-mean, unit-variance
    latents whatever scale the encoder drifts to.
    """

    def __init__(self, channels: int, momentum: float = 0.01, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)  # (C, B*T)
                self.mean.lerp_(flat.mean(dim=1), self.momentum)
                self.var.lerp_(flat.var(dim=1, unbiased=False), self.momentum)
        scale = torch.rsqrt(self.var + self.eps)
        return (x - self.mean[:, None].to(x.dtype)) * scale[:, None].to(x.dtype)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latents back to the encoder's raw scale."""
        return z * torch.sqrt(self.var + self.eps)[:, None].to(z.dtype) + self.mean[:, None].to(z.dtype)
