"""The autoencoder's loss as a weighted sum of named terms, one registry of term kinds.

Each term is an ``nn.Module`` built with no arguments whose ``forward(batch: LossInputs)``
returns a scalar; :class:`AutoencoderLoss` builds the terms whose weight in
:class:`LossWeights` is above zero and returns every term plus the weighted ``"loss"``.
Terms with parameters (the chroma and ILD heads) are trained with the model.

The adversarial and contrastive latent-alignment terms have weights here (``adversarial``,
``contrastive``) but are **off by default** (weight 0) and not built in; a stage that has a
discriminator or a text/audio embedding registers its implementation with
``LOSS_TERMS.register("adversarial")`` and then sets the weight.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import Sa3Error
from ..registry import Registry
from .music import ChromaLoss, ILDLoss, PitchClassLoss
from .spectral import MultiResolutionMelLoss, MultiResolutionSTFTLoss, PhaseLoss, SpectralFluxLoss

LOSS_TERMS: Registry[type[nn.Module]] = Registry("loss term")


@dataclass
class LossInputs:
    """What a term may look at: input audio, its reconstruction [B, 2, S] and the latents [B, 256, F]."""

    audio: torch.Tensor
    reconstruction: torch.Tensor
    latents: torch.Tensor
    # The head's predicted log magnitudes and the input's own, aligned (SAME.head_target), each
    # [B, 2, N, head_bins]; only the "head" term reads them.
    head: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class LossWeights:
    """Weight of each term; 0 leaves the term out (and unbuilt)."""

    stft: float = 1.0  # multi-resolution STFT, K-weighted, mid/side + left/right
    phase: float = 0.1  # IFGD
    waveform: float = 0.0  # L1 on samples
    mel: float = 0.0  # multi-resolution log-mel L1 (weighs the bass and the harmonics as hearing does)
    flux: float = 0.0  # L1 on frame-to-frame log-mel changes (hop 256): no rhythm of the decoder's own
    notes: float = 0.0  # L1 between pitch-class distributions (55 Hz - 1 kHz) of output and input
    head: float = 0.0  # L1 between the head's log magnitudes and the input's own, bin by bin
    chroma: float = 0.1  # chroma regression head on the latents
    ild: float = 0.1  # ILD regression head on the latents
    adversarial: float = 0.0  # plug-in: needs a registered implementation
    contrastive: float = 0.0  # plug-in: needs a registered implementation


class AudioTerm(nn.Module):
    """A term that compares the reconstruction with the input through ``loss_type()(reconstruction, audio)``."""

    loss_type: type[nn.Module]

    def __init__(self) -> None:
        super().__init__()
        self.loss = self.loss_type()

    def forward(self, batch: LossInputs) -> torch.Tensor:
        return self.loss(batch.reconstruction, batch.audio)


for _name, _loss_type in (
    ("stft", MultiResolutionSTFTLoss),
    ("phase", PhaseLoss),
    ("mel", MultiResolutionMelLoss),
    ("flux", SpectralFluxLoss),
    ("notes", PitchClassLoss),
):
    LOSS_TERMS.register(_name)(type(f"{_name.title()}Term", (AudioTerm,), {"loss_type": _loss_type}))


@LOSS_TERMS.register("waveform")
class WaveformTerm(nn.Module):
    def forward(self, batch: LossInputs) -> torch.Tensor:
        return (batch.reconstruction.float() - batch.audio.float()).abs().mean()


HEAD_FLOOR = 1e-5  # magnitudes below this compare as equal (the log-mel metric's floor, sa3.eval.metrics)


@LOSS_TERMS.register("head")
class HeadTerm(nn.Module):
    """L1 between the natural-log magnitudes the decoder's head predicts and the input's own in the
    same frames (both floored at HEAD_FLOOR). Why: the decoded magnitudes, not the phases, held the
    codec back (docs/architecture.md), and the losses on the rendered audio see a magnitude only
    after the overlap-add has mixed it with its neighbours'."""

    def forward(self, batch: LossInputs) -> torch.Tensor:
        if batch.head is None:
            raise Sa3Error("the head loss needs the head's spectra; this trainer does not pass them (set head: 0)")
        predicted, target = batch.head
        floor = math.log(HEAD_FLOOR)
        return (predicted.float().clamp_min(floor) - target.float().clamp_min(floor)).abs().mean()


@LOSS_TERMS.register("chroma")
class ChromaTerm(ChromaLoss):
    def forward(self, batch: LossInputs) -> torch.Tensor:
        return super().forward(batch.latents, batch.audio)


@LOSS_TERMS.register("ild")
class ILDTerm(ILDLoss):
    def forward(self, batch: LossInputs) -> torch.Tensor:
        return super().forward(batch.latents, batch.audio)


class AutoencoderLoss(nn.Module):
    """Weighted sum of the terms with weight > 0; returns ``{term: value, ..., "loss": total}``."""

    def __init__(self, weights: LossWeights) -> None:
        super().__init__()
        self.weights = {f.name: getattr(weights, f.name) for f in dataclasses.fields(weights)}
        self.terms = nn.ModuleDict()
        for name, weight in self.weights.items():
            if weight < 0:
                raise Sa3Error(f"loss weight {name} = {weight} is negative; use 0 to turn a term off")
            if weight == 0:
                continue
            if name not in LOSS_TERMS:
                raise Sa3Error(
                    f"loss term {name!r} has weight {weight} but no implementation is registered here; "
                    f"set its weight to 0 or register one in sa3core.losses.LOSS_TERMS"
                )
            self.terms[name] = LOSS_TERMS.get(name)()

    def forward(self, batch: LossInputs) -> dict[str, torch.Tensor]:
        values = {name: term(batch) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        values["loss"] = total if isinstance(total, torch.Tensor) else batch.audio.new_zeros(())
        return values
