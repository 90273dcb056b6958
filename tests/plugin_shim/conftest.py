"""Fixtures for the plugin shim tests: the built sa3shim module and real `sa3 serve` daemons.

The module is built by scripts/build-shim (incremental: seconds when up to date); CI builds it
once with the VST3 before the tests. Daemons run a random tiny model with the hash text
encoder (`--model random:tiny`) on a free loopback port.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHIM_PYTHON = REPO / "plugin_shim" / "python"
BUILD = REPO / "build" / "shim"


def build_shim(vst3: bool = False) -> None:
    args = [str(REPO / "scripts" / "build-shim")] + ([] if vst3 else ["--no-vst3"])
    env = dict(os.environ, SA3_PYTHON=sys.executable)
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-shim failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def shim():
    """The sa3shim module, built from the current sources."""
    build_shim(vst3=False)
    if str(SHIM_PYTHON) not in sys.path:
        sys.path.insert(0, str(SHIM_PYTHON))
    return importlib.import_module("sa3shim")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One `sa3 serve` subprocess on a fixed loopback port (restartable on the same port),
    serving `model` (a model folder, or the random tiny model by default) and then, as
    `sa3 serve --model A --model B` does (protocol 1.4), each of `also`; `args` are more options
    (`--lora-dir DIR`)."""

    def __init__(
        self,
        port: int | None = None,
        model: str = "random:tiny",
        also: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.model = model
        self.also = tuple(also)
        self.args = tuple(args)
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Daemon:
        cmd = [sys.executable, "-m", "sa3", "serve", "--bind", self.endpoint, "--model", self.model]
        for model in self.also:
            cmd += ["--model", model]
        cmd += [*self.args, "--threads", "1"]
        self.process = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            lines.append(line)
            if re.search(r"listening on", line):
                return self
        self.kill()
        raise RuntimeError("sa3 serve did not start:\n" + "".join(lines))

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


@pytest.fixture(scope="module")
def daemon():
    d = Daemon().start()
    yield d
    d.kill()


class Host:
    """A simulated DAW: plays `audio` [channels, samples] through a processor in blocks.

    Position fields follow JUCE's PositionInfo; `block_sizes` cycles (sizes change every call).
    Returns the processed output, same shape as the input.
    """

    def __init__(self, processor, sample_rate: int, bpm: float = 120.0, meter=(4, 4)) -> None:
        self.processor = processor
        self.sample_rate = sample_rate
        self.bpm = bpm
        self.meter = meter

    def play(self, audio, block_sizes=(512,), loop_points=None, start: int = 0, **extra):
        out = np.empty_like(audio)
        t, i = 0, 0
        total = audio.shape[1]
        while t < total:
            n = min(block_sizes[i % len(block_sizes)], total - t)
            block = np.ascontiguousarray(audio[:, t : t + n])
            position = start + t
            self.processor.process_block(
                block,
                bpm=self.bpm,
                time_signature=self.meter,
                time_in_samples=position,
                ppq_position=position / self.sample_rate * self.bpm / 60.0,
                is_playing=True,
                is_looping=loop_points is not None,
                loop_points=loop_points,
                **extra,
            )
            out[:, t : t + n] = block
            t += n
            i += 1
        return out


@pytest.fixture
def single_thread_torch():
    """The daemons run with --threads 1: in-process references use the same sums."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wait_for(predicate, timeout: float, what: str, tick=None) -> None:
    """Poll `predicate` (calling `tick` between polls, e.g. to keep audio flowing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if tick is not None:
            tick()
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_signal(channels: int, samples: int, sample_rate: int, seed: int = 0):
    """A deterministic stereo test track: two sines plus a little noise, float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.1 * np.sin(2 * np.pi * 331.0 * t)
    audio = np.stack([tone, np.roll(tone, 17)])[:channels] + 0.02 * rng.standard_normal((channels, samples))
    return audio.astype(np.float32)


test_signal.__test__ = False  # a helper, not a test
