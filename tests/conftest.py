"""Shared fixtures: small real models (random weights) saved as real model folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SA3 = [sys.executable, "-m", "sa3"]


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
    """Run the real `sa3` command in a subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    return subprocess.run([*SA3, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def stereo_tone(seconds: float, freq: float = 220.0, rate: int = 44_100) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    left = 0.4 * np.sin(2 * np.pi * freq * t)
    right = 0.3 * np.sin(2 * np.pi * freq * 1.5 * t)
    return np.stack([left, right]).astype(np.float32)
