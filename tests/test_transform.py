"""Pipeline.transform (audio-to-audio) on sa3's own family: the input's length back, the input's
latents mixed with noise at the level asked for; at level 1 nothing of the input is left, so the
take is exactly the generate take of that length and seed."""

from __future__ import annotations

import numpy as np
import pytest

from sa3core.errors import Sa3Error
from tests.conftest import run_sa3, stereo_tone


def test_level_one_is_generate_of_the_same_length(tiny_pipeline):
    audio = stereo_tone(0.5)
    transformed = tiny_pipeline.transform(audio, "pad", 1.0, steps=2, seed=3)
    np.testing.assert_array_equal(transformed, tiny_pipeline.generate("pad", audio.shape[1], steps=2, seed=3))


def test_a_lower_level_keeps_more_of_the_input(tiny_pipeline):
    tone, other = stereo_tone(0.5), stereo_tone(0.5, freq=330.0)
    low = [tiny_pipeline.transform(a, "pad", 0.2, steps=2, seed=3) for a in (tone, other)]
    high = [tiny_pipeline.transform(a, "pad", 0.9, steps=2, seed=3) for a in (tone, other)]
    assert not np.array_equal(*low)  # the input counts
    assert np.abs(low[0] - low[1]).mean() > np.abs(high[0] - high[1]).mean()


def test_shape_rate_variations_and_determinism(tiny_pipeline):
    audio = stereo_tone(0.3, rate=48_000)
    takes = tiny_pipeline.transform(audio, "pad", 0.7, steps=2, seed=1, variations=2, sample_rate=48_000)
    assert takes.shape == (2, 2, audio.shape[1]) and takes.dtype == np.float32
    again = tiny_pipeline.transform(audio, "pad", 0.7, steps=2, seed=1, variations=2, sample_rate=48_000)
    np.testing.assert_array_equal(takes, again)
    assert not np.array_equal(takes[0], takes[1])


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5, float("nan"), True])
def test_a_level_outside_zero_to_one_is_a_one_line_error(tiny_pipeline, level):
    with pytest.raises(Sa3Error, match="init noise level") as caught:
        tiny_pipeline.transform(stereo_tone(0.1), "pad", level, steps=1)
    assert "\n" not in str(caught.value)


def test_sa3_transform_command(tmp_path, tiny_model_dir):
    from sa3core.audio import read_audio, save_audio

    source = tmp_path / "in.wav"
    save_audio(source, stereo_tone(0.4), 44_100, "float")
    out = tmp_path / "out.wav"
    result = run_sa3("transform", source, "pad", "--model", tiny_model_dir, "--steps", "2", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    audio, rate = read_audio(out)
    assert audio.shape == (2, 17_640) and rate == 44_100
    bad = run_sa3("transform", source, "pad", "--init-noise-level", "0", "-o", tmp_path / "bad.wav")
    assert bad.returncode == 2 and "--init-noise-level" in bad.stderr and not (tmp_path / "bad.wav").exists()
