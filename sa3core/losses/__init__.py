"""Autoencoder losses: MR-STFT with K-weighting, IFGD phase, chroma/ILD heads, and the composer."""

from .compose import LOSS_TERMS, AutoencoderLoss, LossInputs, LossWeights
from .kweighting import KWeighting, kweighting_coefficients
from .music import chroma, ild
from .spectral import MultiResolutionSTFTLoss, PhaseLoss

__all__ = [
    "LOSS_TERMS",
    "AutoencoderLoss",
    "KWeighting",
    "LossInputs",
    "LossWeights",
    "MultiResolutionSTFTLoss",
    "PhaseLoss",
    "chroma",
    "ild",
    "kweighting_coefficients",
]
