"""Training timesteps for flow matching: truncated logit-normal draws and the length shift.

Convention (docs/architecture.md): ``x_t = (1 - t) * x0 + t * noise``; t = 1 is pure noise.

* :func:`sample_logit_normal` draws ``t = sigmoid(mean + std * z)`` with ``z`` normal, truncated
  so that the lowest ``cut`` fraction of the distribution (the nearly clean end) never occurs.
  The truncation is exact: we draw the CDF value uniformly from ``[cut, 1)`` and invert it.
* :func:`length_shift` maps an item's length in latent frames to a shift factor ``s >= 1``
  that grows monotonically with length, and :func:`shift_timesteps` warps ``t`` with
  ``t' = s t / (1 + (s - 1) t)``: longer audio spends more of its time at high noise, where
  its global structure is decided. The same warp is meant for samplers at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sa3core.errors import Sa3Error


@dataclass
class TimestepConfig:
    """How training timesteps are drawn (all fields are overrides in the stage YAML)."""

    mean: float = 0.0  # location of the logit-normal, in logit units
    std: float = 1.0  # scale of the logit-normal, in logit units
    cut: float = 0.075  # lowest fraction of the distribution removed (official implementation: 7.5%)
    shift_min: float = 1.0  # shift for items of ``frames_min`` frames or fewer
    shift_max: float = 3.0  # shift for items of ``frames_max`` frames or more
    frames_min: int = 32  # about 3 s
    frames_max: int = 2048  # about 190 s

    def __post_init__(self) -> None:
        if not 0.0 <= self.cut < 1.0:
            raise Sa3Error(f"timesteps.cut {self.cut!r} must be in [0, 1); it is the fraction of low t removed")
        if self.std <= 0:
            raise Sa3Error(f"timesteps.std {self.std!r} must be positive")
        if not 1.0 <= self.shift_min <= self.shift_max:
            raise Sa3Error(
                f"timesteps.shift_min {self.shift_min!r} and shift_max {self.shift_max!r} must satisfy 1 <= min <= max"
            )
        if not 0 < self.frames_min < self.frames_max:
            raise Sa3Error(
                f"timesteps.frames_min {self.frames_min!r} must be positive and below frames_max {self.frames_max!r}"
            )


def sample_logit_normal(
    batch: int, config: TimestepConfig, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``batch`` timesteps in (0, 1), float32 [batch], from the truncated logit-normal."""
    # Uniform CDF values above the cut, then the normal's inverse CDF: an exact truncation,
    # unlike rejection sampling it needs no loop and keeps the batch size fixed.
    u = torch.rand(batch, generator=generator, dtype=torch.float64) * (1.0 - config.cut) + config.cut
    u = u.clamp(1e-7, 1 - 1e-7)
    z = math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)
    return torch.sigmoid(config.mean + config.std * z).to(device=device, dtype=torch.float32)


def length_shift(frames: torch.Tensor, config: TimestepConfig) -> torch.Tensor:
    """Shift factor per item, float32 like ``frames`` [B]; monotone non-decreasing in length.

    The log of the shift is linear in log length between (frames_min, shift_min) and
    (frames_max, shift_max), and constant outside: doubling the length adds a fixed amount.
    """
    frames = frames.to(torch.float32).clamp(config.frames_min, config.frames_max)
    span = math.log(config.frames_max) - math.log(config.frames_min)
    position = (frames.log() - math.log(config.frames_min)) / span  # 0 at frames_min, 1 at frames_max
    log_shift = math.log(config.shift_min) + position * (math.log(config.shift_max) - math.log(config.shift_min))
    return log_shift.exp()


def shift_timesteps(t: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Warp t in [0, 1] towards 1 by ``shift`` (>= 1); keeps 0 and 1 fixed and is monotone in t."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def training_timesteps(
    frames: torch.Tensor, config: TimestepConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Timesteps for a batch whose items are ``frames`` [B] real latent frames long: float32 [B]."""
    t = sample_logit_normal(frames.shape[0], config, generator, frames.device)
    return shift_timesteps(t, length_shift(frames, config))
