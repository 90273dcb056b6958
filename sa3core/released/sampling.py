"""How the released checkpoints sample, as the official ``generate`` does (float32, on CPU).

Read from the official implementation (Stability-AI/stable-audio-3, MIT: ``sample_diffusion``,
``build_schedule``, ``LogSNRShift``, the samplers and the DiT's guidance); none of its code is
copied. Convention as everywhere in sa3: ``x_t = (1 - t) x0 + t noise``, the DiT predicts the
velocity ``v``, ``x0_hat = x - t v``.

- :func:`schedule`: ``steps + 1`` times from ``start`` (1, or ``init_noise_level`` for
  audio-to-audio) to 0: ``u = linspace(start, 0)``, ``t = sigmoid(-(2 - 8.2 u))`` (the released
  configs' fixed LogSNR shift, the same for every length), ``u <= 0`` -> 0, ``u >= 1`` -> 1, and
  the first time set back to ``start``. From 0.9 the second time is higher (0.9885) than the first:
  the official schedule does that and sa3 keeps it.
- :func:`sample`: ``pingpong`` (post-trained models) re-noises the estimate to the next time with a
  fresh draw every step, the last one too (times 0: it still moves the random stream), or ``euler``
  (base models) ``x += (t_next - t) v``; no draws.
- :func:`apg_velocity`: guidance. ``diff = x0_cond - x0_uncond``; only its part orthogonal to
  ``x0_cond`` (per item, over the valid frames, in float32) is added, ``scale - 1`` times; the
  velocity is then ``(x - x0) / t``. ``apg`` 0 is plain guidance, between blends the two.

Random draws come from one ``torch.Generator`` that the caller seeds like the official
``torch.manual_seed(seed)``; each is drawn contiguous in float32 on the CPU, as ``randn_like``
draws for the official (contiguous) latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import Sa3Error

# The released configs leave sampling_distribution_shift_options null; the official default
# is then LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0): length-independent.
LOGSNR_START, LOGSNR_END = -6.2, 2.0
SAMPLERS = ("pingpong", "euler")

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def schedule(steps: int, start: float = 1.0) -> torch.Tensor:
    """float32 [steps + 1], the official ``build_schedule`` for the released shift (see above)."""
    if steps < 1:
        raise Sa3Error(f"steps must be at least 1 (got {steps})")
    if not 0.0 < start <= 1.0:
        raise Sa3Error(f"the starting noise level must be in (0, 1] (got {start})")
    u = torch.linspace(start, 0.0, steps + 1)
    # The official start is a float32 tensor (the length term times rate 0), so the span is float32 too.
    span = LOGSNR_END - torch.tensor(LOGSNR_START)
    t = torch.sigmoid(-(LOGSNR_END - u * span))
    t = torch.where(u <= 0, torch.zeros_like(t), t)
    t = torch.where(u >= 1, torch.ones_like(t), t)
    t[0] = start
    return t


def sample(
    sampler: str,
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    start: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``sampler`` from ``x`` [B, C, T] float32 at time ``start`` to 0; the latents."""
    if sampler not in SAMPLERS:
        raise Sa3Error(f"unknown sampler {sampler!r} for a released model; choose one of {', '.join(SAMPLERS)}")
    times = schedule(steps, start)
    batch = x.shape[0]
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        v = velocity_fn(x, t.expand(batch)).float()
        if sampler == "pingpong":
            denoised = x - t * v
            fresh = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=generator.device)
            x = (1 - t_next) * denoised + t_next * fresh.to(x.device)
        else:
            x = x + (t_next - t) * v
        if progress is not None:
            progress(i + 1, steps)
    return x


def apg_velocity(
    x: torch.Tensor,
    t: torch.Tensor,
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    scale: float,
    frame_mask: torch.Tensor,
    apg: float = 1.0,
) -> torch.Tensor:
    """Guided velocity [B, C, T] (see the module docstring); ``frame_mask`` bool [B, T], True = valid."""
    t = t.float().view(-1, 1, 1)
    cond, uncond = x - v_cond * t, x - v_uncond * t  # the clean estimates
    diff = cond - uncond
    if apg != 0.0:
        mask = frame_mask[:, None, :].float()  # (B, 1, T)
        direction = cond.float() * mask
        direction = direction / direction.norm(dim=(-1, -2), keepdim=True).clamp(min=1e-8)
        along = (diff.float() * direction).sum(dim=(-1, -2), keepdim=True)
        orthogonal = ((diff.float() - along * direction) * mask).to(diff.dtype)
        diff = orthogonal if apg == 1.0 else apg * orthogonal + (1 - apg) * diff
    guided = cond + (scale - 1) * diff
    return (x - guided) / t
