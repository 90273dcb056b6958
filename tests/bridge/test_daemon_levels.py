"""Levels and kept samples through a real daemon serving the shipped model (what the plugin and
`--daemon` clients get): the ceiling at the reply rate, the input's own samples at its own rate."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client
from sa3.render.loudness import true_peak_db
from sa3core.pipeline import DEFAULT_MODEL_DIR
from tests.conftest import run_sa3

CEILING_DBTP = -1.0


@pytest.fixture(scope="module")
def shipped_daemon(tmp_path_factory):
    from tests.bridge.conftest import DaemonProcess

    daemon = DaemonProcess("--threads", "2", model=str(DEFAULT_MODEL_DIR)).wait_ready()
    yield daemon
    daemon.stop()


def test_a_48_khz_take_from_the_daemon_stays_under_the_ceiling(shipped_daemon):
    """The README's loop asked for at 48 kHz, as the plugin asks in a 48 kHz session (the daemon
    resampled after its ceiling: -0.98 dBTP)."""
    with Client(shipped_daemon.endpoint) as client:
        result = client.generate("punchy house drum loop, 120 bpm", bars=4, bpm=120, sample_rate=48_000)
    assert result.sample_rate == 48_000 and result.audio.shape == (1, 2, 384_000)
    assert true_peak_db(result.audio[0]) <= CEILING_DBTP + 1e-3


def test_inpaint_through_the_daemon_keeps_a_48_khz_files_integers(shipped_daemon, tmp_path):
    rate = 48_000
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    music = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.25 * np.sin(2 * np.pi * 330 * t)])
    codes = np.round((music + 0.01 * rng.standard_normal(music.shape)) * 2**23).astype(np.int64)
    source = tmp_path / "take.wav"
    sf.write(str(source), (codes / 2**23).T, rate, subtype="PCM_24")
    out = tmp_path / "fixed.wav"
    result = run_sa3(
        "inpaint", source, "snare fill", "--region", "0.25:0.6", "--steps", "2",
        "--daemon", shipped_daemon.endpoint, "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    take, take_rate = sf.read(str(out), dtype="int32", always_2d=True)
    take = take.T >> 8  # 24-bit codes
    assert take_rate == rate and take.shape == codes.shape
    start, end = int(0.25 * rate), int(0.6 * rate)
    np.testing.assert_array_equal(take[:, :start], codes[:, :start])
    np.testing.assert_array_equal(take[:, end:], codes[:, end:])
    assert true_peak_db(take[:, start:end] / 2**23) <= CEILING_DBTP + 1e-3
