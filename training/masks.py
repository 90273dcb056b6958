"""Random inpainting masks for flow-matching training.

Mask convention (docs/architecture.md): float [B, 1, T], **1 = keep (given), 0 = regenerate**.
Each item draws one mask type with the configured probabilities:

* ``none``: plain text-to-audio, every frame regenerated (mask all zeros);
* ``region``: one contiguous region regenerated, the rest kept;
* ``regions``: two to four disjoint regions regenerated;
* ``continuation``: a prefix kept, the tail regenerated (continuing a recording).

Regions are drawn inside each item's real frames; padded frames are always 0 ("nothing
given"), so padding carries no information into the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sa3core.errors import Sa3Error

MASK_TYPES = ("none", "region", "regions", "continuation")


@dataclass
class MaskConfig:
    """Probabilities of each mask type (they must sum to 1) and region sizes as fractions of the item."""

    none: float = 0.5
    region: float = 0.2
    regions: float = 0.15
    continuation: float = 0.15
    min_fraction: float = 0.1  # smallest regenerated region, as a fraction of the item's length
    max_fraction: float = 0.6  # largest regenerated region (and continuation tail)

    def __post_init__(self) -> None:
        probs = self.probabilities()
        if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise Sa3Error(f"masks probabilities {dict(zip(MASK_TYPES, probs))} must be non-negative and sum to 1")
        if not 0.0 < self.min_fraction <= self.max_fraction <= 1.0:
            raise Sa3Error(
                f"masks.min_fraction {self.min_fraction!r} and max_fraction {self.max_fraction!r} must satisfy 0 < min <= max <= 1"
            )

    def probabilities(self) -> list[float]:
        return [self.none, self.region, self.regions, self.continuation]


def _region(length: int, config: MaskConfig, generator: torch.Generator) -> tuple[int, int]:
    """(start, end) frames of one regenerated region inside [0, length), at least one frame."""
    fraction = (
        config.min_fraction + (config.max_fraction - config.min_fraction) * torch.rand(1, generator=generator).item()
    )
    size = max(1, min(length, round(fraction * length)))
    start = int(torch.randint(0, length - size + 1, (1,), generator=generator).item())
    return start, start + size


def random_inpaint_masks(
    frame_mask: torch.Tensor, config: MaskConfig, generator: torch.Generator
) -> tuple[torch.Tensor, list[str]]:
    """Draw one inpaint mask per item.

    frame_mask: bool [B, T] (True = real frame). Returns (mask float32 [B, 1, T], type name per item).
    Items shorter than two frames always get ``none`` (nothing sensible to keep).
    """
    batch, frames = frame_mask.shape
    lengths = frame_mask.sum(1).tolist()
    mask = torch.zeros(batch, 1, frames)
    kinds = torch.multinomial(torch.tensor(config.probabilities()), batch, replacement=True, generator=generator)
    names = []
    for i, (kind, length) in enumerate(zip(kinds.tolist(), lengths)):
        name = MASK_TYPES[kind] if length >= 2 else "none"
        names.append(name)
        real = frame_mask[i].nonzero().flatten()
        if name == "none":
            continue
        keep = torch.ones(length)
        if name == "region":
            start, end = _region(length, config, generator)
            keep[start:end] = 0
        elif name == "regions":
            count = int(torch.randint(2, 5, (1,), generator=generator).item())
            for _ in range(count):
                start, end = _region(length, config, generator)
                # Each of several regions is smaller, so together they leave some audio to keep.
                end = start + max(1, (end - start) // count)
                keep[start:end] = 0
        else:  # continuation: keep a prefix, regenerate the tail
            start, end = _region(length, config, generator)
            tail_frames = min(length - 1, end - start)
            keep[length - tail_frames :] = 0
        if keep.sum() == length:  # never hand back "keep everything": nothing would be learned
            keep[-1] = 0
        mask[i, 0, real] = keep
    return mask, names
