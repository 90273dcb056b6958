"""K-weighting (ITU-R BS.1770): the loudness pre-filter, a high shelf then a high-pass.

BS.1770 publishes the two biquads only for 48 kHz. Here they are derived for any rate from the
analog prototypes (bilinear transform with pre-warping, the usual audio-EQ-cookbook forms),
using the prototype parameters that reproduce the published 48 kHz coefficients (shelf centre
~1681.97 Hz, +4.0 dB, Q ~0.7072; high-pass ~38.135 Hz, Q ~0.5003); a test checks the 48 kHz
result against the standard's numbers.

The filter is applied as a linear convolution with its impulse response (FFT-based, truncated
where the response has decayed below float precision), which is differentiable and fast.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.signal import lfilter

from ..timebase import SAMPLE_RATE

SHELF_HZ, SHELF_DB, SHELF_Q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
SHELF_VB_EXPONENT = 0.4996667741545416  # band gain exponent that fits the published shelf
HIGHPASS_HZ, HIGHPASS_Q = 38.13547087602444, 0.5003270373238773


def kweighting_coefficients(sample_rate: int = SAMPLE_RATE) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((shelf_b, shelf_a), (highpass_b, highpass_a)), each a normalised biquad (a[0] = 1)."""
    k = math.tan(math.pi * SHELF_HZ / sample_rate)
    vh = 10.0 ** (SHELF_DB / 20.0)
    vb = vh**SHELF_VB_EXPONENT
    a0 = 1.0 + k / SHELF_Q + k * k
    shelf_b = np.array([vh + vb * k / SHELF_Q + k * k, 2.0 * (k * k - vh), vh - vb * k / SHELF_Q + k * k]) / a0
    shelf_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / SHELF_Q + k * k]) / a0

    k = math.tan(math.pi * HIGHPASS_HZ / sample_rate)
    a0 = 1.0 + k / HIGHPASS_Q + k * k
    highpass_b = np.array([1.0, -2.0, 1.0])
    highpass_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / HIGHPASS_Q + k * k]) / a0
    return (shelf_b, shelf_a), (highpass_b, highpass_a)


def kweighting_impulse_response(length: int = 8192, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The cascade's impulse response, float64 [length] (at 44.1 kHz it decays below 1e-12 by ~6000)."""
    impulse = np.zeros(length)
    impulse[0] = 1.0
    for b, a in kweighting_coefficients(sample_rate):
        impulse = lfilter(b, a, impulse)
    return impulse


class KWeighting(torch.nn.Module):
    """K-weight the last axis of ``audio [..., samples]`` (44.1 kHz); same shape out."""

    def __init__(self, length: int = 8192, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        response = torch.from_numpy(kweighting_impulse_response(length, sample_rate)).float()
        self.register_buffer("response", response, persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        samples = audio.shape[-1]
        n = samples + self.response.numel() - 1  # linear (not circular) convolution
        spectrum = torch.fft.rfft(audio.float(), n=n) * torch.fft.rfft(self.response, n=n)
        return torch.fft.irfft(spectrum, n=n)[..., :samples]
