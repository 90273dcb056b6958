"""The ``sa3`` command as a user's shell starts it: ``python -m sa3`` and the installed console
script in a fresh interpreter. The rest of the suite runs the command forked from a warm zygote
(tests/forked_cli.py); these tests hold that shortcut to the plain start: same take bit for bit,
same messages, same exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import soundfile as sf

from tests.conftest import run_sa3, run_sa3_plain

SCRIPT = Path(sys.executable).with_name("sa3")


def test_python_dash_m_and_the_forked_command_write_the_same_take(tmp_path):
    plain, forked = tmp_path / "plain.wav", tmp_path / "forked.wav"
    args = ["generate", "dusty lofi drums, 84 BPM", "--seconds", "1", "--steps", "2", "--seed", "7", "--quiet"]
    first = run_sa3_plain(*args, "-o", plain)
    assert first.returncode == 0, first.stderr
    second = run_sa3(*args, "-o", forked)
    assert second.returncode == 0, second.stderr
    assert plain.read_bytes() == forked.read_bytes()
    assert first.stdout.replace(str(plain), "OUT") == second.stdout.replace(str(forked), "OUT")
    audio, rate = sf.read(plain)
    assert rate == 44_100 and audio.shape == (44_100, 2) and abs(audio).max() > 1e-3
    # a deliberately different take (another seed) is not the same file: the comparison can fail
    other = tmp_path / "other.wav"
    assert run_sa3(*args[:-2], "8", "--quiet", "-o", other).returncode == 0
    assert other.read_bytes() != forked.read_bytes()


def test_the_installed_script_and_the_forked_command_agree_on_errors_and_help(tmp_path):
    for args in (["--help"], ["generate", "x", "-o", str(tmp_path / "a.wav")], ["no-such-command"]):
        plain = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
        forked = run_sa3(*args)
        assert (plain.returncode, plain.stdout, plain.stderr) == (forked.returncode, forked.stdout, forked.stderr)
    assert plain.returncode == 2 and plain.stderr.strip().splitlines()[-1].startswith("sa3: error:")


def test_a_crash_in_one_forked_command_leaves_the_next_one_working(tmp_path):
    missing = tmp_path / "no-model"
    failed = run_sa3("generate", "pad", "--seconds", "1", "--model", missing, "-o", tmp_path / "a.wav")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr and str(missing) in failed.stderr
    assert run_sa3("--help").returncode == 0
