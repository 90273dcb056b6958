"""``--bf16``, ``--fp32`` and ``--int8``: one precision per take, in-process and on the torch
backend only (a daemon's precision is set when it starts); anything else is one line before a
model loads. ``sa3 info`` says which precision the model runs at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sa3core.audio import read_audio
from sa3core.backends import cpu_has_bf16
from sa3core.modules.int8 import int8_supported
from tests.cli.test_backend_choice import one_error
from tests.conftest import run_sa3

RELEASED_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "small"


@pytest.mark.parametrize(
    "options, says",
    [
        (["--fp32", "--int8"], "--fp32 and --int8 are different precisions; give one of them"),
        (["--bf16", "--fp32"], "--bf16 and --fp32 are different precisions"),
        (["--int8", "--daemon", "tcp://127.0.0.1:5"], "a daemon's precision is set when it starts"),
        (["--fp32", "--backend", "onnx"], "--fp32 is for the torch backend"),
        (["--int8"], "int8 linear layers are for the released Stable Audio 3 models"),  # the shipped model
    ],
)
def test_a_precision_that_cannot_apply_is_one_line(options, says, tmp_path):
    out = tmp_path / "take.wav"
    line = one_error(run_sa3("generate", "kick", "--seconds", "0.5", "-o", out, *options))
    assert says in line
    assert not out.exists()


@pytest.mark.skipif(not int8_supported(), reason="torch has no x86 int8 kernels on this machine")
def test_int8_makes_the_fp32_take_within_the_tolerance(tmp_path):
    takes = {}
    for name, flag in (("int8", "--int8"), ("fp32", "--fp32")):
        out = tmp_path / f"{name}.wav"
        args = ["generate", "dry kick drum", "--model", RELEASED_SMALL, "--seconds", "2", "--steps", "4"]
        done = run_sa3(*args, "-o", out, "--quiet", "--bit-depth", "float", flag)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr  # torch's deprecation notes stay inside sa3
        takes[name] = read_audio(out)[0]
    difference = np.abs(takes["int8"] - takes["fp32"]).max()
    assert 1e-4 < difference < 0.2, difference
    assert np.corrcoef(takes["int8"].ravel(), takes["fp32"].ravel())[0, 1] > 0.999


def test_info_names_the_precision():
    done = run_sa3("info", "--model", RELEASED_SMALL)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("precision:"))
    expected = "bf16" if cpu_has_bf16() else "int8" if int8_supported() else "float32"
    assert line.split(":", 1)[1].strip() == expected
    cache = next(line for line in done.stdout.splitlines() if line.strip().startswith("int8_cache:"))
    assert cache.split(":", 1)[1].strip().startswith(os.path.join(os.environ["SA3_CACHE_DIR"], "int8") + " (")
