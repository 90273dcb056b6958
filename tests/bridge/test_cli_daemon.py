"""`sa3 generate|inpaint --daemon ENDPOINT` render through a running daemon, with exact lengths."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client
from sa3core.audio import save_audio
from sa3core.pipeline import DEFAULT_MODEL_DIR
from tests.conftest import run_sa3, stereo_tone


def test_generate_through_the_daemon(start_daemon, tmp_path):
    daemon = start_daemon("--threads", "1")
    out = tmp_path / "loop.wav"
    result = run_sa3(
        "generate", "tight breakbeat", "--bars", "1", "--bpm", "480", "--sample-rate", "48000",
        "--steps", "1", "--daemon", daemon.endpoint, "-o", out, "--bit-depth", "float", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(out, always_2d=True)
    assert (rate, audio.shape) == (48_000, (24_000, 2))  # 1 bar of 4/4 at 480 bpm = 0.5 s
    assert "job" in daemon.stderr() and "done" in daemon.stderr()  # it really ran in the daemon


@pytest.mark.slow
def test_inpaint_through_the_daemon_keeps_the_rest(start_daemon, tmp_path):
    daemon = start_daemon("--threads", "1")
    source = save_audio(tmp_path / "source.wav", stereo_tone(0.5), bit_depth="float")
    fixed = tmp_path / "fixed.wav"
    result = run_sa3(
        "inpaint", source, "fill", "--region", "0.1:0.2", "--steps", "1", "--daemon", daemon.endpoint,
        "-o", fixed, "--bit-depth", "float", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    before, _ = sf.read(source, always_2d=True, dtype="float32")
    after, _ = sf.read(fixed, always_2d=True, dtype="float32")
    assert after.shape == before.shape
    np.testing.assert_array_equal(after[:4410], before[:4410])
    np.testing.assert_array_equal(after[8820:], before[8820:])


def test_daemon_flag_without_a_daemon_fails_with_one_line(tmp_path):
    result = run_sa3(
        "generate", "x", "--seconds", "0.1", "--daemon", "tcp://127.0.0.1:9", "-o", tmp_path / "x.wav", "--quiet",
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("sa3: error: daemon: no answer from tcp://127.0.0.1:9")


def test_the_scale_lock_reaches_the_daemons_pipeline(start_daemon, tmp_path):
    """A request's scale_lock_db (protocol 1.1) changes a keyed take on the shipped model, which
    has semitone channels, and leaves a take without a key bit-identical; the tiny model, which
    has none, refuses it for a keyed prompt with one line, through `sa3 generate --daemon` too."""
    daemon = start_daemon("--threads", "2", model=str(DEFAULT_MODEL_DIR))
    with Client(daemon.endpoint) as client:
        takes = {
            (prompt, cut): client.generate(prompt, seconds=1.0, steps=2, seed=0, scale_lock_db=cut).audio
            for prompt in ("soft pad chords in D minor", "punchy house drum loop")
            for cut in (0.0, 24.0)
        }
    assert np.abs(takes["soft pad chords in D minor", 0.0] - takes["soft pad chords in D minor", 24.0]).max() > 1e-3
    np.testing.assert_array_equal(takes["punchy house drum loop", 0.0], takes["punchy house drum loop", 24.0])

    tiny = start_daemon("--threads", "1")
    out = tmp_path / "pad.wav"
    result = run_sa3(
        "generate", "pad in D minor", "--seconds", "0.2", "--steps", "1", "--scale-lock", "6",
        "--daemon", tiny.endpoint, "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 2 and not out.exists()
    assert "cannot lock notes" in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_requested_tail_reaches_the_daemons_pipeline(start_daemon, tiny_model_dir, tmp_path):
    """`sa3 generate --tail S --daemon` (protocol 1.2 tail_seconds): the take made in the daemon
    ends in that much digital silence, as the same take made in-process does."""
    daemon = start_daemon("--threads", "1", model=str(tiny_model_dir))
    takes = {}
    for where in ("daemon", "local"):
        out = tmp_path / f"{where}.wav"
        args = ["generate", "glass ping", "--seconds", "1", "--steps", "1", "--tail", "0.3", "-o", out]
        extra = ["--daemon", daemon.endpoint] if where == "daemon" else ["--model", tiny_model_dir]
        result = run_sa3(*args, *extra, "--bit-depth", "float", "--quiet")
        assert result.returncode == 0, result.stderr
        takes[where] = sf.read(out, always_2d=True)[0]
    silent = 44_100 - (np.flatnonzero(np.any(takes["daemon"] != 0, axis=1))[-1] + 1)
    assert 0.3 * 44_100 - 4096 < silent <= 0.3 * 44_100
    np.testing.assert_allclose(takes["daemon"], takes["local"], atol=1e-5)


def test_the_daemon_bar_starts_at_its_real_total(start_daemon, tmp_path):
    """`--daemon` draws its bar with the steps asked for, else the daemon's model's (capabilities
    default_steps: 8 for random:tiny), from its first frame: never 0/1."""
    import re

    daemon = start_daemon("--threads", "1")
    for extra, steps in ((["--steps", "2"], 2), ([], 8)):
        out = tmp_path / f"bar{steps}.wav"
        result = run_sa3("generate", "kick", "--seconds", "0.3", "--daemon", daemon.endpoint, "-o", out, *extra)
        assert result.returncode == 0, result.stderr
        counts = re.findall(r"generate \(daemon\):[^\r\n|]*\|[^|]*\| *(\d+/\d+)", result.stderr)
        assert counts and all(c.endswith(f"/{steps}") for c in counts), result.stderr
