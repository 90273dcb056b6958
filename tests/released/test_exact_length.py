"""Exact-length mode (``exact_length=True``, ``--exact-length``) on released-layout folders.

The released generate makes every take 6 s longer than asked and cuts it; exact-length mode
makes the length asked for (rounded up to the encoder's two-frame alignment), so the DiT and
the decoder run on fewer frames. What it changes in the sound is measured by
``python -m bench.exact_length``; these tests pin what it does to lengths, recipes and errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3core.families.released import HEADROOM_SECONDS, ReleasedFamily, padded_frames, valid_frames
from sa3core.pipeline import Pipeline
from tests.conftest import run_sa3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
RATE = 44_100


@pytest.fixture(scope="module")
def small() -> Pipeline:
    return Pipeline.load(FIXTURES / "small", bf16=False)


def test_exact_length_drops_the_headroom_from_the_frames(small):
    settings = small.settings
    one_second = padded_frames(RATE, settings, headroom=0.0)
    assert one_second == 12  # ceil(44100 / 4096) = 11, then the even alignment
    assert valid_frames(RATE, one_second, headroom=0.0) == 11  # the alignment frame is padding
    assert padded_frames(RATE, settings) == 76 and HEADROOM_SECONDS == 6.0  # as released: 11 + 64, then even
    family = ReleasedFamily()
    for steering, frames in (({"exact_length": True}, 12), ({}, 76), ({"exact_length": None}, 76)):
        plan = family.plan(small.backend, settings, "generate", "x", RATE, None, None, steering)
        assert plan.sampling.frames == frames, steering


def test_an_exact_length_take_is_the_requested_length_and_not_the_padded_take(small):
    exact = small.generate("dry kick drum", RATE // 2, steps=2, seed=3, exact_length=True)
    padded = small.generate("dry kick drum", RATE // 2, steps=2, seed=3)
    assert exact.shape == padded.shape == (1, 2, RATE // 2)
    assert np.isfinite(exact).all() and np.abs(exact).max() > 0
    # Fewer frames in the DiT's attention and other noise per frame: another take, not the same one.
    assert np.abs(exact - padded).max() > 1e-2
    again = small.generate("dry kick drum", RATE // 2, steps=2, seed=3, exact_length=True)
    np.testing.assert_array_equal(again, exact)  # and like every take, the same seed gives the same audio


def test_the_recipe_records_exact_length_only_when_asked(small):
    assert small.recipe("x", samples=RATE, exact_length=True)["exact_length"] is True
    assert "exact_length" not in small.recipe("x", samples=RATE)


def test_sa3_models_accept_it_and_are_unchanged(tiny_model_dir):
    """sa3's own models always make the requested length: the option is accepted and changes nothing."""
    tiny = Pipeline.load(tiny_model_dir)
    plain = tiny.generate("soft pad", RATE // 4, steps=2, seed=1)
    exact = tiny.generate("soft pad", RATE // 4, steps=2, seed=1, exact_length=True)
    assert plain.shape == (1, 2, RATE // 4)
    np.testing.assert_array_equal(plain, exact)


def test_the_command_writes_the_exact_length_and_records_it(tmp_path):
    out = tmp_path / "exact.wav"
    result = run_sa3(
        "generate", "dry kick drum", "--model", FIXTURES / "small", "--seconds", 0.5, "--steps", 2,
        "--exact-length", "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with sf.SoundFile(str(out)) as handle:
        assert handle.frames == RATE // 2
        assert "exact_length=on" in handle.comment
