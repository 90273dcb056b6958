"""The official LoRA training objective for the released base models (rectified flow), piece by piece.

What the official ``DiffusionCondTrainingWrapper.training_step`` computes with the settings its
``scripts/train_lora.py`` passes (Stability-AI/stable-audio-3, MIT; read, not copied). Every
random draw here takes a ``torch.Generator`` (the trainer gives each item its own), so a run is
reproducible and resumable; the official code draws from torch's and Python's global generators,
so the draws match in distribution, not number for number.

- **Timesteps**: a truncated logit-normal draw (the lowest 7.5 % of its mass cut and the rest
  rescaled to [0, 1]), flipped (``t = 1 - sample``, so most weight lands at high noise), then
  shifted per item by its length (:class:`LengthShift`, the config's
  ``distribution_shift_options``), the length being the item's ``seconds_total`` in frames.
- **Noising**: ``x_t = x * (1 - t) + noise * t``; the target velocity is ``noise - x``; within a
  micro-batch, noise is re-paired with data by minibatch OT (:func:`ot_permutation`).
- **Padding**: the valid frames are extended into the padding by an exponential number of
  frames (mean 4 s, :func:`silence_extension`), the padding being the encoding of silence; the
  extended mask is the DiT's attention mask and bounds the loss.
- **Inpainting** (:func:`inpaint_keep_mask`): per item, a full mask (80 %: plain generation),
  1-10 random segments (10 %) or a causal prefix (10 %); the DiT's local input is
  ``concat(keep, x * keep)``.
- **CFG dropout**: 10 % of items get an all-zero cross-attention context (the prompt tokens and
  the seconds token; the global condition is kept), the unconditional input of inference.
- **Loss** (:func:`masked_loss`): per item, the mean squared velocity error over the regenerated
  valid frames and all channels, averaged over items; plus (weight 1) the same mean over the
  kept valid frames, so the model also learns to keep what it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sa3core.errors import Sa3Error

LEFT_TRUNCATION = 0.075  # the share of the logit-normal's lower tail the official sampler cuts
OT_ITERATIONS = 20
MASK_TYPES = ("segments", "full", "causal")  # the official MaskType order of mask_type_probabilities


# ----------------------------------------------------------------------------- timesteps
def truncated_logit_normal(logits: torch.Tensor) -> torch.Tensor:
    """Standard normal draws [N] -> flipped truncated logit-normal timesteps [N] in [0, 1]."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lower = normal.cdf(torch.logit(torch.tensor(LEFT_TRUNCATION)))
    upper = normal.cdf(torch.logit(torch.tensor(1.0)))  # 1: nothing cut at the top
    samples = torch.sigmoid(normal.icdf(lower + (upper - lower) * normal.cdf(logits)))
    return 1 - (samples - LEFT_TRUNCATION) / (1 - LEFT_TRUNCATION)


@dataclass(frozen=True)
class LengthShift:
    """The ``full`` distribution shift: longer items get more time at high noise.

    ``mu = -(base + (max - base) * (L - min_length) / (max_length - min_length))`` with L the
    length in frames clamped to [min_length, max_length]; ``t -> 1 - e^mu / (e^mu + t / (1 - t))``.
    """

    base_shift: float = 0.5
    max_shift: float = 1.15
    min_length: int = 256
    max_length: int = 4096
    use_sine: bool = False

    @classmethod
    def from_options(cls, options: dict | None, where: str) -> LengthShift | None:
        """The config's ``distribution_shift_options`` (None or type ``none``: no shift)."""
        if options is None:
            return None
        options = dict(options)
        kind = options.pop("type", "full")
        if kind == "none":
            return None
        if kind != "full":
            raise Sa3Error(f"{where}: distribution shift type {kind!r} is not one sa3 trains with (full, none)")
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise Sa3Error(f"{where}: distribution_shift_options has {unknown[0]!r}, which sa3 does not know")
        return cls(**options)

    def __call__(self, t: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """t [N] in [0, 1], frames [N] (each item's length in latent frames) -> shifted t [N]."""
        length = frames.float().clamp(self.min_length, self.max_length)
        span = self.max_length - self.min_length
        mu = -(self.base_shift + (self.max_shift - self.base_shift) * (length - self.min_length) / span)
        shifted = 1 - torch.exp(mu) / (torch.exp(mu) + (1 / (1 - t) - 1))
        return torch.sin(shifted * math.pi / 2) if self.use_sine else shifted


def effective_frames(seconds_total: int, sample_rate: int, hop: int) -> int:
    """The length the shift sees: ``seconds_total`` (whole seconds, rounded up) in latent frames."""
    return math.ceil(int(seconds_total * sample_rate) / hop)


# ----------------------------------------------------------------------------- padding and inpainting
def silence_extension(scale_frames: float, generator: torch.Generator) -> int:
    """Frames of silence to count as valid after an item's end: exponential, mean ``scale_frames``,
    rounded down; 0 when the scale is 0."""
    if scale_frames <= 0:
        return 0
    return int(torch.empty(1).exponential_(1.0 / scale_frames, generator=generator).item())


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """A whole number in [low, high], both ends included (Python's random.randint)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def inpaint_keep_mask(
    valid: int, probabilities: tuple[float, float, float], max_segments: int, generator: torch.Generator
) -> torch.Tensor:
    """One item's inpainting mask over its ``valid`` frames: float32 [valid], 1 = given (kept),
    0 = regenerated. Type by ``probabilities`` over (segments, full, causal), as
    :data:`MASK_TYPES`: ``segments`` zeroes 1..max_segments random spans (each at most
    valid / count long, possibly overlapping), ``full`` everything, ``causal`` all after a
    random prefix (0..valid frames). Frames after ``valid`` are padding: the caller pads with 0."""
    kind = MASK_TYPES[int(torch.multinomial(torch.tensor(probabilities, dtype=torch.float64), 1, generator=generator))]
    keep = torch.ones(valid)
    if kind == "full":
        return torch.zeros(valid)
    if kind == "segments":
        count = _randint(1, max_segments, generator)
        longest = max(1, valid // count)
        for _ in range(count):
            length = _randint(1, longest, generator)
            if valid - length < 0:
                continue
            start = _randint(0, valid - length, generator)
            keep[start : start + length] = 0
    else:  # causal: keep a prefix, regenerate the rest
        prefix = _randint(0, valid, generator)
        keep[prefix:] = 0
    return keep


# ----------------------------------------------------------------------------- noise coupling
@torch.no_grad()
def ot_permutation(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The official minibatch OT pairing: long [B], data item i gets noise ``perm[i]``.

    Squared L2 cost over whole items (padding included), divided by its mean; 20 log-domain
    Sinkhorn iterations (rows, then columns); then rows in order take their largest unused entry.
    """
    batch = data.shape[0]
    data_flat, noise_flat = data.reshape(batch, -1), noise.reshape(batch, -1)
    data_sq = (data_flat * data_flat).sum(dim=1, keepdim=True)  # (B, 1)
    noise_sq = (noise_flat * noise_flat).sum(dim=1, keepdim=True)  # (B, 1)
    cost = data_sq + noise_sq.T - 2.0 * (data_flat @ noise_flat.T)  # (B, B)
    log_plan = -cost / cost.mean()
    for _ in range(OT_ITERATIONS):
        log_plan = log_plan - torch.logsumexp(log_plan, dim=1, keepdim=True)
        log_plan = log_plan - torch.logsumexp(log_plan, dim=0, keepdim=True)
    plan = log_plan.exp()
    perm = torch.empty(batch, dtype=torch.long, device=data.device)
    used = torch.zeros(batch, dtype=torch.bool, device=data.device)
    for i in range(batch):
        plan[i, used] = -1
        perm[i] = plan[i].argmax()
        used[perm[i]] = True
    return perm


# ----------------------------------------------------------------------------- loss
def masked_loss(
    velocity: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor, context_weight: float
) -> dict[str, torch.Tensor]:
    """velocity, target [B, C, T]; valid bool [B, T] (the extended mask); keep [B, 1, T] (1 = given).

    Returns ``loss`` (what is trained), ``mse_signal`` (regenerated frames, pooled over the batch)
    and ``mse_context`` (the kept-frame term, 0 when no item keeps a frame or its weight is 0)."""
    error = (velocity - target) ** 2  # (B, C, T)
    channels = error.shape[1]
    kept = keep[:, 0].bool()  # (B, T)
    regenerated = valid & ~kept
    signal = torch.where(regenerated.unsqueeze(1), error, 0.0)
    signal_count = regenerated.sum(dim=1) * channels  # (B,)
    loss = (signal.sum(dim=(1, 2)) / (signal_count + 1e-8)).mean()
    logs = {"mse_signal": (signal.sum() / (signal_count.sum() + 1e-8)).detach()}
    context = kept & valid
    context_count = context.sum(dim=1) * channels
    context_mean = torch.zeros((), device=error.device)
    if context_weight > 0 and context_count.sum() > 0:
        values = torch.where(context.unsqueeze(1), error, 0.0)
        context_mean = (values.sum(dim=(1, 2)) / (context_count + 1e-8)).mean()
        loss = loss + context_mean * context_weight
    return {"loss": loss, **logs, "mse_context": context_mean.detach()}
