"""Flow-matching samplers: small classes that turn noise into latents with a velocity function.

Convention (docs/architecture.md): ``x_t = (1 - t) x0 + t noise``, t = 1 is pure noise, the
model predicts ``v = noise - x0`` and ``x0_hat = x_t - t v``.

A sampler keeps its state in float32 and never holds the model: ``sample(velocity_fn, noise,
steps, ...)`` calls ``velocity_fn(x [B, C, T] float32, t [B] float32) -> v`` once per step
(the function closes over the DiT, its condition and guidance). Guidance lives here
(:func:`cfg_velocity`), not in the model.

Timesteps run from 1 to 0, warped towards high noise by a shift that grows with the audio's
length (:func:`length_shift`): a long piece needs more of its steps on global structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import Sa3Error
from .registry import Registry

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]

# Length shift constants. They equal training/timesteps.py's TimestepConfig defaults so a model
# samples with the shift it was trained with: shift 1 (no warp) up to 32 frames (about 3 s),
# shift 3 (SD3's value for its largest images) from 2048 frames (about 190 s) on, and the log
# of the shift linear in the log of the length in between (each doubling adds the same amount).
SHIFT_MIN, SHIFT_MAX = 1.0, 3.0
SHIFT_FRAMES_MIN, SHIFT_FRAMES_MAX = 32, 2048


def length_shift(frames: int) -> float:
    """Timestep shift for audio of ``frames`` latent frames; non-decreasing in length, >= 1."""
    if frames < 1:
        raise Sa3Error(f"latent length {frames} frames must be at least 1")
    clamped = min(max(float(frames), SHIFT_FRAMES_MIN), SHIFT_FRAMES_MAX)
    position = math.log(clamped / SHIFT_FRAMES_MIN) / math.log(SHIFT_FRAMES_MAX / SHIFT_FRAMES_MIN)
    return math.exp(math.log(SHIFT_MIN) + position * (math.log(SHIFT_MAX) - math.log(SHIFT_MIN)))


def timesteps(steps: int, shift: float = 1.0, start: float = 1.0) -> torch.Tensor:
    """float32 [steps + 1] from exactly ``start`` down to exactly 0: uniform, then ``s t / (1 + (s - 1) t)``.

    ``start`` < 1 (audio-to-audio) runs the part of the same warped schedule below ``start``, its
    steps spread uniformly before the warp."""
    if steps < 1:
        raise Sa3Error(f"steps must be at least 1 (got {steps})")
    if not math.isfinite(shift) or shift <= 0:
        raise Sa3Error(f"timestep shift {shift!r} must be a positive number")
    if not 0.0 < start <= 1.0:
        raise Sa3Error(f"the starting noise level must be in (0, 1] (got {start!r})")
    first = 1.0 if start == 1.0 else start / (shift - (shift - 1.0) * start)  # the warp's inverse
    t = torch.linspace(first, 0.0, steps + 1, dtype=torch.float64)
    t = (shift * t / (1.0 + (shift - 1.0) * t)).to(torch.float32)
    t[0] = start
    return t


def cfg_velocity(
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    scale: float,
    rescale: float = 0.0,
    x: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free guidance; ``scale == 1`` returns ``v_cond`` itself (bit-exact).

    ``rescale`` in [0, 1] (needs ``x`` and ``t``) keeps strong guidance from inflating the level:
    the guided clean-latent estimate ``x - t v`` is scaled, per item, to the standard deviation of
    the conditional one, and blended with the plain guided estimate by ``rescale`` (the rescaling
    of Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", applied to
    the x0 estimate of flow matching). Without it, guidance 4 made pads 8 dB louder than the
    corpus and left most outputs over full scale.
    """
    if scale == 1.0:
        return v_cond
    guided = v_cond + (scale - 1.0) * (v_cond - v_uncond)
    if rescale == 0.0:
        return guided
    if x is None or t is None:
        raise ValueError("guidance rescaling needs the sampler's x and t")
    t = t.float().reshape(-1, *([1] * (x.dim() - 1)))
    x0_cond, x0_guided = x - t * v_cond, x - t * guided
    dims = tuple(range(1, x.dim()))
    ratio = x0_cond.std(dim=dims, keepdim=True) / x0_guided.std(dim=dims, keepdim=True).clamp_min(1e-6)
    x0 = rescale * (x0_guided * ratio) + (1.0 - rescale) * x0_guided
    # Back to a velocity; at t = 0 there is nothing left to move (x is the estimate).
    return torch.where(t > 0, (x - x0) / t.clamp_min(1e-6), guided)


SAMPLERS: Registry[type] = Registry("sampler")


class Sampler:
    """Base: the shared loop. Subclasses implement :meth:`step`."""

    def sample(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        shift: float | None = None,
        start: float = 1.0,
    ) -> torch.Tensor:
        """x0 float32, shaped like ``noise`` [B, C, T].

        ``shift`` None means ``length_shift(noise.shape[-1])``. ``start``: the time ``noise`` is
        at (below 1: a mix of data and noise, for audio-to-audio). ``generator`` feeds any fresh
        noise (ping-pong); the same generator state gives bit-identical results.
        ``progress(step, steps)`` is called after each step (1-based); an exception raised in
        it aborts sampling and propagates (the pipeline uses that for cancellation).
        """
        schedule = timesteps(steps, length_shift(noise.shape[-1]) if shift is None else shift, start)
        x = noise.to(torch.float32)
        self.reset()
        batch = x.shape[0]
        for i in range(steps):
            t, t_next = schedule[i].item(), schedule[i + 1].item()
            v = velocity_fn(x, torch.full((batch,), t, dtype=torch.float32, device=x.device)).to(torch.float32)
            x = self.step(x, v, t, t_next, generator)
            if progress is not None:
                progress(i + 1, steps)
        return x

    def reset(self) -> None:
        """Forget multistep history before a new sample."""

    def step(self, x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, generator) -> torch.Tensor:
        raise NotImplementedError


@SAMPLERS.register("euler")
class EulerSampler(Sampler):
    """First-order ODE solver: ``x <- x + (t_next - t) v``."""

    def step(self, x, v, t, t_next, generator):
        return x + (t_next - t) * v


@SAMPLERS.register("dpmpp")
class DPMPP2MSampler(Sampler):
    """DPM-Solver++(2M) (Lu et al., 2022) in data-prediction form for flow matching.

    With ``alpha_t = 1 - t``, ``sigma_t = t`` and ``lambda_t = log(alpha_t / sigma_t)``, one step
    from t to t' with ``h = lambda_t' - lambda_t`` is
    ``x' = (sigma_t' / sigma_t) x - alpha_t' (exp(-h) - 1) D`` where D is the data estimate:
    the current ``x0_hat`` on the first step, else the second-order extrapolation
    ``(1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev`` with ``r = h_prev / h``.
    The last step (to t = 0) is first order, i.e. returns ``x0_hat`` (as diffusers'
    ``lower_order_final``); steps from t = 1 (lambda = -inf) are first order too.
    """

    def reset(self) -> None:
        self.prev_x0: torch.Tensor | None = None
        self.prev_h: float | None = None

    def step(self, x, v, t, t_next, generator):
        x0 = x - t * v
        if t_next <= 0.0:
            return x0
        lam, lam_next = _log_snr(t), _log_snr(t_next)
        h = lam_next - lam
        data = x0
        if self.prev_x0 is not None and math.isfinite(self.prev_h) and math.isfinite(h):
            r = self.prev_h / h
            data = (1.0 + 0.5 / r) * x0 - (0.5 / r) * self.prev_x0
        # exp(-h) = (sigma' alpha) / (alpha' sigma): finite even when t = 1 (alpha = 0, h = inf).
        ratio = (t_next * (1.0 - t)) / ((1.0 - t_next) * t)
        x_next = (t_next / t) * x - (1.0 - t_next) * (ratio - 1.0) * data
        self.prev_x0, self.prev_h = x0, h
        return x_next


def _log_snr(t: float) -> float:
    """lambda_t = log((1 - t) / t); -inf at t = 1."""
    return -math.inf if t >= 1.0 else math.log((1.0 - t) / t)


@SAMPLERS.register("pingpong")
class PingPongSampler(Sampler):
    """For distilled models: predict x0 at t, re-noise it to t_next with fresh noise, repeat.

    One step from t = 1 is exactly the one-step prediction ``noise - v(noise, 1)``.
    """

    def step(self, x, v, t, t_next, generator):
        x0 = x - t * v
        if t_next <= 0.0:
            return x0
        fresh = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=x.device)
        return (1.0 - t_next) * x0 + t_next * fresh
