"""Signal metrics for `sa3 eval`: reconstruction distances, border jumps, one-shot endings.

Every function takes audio as float32 ``[2, samples]`` (or ``[samples]`` where it says mono)
at 44.1 kHz (``timebase.SAMPLE_RATE``) and returns plain Python floats.

Settings (stated here because a number means nothing without them):

- **log-mel L1**: STFT with a 2048-sample Hann window and a 512-sample hop (46 ms / 11.6 ms),
  magnitude (not power) summed into 80 triangular mel bands (HTK mel scale, 0 Hz to Nyquist,
  unit-peak triangles), ``log10(max(mel, 1e-5))``; mean absolute difference over both channels,
  bands and frames. Units: decades of magnitude (1.0 = a factor of 10 = 20 dB on average).
- **MR-STFT**: ``sa3core.losses.MultiResolutionSTFTLoss`` (the training loss: K-weighted mid,
  side, left and right; FFT sizes 32 to 2048; spectral convergence + mean log-magnitude
  distance), so eval and training measure the same thing.
- **SI-SDR**: scale-invariant signal-to-distortion ratio in dB, per channel after removing
  the mean, averaged over the channels; ``inf`` when the estimate is an exact scaled copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sa3core import timebase
from sa3core.dsp import hz_to_mel, mel_filterbank, mel_to_hz  # noqa: F401  (also this module's API)

MEL_FFT, MEL_HOP, MEL_BANDS = 2048, 512, 80
MEL_FLOOR = 1e-5  # about -100 dB: silence in both signals compares as equal, not as log(0)
FLUX_FFT, FLUX_HOP = 1024, 256  # border analysis: 23 ms windows every 5.8 ms
FLUX_FLOOR_DB = -80.0  # log magnitudes are floored this far below the clip's loudest bin


def _as_stereo(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio[None] if audio.ndim == 1 else audio


def stft_magnitude(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| of ``signal [..., samples]`` -> ``[..., n_fft // 2 + 1, frames]`` (Hann, centred, zero-padded)."""
    tensor = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    flat = tensor.reshape(-1, tensor.shape[-1])  # (channels, samples)
    spec = torch.stft(
        flat,
        n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="constant",
        return_complex=True,
    ).abs()  # (channels, bins, frames)
    return spec.reshape(*tensor.shape[:-1], *spec.shape[-2:]).numpy()


def log_mel(audio: np.ndarray, bands: int = MEL_BANDS, n_fft: int = MEL_FFT, hop: int = MEL_HOP) -> np.ndarray:
    """``log10`` mel magnitudes ``[channels, bands, frames]`` (module doc gives the settings)."""
    magnitude = stft_magnitude(_as_stereo(audio), n_fft, hop)  # (C, bins, frames)
    mel = np.einsum("mb,cbt->cmt", mel_filterbank(bands, n_fft), magnitude)
    return np.log10(np.maximum(mel, MEL_FLOOR))


def log_mel_l1(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean |log10 mel(reference) - log10 mel(estimate)| (0 = identical); shapes must match."""
    _check_pair(reference, estimate)
    return float(np.mean(np.abs(log_mel(reference) - log_mel(estimate))))


def mrstft_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The training MR-STFT loss (spectral convergence + log-magnitude), 0 = identical."""
    from sa3core.losses.spectral import MultiResolutionSTFTLoss

    _check_pair(reference, estimate)
    loss = MultiResolutionSTFTLoss()
    with torch.inference_mode():
        value = loss(torch.from_numpy(_as_stereo(estimate))[None], torch.from_numpy(_as_stereo(reference))[None])
    return float(value)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB, averaged over channels; ``inf`` for an exact (scaled) copy."""
    _check_pair(reference, estimate)
    values = []
    for ref, est in zip(_as_stereo(reference).astype(np.float64), _as_stereo(estimate).astype(np.float64)):
        ref, est = ref - ref.mean(), est - est.mean()
        ref_energy = float(np.dot(ref, ref))
        if ref_energy == 0.0:
            continue  # a silent channel has no signal to distort; skip it rather than divide by 0
        target = (np.dot(est, ref) / ref_energy) * ref
        noise = est - target
        noise_energy = float(np.dot(noise, noise))
        target_energy = float(np.dot(target, target))
        if noise_energy == 0.0:
            values.append(math.inf)
        elif target_energy == 0.0:
            values.append(-math.inf)
        else:
            values.append(10.0 * math.log10(target_energy / noise_energy))
    return float(np.mean(values)) if values else math.nan


def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> None:
    if np.shape(reference) != np.shape(estimate):
        raise ValueError(f"reference {np.shape(reference)} and estimate {np.shape(estimate)} differ in shape")


# ---------------------------------------------------------------------- borders
def spectral_flux(audio: np.ndarray, n_fft: int = FLUX_FFT, hop: int = FLUX_HOP) -> np.ndarray:
    """Frame-to-frame change of the mono mix's log spectrum: ``[frames]``, frame i at sample i*hop.

    ``flux[i] = mean over bins |dB_i - dB_(i-1)|`` with dB floored FLUX_FLOOR_DB below the
    loudest bin, so a click (every bin rising out of the floor at once) scores far above a
    note change (a few harmonic bins moving). ``flux[0] = 0``.
    """
    mono = _as_stereo(audio).mean(axis=0)
    magnitude = stft_magnitude(mono, n_fft, hop)  # (bins, frames)
    decibels = 20.0 * np.log10(np.maximum(magnitude, 1e-12))
    decibels = np.maximum(decibels, decibels.max() + FLUX_FLOOR_DB)
    flux = np.zeros(magnitude.shape[1])
    flux[1:] = np.abs(np.diff(decibels, axis=1)).mean(axis=0)
    return flux


@dataclass(frozen=True)
class BorderJump:
    """Spectral flux at a region border relative to the region's typical (median) flux."""

    border_flux: float
    inside_median: float
    ratio: float


def border_jump(audio: np.ndarray, start: int, end: int, border: int, hop: int = FLUX_HOP) -> BorderJump:
    """How much the spectrum jumps at sample ``border`` (a border of region [start, end)).

    ``border_flux`` is the largest flux of the frames whose centres lie within one analysis
    window (FLUX_FFT samples) of the border; ``inside_median`` the median flux of the frames
    inside the region that are farther than that from both borders (the region's own,
    natural rate of change). ``ratio = border_flux / inside_median``: about 1-3 for a seamless
    border in music, far more for a click or an abrupt change of sound.
    """
    flux = spectral_flux(audio, hop=hop)
    centres = np.arange(flux.size) * hop
    near = np.abs(centres - border) <= FLUX_FFT
    inside = (centres >= start + FLUX_FFT) & (centres < end - FLUX_FFT)
    if not inside.any():
        inside = (centres >= start) & (centres < end)
    border_flux = float(flux[near].max()) if near.any() else 0.0
    median = float(np.median(flux[inside])) if inside.any() else 0.0
    ratio = border_flux / median if median > 0 else (math.inf if border_flux > 0 else 1.0)
    return BorderJump(border_flux, median, ratio)


# ---------------------------------------------------------------------- endings
ONE_SHOT_TAIL_SECONDS = 0.100
ONE_SHOT_TAIL_FRACTION = 0.10
ONE_SHOT_LIMIT_DB = -50.0
LEVEL_WINDOW_SECONDS = 0.050


@dataclass(frozen=True)
class Ending:
    """The level of a clip's tail: does a one-shot decay to silence before it ends?"""

    tail_dbfs: float  # RMS of the tail, dB re full scale
    peak_dbfs: float  # RMS of the loudest 50 ms window, dB re full scale
    relative_db: float  # tail_dbfs - peak_dbfs
    clean: bool  # relative_db <= ONE_SHOT_LIMIT_DB


def _db(rms: float) -> float:
    return 20.0 * math.log10(max(rms, 1e-10))  # -200 dB stands for digital silence


def one_shot_ending(audio: np.ndarray) -> Ending:
    """Tail = the last 10 % of the clip or the last 100 ms, whichever is shorter.

    A one-shot ends cleanly when the tail's RMS (both channels) is at least 50 dB below its
    loudest 50 ms window: relative, so the verdict does not depend on the clip's gain.
    """
    audio = _as_stereo(audio).astype(np.float64)
    samples = audio.shape[1]
    tail = max(1, min(timebase.seconds_to_samples(ONE_SHOT_TAIL_SECONDS), int(samples * ONE_SHOT_TAIL_FRACTION)))
    tail_db = _db(math.sqrt(float(np.mean(audio[:, -tail:] ** 2))))
    window = max(1, min(samples, timebase.seconds_to_samples(LEVEL_WINDOW_SECONDS)))
    power = (audio**2).mean(axis=0)
    running = np.convolve(power, np.ones(window) / window, mode="valid")
    peak_db = _db(math.sqrt(float(running.max())))
    relative = tail_db - peak_db
    return Ending(tail_db, peak_db, relative, relative <= ONE_SHOT_LIMIT_DB)
