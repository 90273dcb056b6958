"""Musical targets computed from audio, and the small heads that predict them from latents.

Both targets are per latent frame (4096 samples, no overlap), so a head on the latents
[B, 256, F] predicts [B, bins, F] directly:

- :func:`chroma`: 12 pitch classes (0 = C, 1 = C#, ... 11 = B) of the mono mix, energy from
  55 Hz to 5 kHz, each frame scaled so its largest class is 1 (silent frames are all 0).
- :func:`ild`: inter-aural level difference per band in dB, ``10 log10(E_left / E_right)``:
  **positive = louder on the left**, negative = louder on the right, 0 = centred or silent;
  clipped to +-40 dB (a hard-panned source reads +-40).

Forcing the latent to carry these (via the regression heads) keeps harmony and stereo image
explicit in the latent space, which the diffusion model then has an easier time with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..timebase import SAMPLE_RATE, SAMPLES_PER_FRAME
from .spectral import stft

CHROMA_MIN_HZ, CHROMA_MAX_HZ = 55.0, 5000.0
ILD_BAND_EDGES_HZ = (0.0, 200.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 22050.0)  # 7 bands
ILD_LIMIT_DB = 40.0
_POWER_FLOOR = 1e-10  # energy below this (about -100 dB) counts as silence


def frame_spectra(audio: torch.Tensor) -> torch.Tensor:
    """audio [B, C, S] -> power spectra [B, C, F, 2049] of Hann-windowed, whole latent frames."""
    samples = audio.shape[-1]
    frames = -(-samples // SAMPLES_PER_FRAME)
    padded = F.pad(audio.float(), (0, frames * SAMPLES_PER_FRAME - samples))
    blocks = padded.reshape(*audio.shape[:2], frames, SAMPLES_PER_FRAME)  # (B, C, F, 4096)
    window = torch.hann_window(SAMPLES_PER_FRAME, periodic=True, device=audio.device)
    return torch.fft.rfft(blocks * window).abs().square()


def _bin_hz(device) -> torch.Tensor:
    return torch.fft.rfftfreq(SAMPLES_PER_FRAME, d=1.0 / SAMPLE_RATE, device=device)


def chroma(audio: torch.Tensor) -> torch.Tensor:
    """audio [B, 2, S] -> chroma [B, 12, ceil(S/4096)] in [0, 1], 0 = C (see module doc)."""
    power = frame_spectra(audio.mean(dim=1, keepdim=True))[:, 0]  # (B, F, bins)
    hz = _bin_hz(audio.device)
    used = (hz >= CHROMA_MIN_HZ) & (hz <= CHROMA_MAX_HZ)
    # MIDI note of each bin (69 = A4 = 440 Hz) -> pitch class with C = 0
    pitch_class = (torch.round(12.0 * torch.log2(hz[used] / 440.0)) + 69).long() % 12
    mapping = F.one_hot(pitch_class, 12).float()  # (used bins, 12)
    classes = power[..., used] @ mapping  # (B, F, 12)
    peak = classes.amax(dim=-1, keepdim=True)
    classes = torch.where(peak > _POWER_FLOOR, classes / peak.clamp_min(_POWER_FLOOR), torch.zeros_like(classes))
    return classes.transpose(1, 2)  # (B, 12, F)


def ild(audio: torch.Tensor) -> torch.Tensor:
    """audio [B, 2, S] -> ILD in dB [B, 7, ceil(S/4096)], positive = left louder (see module doc)."""
    power = frame_spectra(audio)  # (B, 2, F, bins)
    hz = _bin_hz(audio.device)
    edges = torch.tensor(ILD_BAND_EDGES_HZ, device=audio.device)
    band = (torch.bucketize(hz, edges[1:-1], right=True)).clamp_max(len(ILD_BAND_EDGES_HZ) - 2)
    mapping = F.one_hot(band, len(ILD_BAND_EDGES_HZ) - 1).float()  # (bins, bands)
    energy = power @ mapping  # (B, 2, F, bands)
    left, right = energy[:, 0], energy[:, 1]
    level = 10.0 * (torch.log10(left + _POWER_FLOOR) - torch.log10(right + _POWER_FLOOR))
    return level.clamp(-ILD_LIMIT_DB, ILD_LIMIT_DB).transpose(1, 2)  # (B, bands, F)


class LatentHead(nn.Module):
    """A small regression head on latents [B, 256, F] -> [B, outputs, F] (sees +-1 frame)."""

    def __init__(self, outputs: int, hidden: int = 128, latent_channels: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(latent_channels, hidden, kernel_size=3, padding=1), nn.GELU(), nn.Conv1d(hidden, outputs, 1)
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents.float())


class ChromaLoss(nn.Module):
    """Mean squared error of a head's sigmoid output against :func:`chroma` of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.head = LatentHead(12)

    def forward(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(torch.sigmoid(self.head(latents)), chroma(audio))


class ILDLoss(nn.Module):
    """Mean squared error of a head's output against :func:`ild` / 40 dB (so targets lie in [-1, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.head = LatentHead(len(ILD_BAND_EDGES_HZ) - 1)

    def forward(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.head(latents), ild(audio) / ILD_LIMIT_DB)


def midi_to_hz(note: float) -> float:
    return 440.0 * math.pow(2.0, (note - 69) / 12.0)


class PitchClassLoss(nn.Module):
    """L1 distance between the pitch-class distributions of reconstruction and input, per frame.

    Each frame of the mono mix, on the key estimator's grid (``sa3.eval.music``, grid from :mod:`sa3core.dsp`: 8192
    samples, hop 2048, 55 Hz to 1 kHz): linear STFT magnitudes summed into 12 pitch classes and
    divided by their sum, as the estimator reads them;
    frames are weighted by the input frame's share of the clip's magnitude, so silence counts
    for nothing. Why: reconstructions carried steady tones of their own (409, 517, 689, 840 Hz
    in every clip: the peaks of held-out reconstructions' long-term spectra) that the spectral
    losses, spread over thousands of bins, barely see, and that pulled every estimated key to
    F minor.
    """

    def __init__(self) -> None:
        super().__init__()
        from ..dsp import CHROMA_FFT, CHROMA_HIGH_HZ, CHROMA_HOP, CHROMA_LOW_HZ

        assert CHROMA_HOP * 4 == CHROMA_FFT  # the estimator's frames are what `stft` makes
        self.n_fft = CHROMA_FFT
        hz = torch.fft.rfftfreq(CHROMA_FFT, d=1.0 / SAMPLE_RATE)
        used = (hz >= CHROMA_LOW_HZ) & (hz <= CHROMA_HIGH_HZ)
        classes = (torch.round(12.0 * torch.log2(hz.clamp_min(1.0) / 440.0)) + 69).long() % 12
        mapping = F.one_hot(classes, 12).float() * used[:, None].float()  # (bins, 12)
        self.register_buffer("mapping", mapping, persistent=False)
        self.register_buffer("window", torch.hann_window(CHROMA_FFT), persistent=False)

    def _classes(self, audio: torch.Tensor) -> torch.Tensor:
        mono = audio.float().mean(dim=1)  # (B, S)
        magnitude = stft(mono, self.n_fft, self.window).abs()  # (B, bins, frames)
        return (magnitude.transpose(1, 2) + 1e-9) @ self.mapping  # (B, frames, 12)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted, wanted = self._classes(prediction), self._classes(target)
        total = wanted.sum(dim=-1, keepdim=True)  # (B, frames, 1)
        weight = total / total.sum(dim=1, keepdim=True).clamp_min(1e-6)
        distance = (predicted / predicted.sum(dim=-1, keepdim=True) - wanted / total).abs().sum(dim=-1, keepdim=True)
        return (weight * distance).sum(dim=1).mean()
