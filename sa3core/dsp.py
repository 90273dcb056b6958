"""Fixed signal-processing tables the library and the evaluation share: the mel filterbank
(log-mel metrics, the spectral loss's mel terms) and the chroma analysis grid (the key estimator
of ``sa3 eval`` and the pitch-class training loss read audio on the same grid)."""

from __future__ import annotations

import numpy as np

from . import timebase

CHROMA_FFT, CHROMA_HOP = 8192, 2048  # the key estimator's frames: 186 ms every 46 ms
CHROMA_LOW_HZ, CHROMA_HIGH_HZ = 55.0, 1000.0  # the pitch range it reads


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(bands: int, n_fft: int, low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
    """Triangular filters ``[bands, n_fft // 2 + 1]`` equally spaced on the HTK mel scale, peak 1."""
    high_hz = timebase.SAMPLE_RATE / 2 if high_hz is None else high_hz
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / timebase.SAMPLE_RATE)
    edges = mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), bands + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bin_hz[None]) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)
