import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sa3core.audio import save_audio
from tests.conftest import run_sa3, stereo_tone


def test_bars_at_tempo_give_exact_samples(tiny_model_dir, tmp_path):
    out = tmp_path / "loop.wav"
    result = run_sa3(
        "generate",
        "house drum loop",
        "--bars",
        "4",
        "--bpm",
        "120",
        "--steps",
        "2",
        "--model",
        tiny_model_dir,
        "-o",
        out,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    info = sf.info(str(out))
    assert (info.frames, info.samplerate, info.channels) == (352_800, 44_100, 2)


def test_seconds_variations_and_host_rate(tiny_model_dir, tmp_path):
    out = tmp_path / "fx.flac"
    result = run_sa3(
        "generate",
        "whoosh",
        "--seconds",
        "1.5",
        "--variations",
        "2",
        "--sample-rate",
        "48000",
        "--bit-depth",
        "16",
        "--steps",
        "1",
        "--model",
        tiny_model_dir,
        "-o",
        out,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    for k in (1, 2):
        info = sf.info(str(tmp_path / f"fx-{k}.flac"))
        assert (info.frames, info.samplerate) == (72_000, 48_000)


def test_inpaint_and_continue_commands(tiny_model_dir, tmp_path):
    source = tmp_path / "song.wav"
    save_audio(source, stereo_tone(4.0), bit_depth="float")
    out = tmp_path / "edit.wav"
    result = run_sa3(
        "inpaint",
        source,
        "snare fill",
        "--region",
        "2.1:3.1",
        "--bpm",
        "120",
        "--steps",
        "1",
        "--model",
        tiny_model_dir,
        "-o",
        out,
        "--bit-depth",
        "float",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    original, _ = sf.read(str(source), dtype="float32")
    edited, _ = sf.read(str(out), dtype="float32")
    assert edited.shape == original.shape
    # Bars 2.1 to 3.1 at 120 bpm in 4/4 are 2.0 s to 4.0 s; the first two seconds are untouched.
    np.testing.assert_array_equal(edited[:88_200], original[:88_200])
    cont = tmp_path / "more.wav"
    result = run_sa3(
        "continue",
        source,
        "keep going",
        "--bars",
        "1",
        "--bpm",
        "120",
        "--steps",
        "1",
        "--model",
        tiny_model_dir,
        "-o",
        cont,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert sf.info(str(cont)).frames == 176_400 + 88_200


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "x", "--seconds", "0"], "longer than zero"),
        (["generate", "x", "--seconds", "400"], "limit"),
        (["generate", "x", "--bars", "4"], "needs --bpm"),
        (["generate", "x", "--bars", "4", "--bpm", "5000"], "tempo"),
        (["generate", "x", "--bars", "4", "--bpm", "120", "--meter", "4/5"], "denominator"),
        (["generate", "x", "--seconds", "1", "--model", "/no/such/model"], "does not exist"),
        (["generate", "x", "--seconds", "1", "--steps", "0"], "--steps"),
        (["generate", "x", "--seconds", "1", "--warp", "--daemon", "tcp://127.0.0.1:9"], "--warp"),
        (["generate", "x", "--seconds", "1", "--phase-iterations", "-2"], "--phase-iterations"),
        (["generate", "x", "--seconds", "1", "--scale-lock", "-3"], "--scale-lock"),
        (["generate", "x", "--seconds", "1", "--scale-lock", "nan"], "--scale-lock"),
        (["generate", "pad in D minor", "--seconds", "1", "--scale-lock", "12"], "semitone channels"),
        (["generate", "x", "--seconds", "1", "--tail", "-1"], "--tail"),
        (["generate", "x", "--seconds", "1", "--tail", "1.5"], "leaves nothing to generate"),
        (["inpaint", "SRC", "x", "--region", "3:9"], "outside"),
        (["inpaint", "SRC", "x", "--region", "1:2", "--region", "1.5:3"], "overlap"),
        (["inpaint", "SRC", "x", "--region", "2:2"], "empty"),
        (["inpaint", "/no/such.wav", "x", "--region", "1:2"], "does not exist"),
        (["continue", "SRC", "x", "--seconds", "-1"], "longer than zero"),
    ],
)
def test_errors_are_one_line_and_write_nothing(tiny_model_dir, tmp_path, args, needle):
    source = tmp_path / "src.wav"
    save_audio(source, stereo_tone(4.0))
    args = [str(source) if a == "SRC" else a for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model_dir)]
    out = tmp_path / "out.wav"
    result = run_sa3(*args, "-o", out, "--quiet")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sa3: error")]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_existing_output_is_not_overwritten(tiny_model_dir, tmp_path):
    out = tmp_path / "taken.wav"
    out.write_bytes(b"precious")
    result = run_sa3("generate", "x", "--seconds", "0.5", "--model", tiny_model_dir, "-o", out, "--quiet")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert out.read_bytes() == b"precious"


def test_warp_flag_makes_the_take_on_the_frame_grid(tiny_model_dir, tmp_path):
    """--warp overrides the model's tempo_grid (off for this model): another take, same exact length."""
    takes = {}
    for flag in ("--no-warp", "--warp"):
        out = tmp_path / f"{flag}.wav"
        args = ["generate", "kick loop", "--bars", "1", "--bpm", "120", "--steps", "2", "--model", tiny_model_dir]
        result = run_sa3(*args, flag, "-o", out, "--quiet")
        assert result.returncode == 0, result.stderr
        takes[flag], _ = sf.read(str(out), always_2d=True)
    assert takes["--warp"].shape == takes["--no-warp"].shape == (88_200, 2)
    assert np.abs(takes["--warp"] - takes["--no-warp"]).max() > 1e-4


def test_phase_iterations_flag_overrides_the_model(tiny_model_dir, tmp_path):
    """--phase-iterations N decodes with N Griffin-Lim iterations whatever model.json says."""
    takes = {}
    for flag in ([], ["--phase-iterations", "0"], ["--phase-iterations", "4"]):
        out = tmp_path / f"take{len(takes)}.wav"
        args = ["generate", "pad", "--seconds", "1", "--steps", "1", "--model", tiny_model_dir, "-o", out, "--quiet"]
        result = run_sa3(*args, "--bit-depth", "float", *flag)
        assert result.returncode == 0, result.stderr
        takes[" ".join(flag)] = sf.read(str(out))[0]
    np.testing.assert_array_equal(takes[""], takes["--phase-iterations 0"])  # the tiny model's setting is 0
    assert not np.allclose(takes[""], takes["--phase-iterations 4"], atol=1e-4)


def test_tail_flag_ends_the_take_in_silence(tiny_model_dir, tmp_path):
    """--tail S: the file's last S seconds (rounded down to whole latent frames) are digital silence."""
    takes = {}
    for flag in ([], ["--tail", "0.3"]):
        out = tmp_path / f"take{len(takes)}.wav"
        args = ["generate", "glass ping", "--seconds", "1", "--steps", "2", "--model", tiny_model_dir, "-o", out]
        result = run_sa3(*args, "--quiet", "--bit-depth", "float", *flag)
        assert result.returncode == 0, result.stderr
        takes[len(takes)] = sf.read(str(out), always_2d=True)[0]
    plain, ended = takes[0], takes[1]
    silent = np.flatnonzero(np.any(ended != 0, axis=1))[-1] + 1  # first sample of the silent tail
    assert plain.shape == ended.shape == (44_100, 2) and np.any(plain[silent:])
    assert 0.3 * 44_100 - 4096 < 44_100 - silent <= 0.3 * 44_100


FAST_EXIT_SCRIPT = """
import atexit, sys

class Teardown:
    def __del__(self):
        print("interpreter teardown ran", flush=True)

keep = Teardown()  # collected only when the interpreter tears its modules down
atexit.register(lambda: print("exit handler ran"))
sys.argv = ["sa3", *sys.argv[1:]]
from sa3.cli import entry
entry()
"""


@pytest.mark.parametrize("command", ["generate", "info"])
def test_console_entry_skips_teardown_only_after_rendering(tiny_model_dir, tmp_path, command):
    """`sa3 generate` leaves without the interpreter's teardown, but with its exit handlers run and
    its output (a pipe here, so block-buffered) complete; other commands exit the ordinary way."""
    out = tmp_path / "loop.wav"
    args = {
        "generate": ["generate", "kick", "--seconds", "0.5", "--steps", "1", "--model", str(tiny_model_dir)],
        "info": ["info"],
    }[command]
    if command == "generate":
        args += ["-o", str(out)]  # with its progress bar, whose monitor is a daemon thread
    result = subprocess.run(
        [sys.executable, "-c", FAST_EXIT_SCRIPT, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "exit handler ran" in result.stdout
    if command == "generate":
        assert f"wrote {out}" in result.stdout
        assert sf.info(str(out)).frames == 22_050
        assert "interpreter teardown ran" not in result.stdout
    else:
        assert "interpreter teardown ran" in result.stdout


def test_console_entry_keeps_the_error_status(tmp_path):
    """A refused request still exits 2 with its one-line message through the fast exit."""
    result = run_sa3("generate", "kick", "--seconds", "-1", "-o", tmp_path / "x.wav")
    assert result.returncode == 2
    assert result.stderr.startswith("sa3: error:"), result.stderr
    assert not (tmp_path / "x.wav").exists()
