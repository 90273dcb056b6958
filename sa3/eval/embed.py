"""Clip embeddings, the Fréchet distance between two sets of them, and pairwise distances.

No learned audio embedding that installs from a registry could be used here (see
docs/eval.md: ``aisfx`` is CC-BY-4.0 rather than MIT, pins ``numpy==1.23.0`` which cannot
coexist with this project's numpy, and ships its weights as a pickle that only a full
``torch.load`` opens). The default embedding is therefore a **fixed, documented feature
set** (``"features-v1"``, 170 numbers per clip) computed from the mono mix unless noted:

====================  ======  ==========================================================
group                 dims    definition
====================  ======  ==========================================================
log-mel mean / std    64 + 64  ``metrics.log_mel`` with 64 bands (2048 FFT, 1024 hop),
                               log10 magnitude, mean and standard deviation over time
chroma mean / std     12 + 12  ``music.chroma_frames``, each frame scaled to peak 1, over time
onset                 2        mean and std of ``music.onset_strength``
periodicity           8        onset autocorrelation (divided by lag 0) averaged in 8
                               log-spaced tempo bands from 40 to 320 bpm
spectral shape        4        centroid (octaves re 1 kHz) mean/std, flatness mean/std
loudness              2        frame RMS in dB / 20: mean and std
stereo                2        side/mid energy ratio in dB / 20, L/R correlation
====================  ======  ==========================================================

Each group is in units of order 1, so no group dominates the distances by scale alone.
Embedders live in ``EMBEDDERS`` (name -> function ``[2, samples] -> [dim]``).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import scipy.linalg

from sa3core.registry import Registry

from . import music
from .metrics import log_mel, stft_magnitude

EMBEDDERS: Registry = Registry("embedding")
DEFAULT_EMBEDDER = "features-v1"
_TEMPO_BANDS = np.geomspace(40.0, 320.0, 9)  # 8 log-spaced bands


def _periodicity(envelope: np.ndarray) -> np.ndarray:
    acf = music._autocorrelation(envelope)
    if acf[0] <= 0:
        return np.zeros(len(_TEMPO_BANDS) - 1)
    acf = acf / acf[0]
    with np.errstate(divide="ignore"):
        bpm = 60.0 * music.onset_rate() / np.arange(acf.size)
    values = []
    for low, high in itertools.pairwise(_TEMPO_BANDS):
        band = (bpm >= low) & (bpm < high)
        values.append(float(acf[band].mean()) if band.any() else 0.0)
    return np.asarray(values)


@EMBEDDERS.register("features-v1")
def feature_embedding(audio: np.ndarray) -> np.ndarray:
    """The fixed feature set of the module doc: float64 [170] for float32 audio [2, samples]."""
    audio = np.asarray(audio, dtype=np.float32)
    mono = audio.mean(axis=0)
    mel = log_mel(mono[None], bands=64, hop=1024)[0]  # (64, frames)
    chroma = music.chroma_frames(mono)  # (12, frames)
    peak = chroma.max(axis=0, keepdims=True)
    chroma = np.where(peak > 1e-9, chroma / np.maximum(peak, 1e-9), 0.0)  # each frame's profile, peak 1
    envelope = music.onset_strength(mono)
    magnitude = stft_magnitude(mono, 2048, 1024)  # (bins, frames)
    hz = np.fft.rfftfreq(2048, 1.0 / music.timebase.SAMPLE_RATE)
    power = magnitude**2 + 1e-12
    centroid = np.log2(np.maximum((power * hz[:, None]).sum(0) / power.sum(0), 1.0) / 1000.0)
    flatness = np.exp(np.log(power).mean(0)) / power.mean(0)
    rms_db = 10.0 * np.log10((mono.reshape(-1)[: mono.size // 1024 * 1024].reshape(-1, 1024) ** 2).mean(1) + 1e-10)
    mid, side = 0.5 * (audio[0] + audio[1]), 0.5 * (audio[0] - audio[1])
    side_mid_db = 10.0 * np.log10((np.mean(side**2) + 1e-10) / (np.mean(mid**2) + 1e-10))
    left, right = audio[0] - audio[0].mean(), audio[1] - audio[1].mean()
    norm = float(np.sqrt(np.dot(left, left) * np.dot(right, right)))
    correlation = float(np.dot(left, right) / norm) if norm > 0 else 1.0
    if rms_db.size == 0:
        rms_db = np.array([10.0 * np.log10(np.mean(mono**2) + 1e-10)])
    parts = [
        mel.mean(1),
        mel.std(1),
        chroma.mean(1),
        chroma.std(1),
        [envelope.mean(), envelope.std()],
        _periodicity(envelope),
        [centroid.mean(), centroid.std(), flatness.mean(), flatness.std()],
        [rms_db.mean() / 20.0, rms_db.std() / 20.0],
        [side_mid_db / 20.0, correlation],
    ]
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def embed(clips, embedder: str = DEFAULT_EMBEDDER, progress: bool = False) -> np.ndarray:
    """Embed a sequence of clips ``[2, samples]`` -> float64 [clips, dim]."""
    from tqdm import tqdm

    function = EMBEDDERS.get(embedder)
    rows = [function(clip) for clip in tqdm(clips, desc="embed", disable=not progress, leave=False)]
    return np.stack(rows)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings ``a [N, D]`` and ``b [M, D]``.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with sample covariances (N - 1).
    Needs at least 2 rows per set. With fewer rows than dimensions the covariances are
    singular; the formula stays defined but is biased upwards for small sets, so compare
    numbers only at the same set sizes (the report records them).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N>=2, D] embedding sets of equal D, got {a.shape} and {b.shape}")
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # with fewer rows than dimensions the product is singular by construction (see above)
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            # nearly singular products: nudge both covariances off singularity, as is usual
            offset = np.eye(a.shape[1]) * 1e-6
            root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    trace = float(np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(np.real(root)))
    return max(0.0, mean_term + trace)  # rounding can leave a tiny negative for identical sets


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows (needs at least 2 rows)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if len(embeddings) < 2:
        raise ValueError("mean pairwise distance needs at least 2 embeddings")
    pairs = itertools.combinations(range(len(embeddings)), 2)
    return float(np.mean([np.linalg.norm(embeddings[i] - embeddings[j]) for i, j in pairs]))
