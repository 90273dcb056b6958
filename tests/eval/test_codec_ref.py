"""The Opus reference through the real ffmpeg + libopus (CI installs ffmpeg)."""

from __future__ import annotations

import numpy as np
import pytest

from sa3.eval import codec_ref, metrics
from sa3core.errors import Sa3Error

from .signals import drum_pattern, progression


@pytest.fixture(scope="module")
def music_clip() -> np.ndarray:
    """3 s of chords over drums with a little stereo spread: real-ish material for a codec."""
    chords = progression(7, False, seconds_per_chord=0.75, repeats=1)
    drums = drum_pattern(120.0, bars=1)[:, : chords.shape[1]]
    mix = 0.6 * chords + 0.4 * np.pad(drums, ((0, 0), (0, chords.shape[1] - drums.shape[1])))
    mix[1] = np.roll(mix[1], 40)  # a small inter-channel delay: a real stereo image
    return mix.astype(np.float32)


def test_opus_keeps_length_and_alignment(music_clip):
    result = codec_ref.opus_roundtrip(music_clip, 48)
    assert result.audio.shape == music_clip.shape and result.audio.dtype == np.float32
    assert abs(result.lag_samples) <= 2  # ffmpeg removed the pre-skip (6.5 ms): no delay left
    assert 0.6 * 48_000 / 8 * 3 < result.encoded_bytes < 1.6 * 48_000 / 8 * 3


def test_opus_48_kbps_scores_better_than_12_kbps(music_clip):
    low, high = (codec_ref.opus_roundtrip(music_clip, kbps).audio for kbps in (12, 48))
    assert metrics.log_mel_l1(music_clip, high) < metrics.log_mel_l1(music_clip, low)
    assert metrics.mrstft_distance(music_clip, high) < metrics.mrstft_distance(music_clip, low)
    assert metrics.si_sdr(music_clip, high) > metrics.si_sdr(music_clip, low) + 3.0


def test_best_lag_finds_a_known_delay(music_clip):
    delayed = np.roll(music_clip, 123, axis=1)
    assert codec_ref.best_lag(music_clip, delayed, 4410) == 123
    assert codec_ref.best_lag(music_clip, np.roll(music_clip, -57, axis=1), 4410) == -57


def test_missing_ffmpeg_names_the_install(monkeypatch):
    codec_ref.ffmpeg_path.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(Sa3Error, match="apt-get install ffmpeg"):
            codec_ref.opus_roundtrip(np.zeros((2, 1000), dtype=np.float32), 24)
    finally:
        codec_ref.ffmpeg_path.cache_clear()
