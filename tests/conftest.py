"""Shared fixtures: small real models (random weights) saved as real model folders."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SA3 = [sys.executable, "-m", "sa3"]

# The int8 weights the tests pack go to a folder of this run, not the user's cache
# (sa3core/modules/int8_cache.py); sa3 processes the tests start inherit it.
os.environ["SA3_CACHE_DIR"] = tempfile.mkdtemp(prefix="sa3-test-cache-")
os.environ.pop("SA3_INT8_CACHE", None)
atexit.register(shutil.rmtree, os.environ["SA3_CACHE_DIR"], True)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test runs two workers on a 2-core machine: one OpenMP thread each, for the worker
    # and for every sa3 process it starts (they inherit the variable), so the two never fight
    # over the cores and an in-process take and a daemon's take run the same thread count
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A random tiny model with the weight-free hash text encoder: fast, deterministic."""
    from sa3core.pipeline import Pipeline

    return Pipeline.random("tiny", seed=0, text_encoder="hash")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_pipeline, tmp_path_factory) -> Path:
    return tiny_pipeline.save(tmp_path_factory.mktemp("models") / "tiny")


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child a test sends SIGINT: its Ctrl-C disposition reset to the default,
    as a command typed at a terminal has it. A test run started in the background by a
    non-interactive shell (``pytest ... &``, nohup) inherits SIGINT *ignored*, Python keeps an
    ignored SIGINT, and the child would never see the signal the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_sa3(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `sa3` command in its own process, forked from a zygote that has imported torch
    and sa3 (tests/forked_cli.py: 3-4 s less per call; tests/cli/test_entry_points.py runs the
    plain ``python -m sa3`` and the installed script)."""
    from tests import forked_cli

    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    return forked_cli.run(list(args), cwd=cwd, env=env, timeout=timeout)


def run_sa3_plain(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m sa3 *args`` in a fresh interpreter, as a user's shell runs it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    return subprocess.run([*SA3, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def stereo_tone(seconds: float, freq: float = 220.0, rate: int = 44_100) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    left = 0.4 * np.sin(2 * np.pi * freq * t)
    right = 0.3 * np.sin(2 * np.pi * freq * 1.5 * t)
    return np.stack([left, right]).astype(np.float32)
