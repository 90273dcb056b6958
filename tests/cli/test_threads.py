"""``--threads N`` (sa3/cli/threads.py): the thread count moves a take by far less than hearing
(MKL splits some small products across threads differently: the shipped model's 1 s takes move
by up to about 2e-5), the option reaches torch, and a count that cannot work is one line before
anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sa3.cli import main
from sa3core.audio import read_audio
from sa3core.cpus import usable_cpus
from tests.cli.test_backend_choice import one_error
from tests.conftest import REPO, run_sa3

RELEASED_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "small"


@pytest.fixture
def torch_threads():
    """The worker's thread count, given back after the in-process commands changed it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _take(tmp_path: Path, name: str, *options: str) -> np.ndarray:
    out = tmp_path / f"{name}.wav"
    code = main(["generate", "warm Rhodes chords in D minor", "--seconds", "1", "-o", str(out), "--quiet", *options])
    assert code == 0
    audio, _ = read_audio(out)
    return audio


@pytest.mark.parametrize("model", ["shipped", "released-small-fixture"])
def test_the_take_at_one_thread_is_the_take_at_two(model, tmp_path, torch_threads):
    options = [] if model == "shipped" else ["--model", str(RELEASED_SMALL), "--steps", "4"]
    one = _take(tmp_path, "one", *options, "--threads", "1")
    assert torch.get_num_threads() == 1  # the option reached torch
    two = _take(tmp_path, "two", *options, "--threads", "2")
    assert torch.get_num_threads() == 2
    assert np.abs(one).max() > 1e-3
    assert np.abs(one - two).max() < 1e-4  # -80 dBFS: the last bits at most
    other = _take(tmp_path, "other", *options, "--threads", "2", "--seed", "1")
    assert np.abs(other - two).max() > 1e-2  # the comparison can fail: another seed is another take


@pytest.mark.parametrize(
    "options, says",
    [
        (["--threads", "0"], "--threads 0 must be 1 or more"),
        (["--threads", "-2"], "--threads -2 must be 1 or more"),
        (["--threads", "2", "--daemon", "tcp://127.0.0.1:5"], "sa3 serve --threads N"),
    ],
)
def test_a_thread_count_that_cannot_work_is_one_line(options, says, tmp_path):
    out = tmp_path / "take.wav"
    line = one_error(run_sa3("generate", "kick", "--seconds", "0.5", "-o", out, *options))
    assert says in line
    assert not out.exists()


def test_serve_checks_threads_as_the_other_commands_do():
    line = one_error(run_sa3("serve", "--bind", "tcp://127.0.0.1:*", "--threads", "0"))
    assert "--threads 0 must be 1 or more" in line


def test_render_checks_threads_too(tmp_path):
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text("jobs:\n  - name: kick\n    prompt: punchy kick\n    seconds: 0.5\n")
    line = one_error(run_sa3("render", sheet, "-o", tmp_path / "out", "--threads", "0"))
    assert "--threads 0 must be 1 or more" in line
    assert not (tmp_path / "out").exists()


def test_more_threads_than_cpus_warns_and_still_makes_the_take(tmp_path):
    out = tmp_path / "kick.wav"
    many = usable_cpus() + 1
    done = run_sa3("generate", "punchy kick", "--seconds", "0.5", "-o", out, "--quiet", "--threads", str(many))
    assert done.returncode == 0, done.stderr
    assert f"sa3: warning: --threads {many} is more than the {usable_cpus()} CPUs" in done.stderr
    assert out.is_file()


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_openmp_waits_passively_unless_the_environment_says_otherwise(policy):
    """OMP_DISPLAY_ENV makes the OpenMP runtime print what it read when torch loaded it: the
    policy must be in the environment before that, in a fresh interpreter as a user runs sa3."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_DISPLAY_ENV": "TRUE"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run(
        [sys.executable, "-m", "sa3", "info"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    expected = policy or "PASSIVE"
    assert f"OMP_WAIT_POLICY = '{expected}'" in done.stderr, done.stderr[-2000:]
    assert f"openmp_wait_policy: {expected}" in done.stdout
