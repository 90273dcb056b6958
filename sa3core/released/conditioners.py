"""The released conditioners: the number conditioner (``seconds_total``) and the prompt's padding.

Parameter names are the released ones under ``conditioner.conditioners.<id>.``, so a state dict
loads 1:1. What they compute (read from the official implementation, none of its code copied):

- :class:`ExpoFourierFeatures`: ``t [B] -> [B, dim]`` = ``[cos(a), sin(a)]`` with
  ``a = t * f * 2 * pi`` (that order of products) and ``f = exp(linspace(0, 1, dim/2) *
  (log 10000 - log 0.5) + log 0.5)``, in float32, returned in t's dtype. The DiT's timestep
  features are the same function.
- :class:`NumberConditioner`: ``seconds [B]`` -> clamp to [min_val, max_val] -> ``(x - min) /
  (max - min)`` -> features (256) -> ``embedder.embedding.1`` (Linear 256 -> cond_dim) ->
  ``[B, 1, cond_dim]``. It is both a cross-attention token and the global condition.
- :class:`PromptConditioner`: the text encoder's last hidden state ``[B, L, 768]`` with its
  padded positions replaced by the learned ``padding_embedding`` (``padding_mode: learned``), by
  zeros (``zero``) or left as they are (``none``). The T5Gemma encoder is
  :mod:`sa3core.released.text`.

:func:`assemble` turns the conditioners' outputs into the DiT's inputs as the official wrapper
does: cross-attention tokens concatenated over the sequence in ``cross_attention_cond_ids``
order (no mask), global conditions concatenated over channels in ``global_cond_ids`` order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import Registry
from .config import ConditionerSpec, ConditioningConfig, ReleasedDiffusionConfig


class ExpoFourierFeatures(nn.Module):
    """Fixed exponentially spaced Fourier features (no parameters); see the module docstring."""

    def __init__(self, dim: int, min_freq: float = 0.5, max_freq: float = 10_000.0) -> None:
        super().__init__()
        self.dim, self.min_freq, self.max_freq = dim, min_freq, max_freq

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] (or [B, 1]) -> [B, dim] in t's dtype, computed in float32."""
        dtype = t.dtype
        t = t.float().reshape(-1, 1)  # (B, 1)
        ramp = torch.linspace(0, 1, self.dim // 2, device=t.device, dtype=torch.float32)
        log_min, log_max = math.log(self.min_freq), math.log(self.max_freq)
        freqs = torch.exp(ramp * (log_max - log_min) + log_min)  # (dim/2,)
        angles = t * freqs * 2 * math.pi  # (B, dim/2)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)


class _NumberEmbedder(nn.Module):
    """Holds ``embedding`` = (features, Linear) under the released name ``embedder.embedding``."""

    def __init__(self, output_dim: int, features: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Sequential(ExpoFourierFeatures(features), nn.Linear(features, output_dim))


class NumberConditioner(nn.Module):
    """A number per batch item -> one ``[B, 1, output_dim]`` token. Params: ``embedder.embedding.1``."""

    def __init__(self, spec: ConditionerSpec) -> None:
        super().__init__()
        self.min_val, self.max_val = spec.config.min_val, spec.config.max_val
        self.embedder = _NumberEmbedder(spec.output_dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """values [B] (seconds for ``seconds_total``; out-of-range values are clamped) -> [B, 1, output_dim]."""
        values = values.float().clamp(self.min_val, self.max_val)
        scaled = (values - self.min_val) / (self.max_val - self.min_val)  # (B,) in [0, 1]
        linear = self.embedder.embedding[1]
        return self.embedder.embedding(scaled.to(linear.weight.dtype))[:, None, :]  # (B, 1, output_dim)


class PromptConditioner(nn.Module):
    """Padding of the text encoder's tokens. Params: ``padding_embedding`` [768] when learned."""

    def __init__(self, spec: ConditionerSpec) -> None:
        super().__init__()
        self.padding_mode = spec.config.padding_mode
        self.max_length = spec.config.max_length
        if self.padding_mode == "learned":
            self.padding_embedding = nn.Parameter(torch.zeros(spec.output_dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, 768] (the encoder's last hidden state), mask bool [B, L] (True = a real
        token) -> [B, L, 768] in hidden's dtype with padded positions replaced."""
        if hidden.shape[:2] != mask.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not match tokens {tuple(hidden.shape)}")
        if self.padding_mode == "none":
            return hidden
        keep = mask.bool()[..., None]  # (B, L, 1)
        if self.padding_mode == "zero":
            return hidden * keep.to(hidden.dtype)
        return torch.where(keep, hidden, self.padding_embedding.to(hidden.dtype).expand_as(hidden))


CONDITIONERS: Registry[type[nn.Module]] = Registry("released conditioner type")
CONDITIONERS.register("number")(NumberConditioner)
CONDITIONERS.register("t5gemma")(PromptConditioner)


def build_conditioners(conditioning: ConditioningConfig) -> nn.ModuleDict:
    """One module per ``conditioning.configs`` entry, keyed by its id (``prompt``, ``seconds_total``).
    Their state dict is the checkpoint's ``conditioner.conditioners.*`` with the prefix removed."""
    return nn.ModuleDict({spec.id: CONDITIONERS.get(spec.type)(spec) for spec in conditioning.configs})


def assemble(outputs: dict[str, torch.Tensor], diffusion: ReleasedDiffusionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioner outputs by id (each ``[B, S_i, C]``) -> (context ``[B, sum S_i, C]`` for
    cross-attention, global ``[B, sum C_j]``), in the config's id order."""
    context = torch.cat([outputs[i] for i in diffusion.cross_attention_cond_ids], dim=1)
    parts = [outputs[i].reshape(outputs[i].shape[0], -1) for i in diffusion.global_cond_ids]  # each (B, C_j)
    return context, torch.cat(parts, dim=-1)
