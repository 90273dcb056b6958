"""Signal metrics: SI-SDR, log-mel L1, MR-STFT, border jumps, one-shot endings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa3.eval import metrics
from sa3core.pipeline import Region, splice

from .signals import RATE, note, note_sequence, progression, stereo


def _noisy(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(clean.shape)
    noise -= noise.mean(axis=1, keepdims=True)
    centred = clean - clean.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred**2).sum(1, keepdims=True) / (noise**2).sum(1, keepdims=True)) * 10 ** (-snr_db / 20)
    return (clean + scale * noise).astype(np.float32)


def test_si_sdr_of_identical_and_scaled_copies_is_infinite():
    clean = progression(0, False, repeats=1)
    assert metrics.si_sdr(clean, clean) == math.inf
    assert metrics.si_sdr(clean, 0.5 * clean) == math.inf


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 30.0])
def test_si_sdr_matches_known_snr(snr_db):
    clean = progression(0, False, repeats=1)
    assert metrics.si_sdr(clean, _noisy(clean, snr_db)) == pytest.approx(snr_db, abs=0.1)


def test_spectral_distances_are_zero_for_identity_and_grow_with_noise():
    clean = progression(9, True, repeats=1)
    assert metrics.log_mel_l1(clean, clean) == 0.0
    assert metrics.mrstft_distance(clean, clean) == pytest.approx(0.0, abs=1e-6)
    mel = [metrics.log_mel_l1(clean, _noisy(clean, snr)) for snr in (40.0, 20.0, 0.0)]
    stft = [metrics.mrstft_distance(clean, _noisy(clean, snr)) for snr in (40.0, 20.0, 0.0)]
    assert mel[0] < mel[1] < mel[2]
    assert stft[0] < stft[1] < stft[2]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        metrics.si_sdr(np.zeros((2, 10)), np.zeros((2, 11)))


def test_mel_filterbank_triangles_peak_at_one_and_cover_the_band():
    bank = metrics.mel_filterbank(80, 2048)
    assert bank.shape == (80, 1025)
    assert np.all(bank.max(axis=1) > 0.5) and bank.max() <= 1.0
    assert np.all(bank[:, 5:-5].sum(axis=0) > 0)  # no holes between bands


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_border_jump_flags_a_hard_splice_but_not_a_crossfade(seed):
    # The same melody rendered twice with different partial phases: a hard cut between them
    # breaks the waveform (a click), the pipeline's 10 ms equal-power crossfade does not.
    first, second = note_sequence(seed, 100), note_sequence(seed, 200)
    total = first.shape[1]
    start, end = int(total * 0.35) + 911 * seed, int(total * 0.65) + 577 * seed
    hard = first.copy()
    hard[:, start:end] = second[:, start:end]
    soft = splice(first, second, [Region(start, end)])
    for border in (start, end):
        assert metrics.border_jump(hard, start, end, border).ratio > 20.0
        assert metrics.border_jump(soft, start, end, border).ratio < 8.0
        assert metrics.border_jump(first, start, end, border).ratio < 8.0


def test_one_shot_ending_clean_for_a_decayed_note_not_for_a_cut_one():
    decayed = np.concatenate([note(220.0, 1.2, decay=8.0), np.zeros(RATE // 5)])
    assert metrics.one_shot_ending(stereo(decayed)).clean
    cut = note(220.0, 1.2, decay=0.5)  # still ringing at the end (the 10 ms release is no decay)
    ending = metrics.one_shot_ending(stereo(cut))
    assert not ending.clean and ending.relative_db > -20.0
    silent = metrics.one_shot_ending(np.zeros((2, RATE), dtype=np.float32))
    assert silent.tail_dbfs == pytest.approx(-200.0)
