"""``sa3 render`` as a command: a killed render resumes (issue 26 item 16) and a sheet's
problems are each reported once (item 15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import soundfile as sf

from sa3.render.runner import MANIFEST_NAME, REPORT_NAME, TEMP_PREFIX
from tests.conftest import SA3, run_sa3

TAKES = 5
SHEET = f"""
jobs:
  - name: pad
    prompt: warm pad
    seconds: 0.5
    steps: 2
    seed: {list(range(1, TAKES + 1))}
"""


def write_sheet(folder: Path, text: str) -> Path:
    sheet = folder / "pack.yaml"
    sheet.write_text(textwrap.dedent(text).lstrip("\n"))
    return sheet


def kill_after_first_take(sheet: Path, out: Path, model: Path) -> int:
    """Start `sa3 render`, SIGKILL it once its first take is in place; returns its process id."""
    render = subprocess.Popen(
        [*SA3, "render", str(sheet), "-o", str(out), "--model", str(model), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "pad-1.wav"
    deadline = time.monotonic() + 240
    while not first.exists() and render.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    render.send_signal(signal.SIGKILL)
    assert render.wait(timeout=60) == -signal.SIGKILL, "the render ended before it could be killed"
    return render.pid


def test_killed_render_cleans_its_leftovers_and_skips_finished_takes(tiny_model_dir, tmp_path):
    sheet = write_sheet(tmp_path, SHEET)
    out = tmp_path / "out"
    pid = kill_after_first_take(sheet, out, tiny_model_dir)
    finished = {p.name: p.stat() for p in out.glob("pad-*.wav")}
    assert 1 <= len(finished) < TAKES, sorted(finished)  # killed mid-job
    # What a kill inside a take's write leaves (whether or not this one landed there): the
    # killed render's private folder with half a take, and a manifest being replaced.
    (out / f"{TEMP_PREFIX}{pid}-a1b2c3").mkdir()
    (out / f"{TEMP_PREFIX}{pid}-a1b2c3" / "take.wav").write_bytes(b"RIFF")
    (out / f"{TEMP_PREFIX}{pid}-d4e5f6.json").write_text("{")
    # Not leftovers: a running render's temporary (this process is alive) and the user's own files.
    running = out / f"{TEMP_PREFIX}{os.getpid()}-g7h8i9.json"
    running.write_text("{")
    mine = [out / ".notes.wav", out / ".sa3-unrelated.wav"]
    for path in mine:
        path.write_bytes(b"keep")

    result = run_sa3("render", sheet, "-o", out, "--model", tiny_model_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in out.iterdir() if p.name.startswith(TEMP_PREFIX))
    assert left == [running.name], left
    assert all(path.read_bytes() == b"keep" for path in mine)
    report = json.loads((out / REPORT_NAME).read_text())
    status = {entry["file"]: entry["status"] for entry in report["outputs"]}
    assert status == {f"pad-{k}.wav": "skipped" if f"pad-{k}.wav" in finished else "rendered" for k in range(1, 6)}
    for name, before in finished.items():  # the finished takes were not written again
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert all(sf.info(str(out / f"pad-{k}.wav")).frames == 22_050 for k in range(1, TAKES + 1))


def test_take_renamed_into_place_before_its_manifest_entry_counts_as_finished(tiny_model_dir, tmp_path):
    """A kill between a take's rename and the manifest's update: the take's own comment (its take
    hash) shows it is finished, so the next run neither refuses it nor renders it again."""
    sheet = write_sheet(tmp_path, SHEET)
    out = tmp_path / "out"
    kill_after_first_take(sheet, out, tiny_model_dir)
    # The kill often lands before the manifest is first written (no manifest at all); when it
    # landed later, take the entry out, as if the kill came before it was recorded.
    if (out / MANIFEST_NAME).exists():
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        manifest["outputs"].pop("pad-1.wav", None)
        (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    before = (out / "pad-1.wav").stat()

    result = run_sa3("render", sheet, "-o", out, "--model", tiny_model_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["outputs"][0]["file"] == "pad-1.wav" and report["outputs"][0]["status"] == "skipped"
    assert report["outputs"][0]["lufs"] is not None  # measured from the file and recorded
    assert (out / "pad-1.wav").stat().st_mtime_ns == before.st_mtime_ns
    assert "pad-1.wav" in json.loads((out / MANIFEST_NAME).read_text())["outputs"]


def test_a_take_of_another_job_is_still_protected(tiny_model_dir, tmp_path):
    """Only a file a render of this very job wrote is taken as the render's own."""
    out = tmp_path / "out"
    out.mkdir()
    other = write_sheet(tmp_path, "jobs:\n  - {name: other, prompt: x, seconds: 0.3, steps: 1, output: pad-1.wav}\n")
    assert run_sa3("render", other, "-o", out, "--model", tiny_model_dir, "--quiet").returncode == 0
    (out / MANIFEST_NAME).unlink()
    sheet = write_sheet(tmp_path, SHEET)
    result = run_sa3("render", sheet, "-o", out, "--model", tiny_model_dir, "--quiet")
    assert result.returncode == 2 and "pad-1.wav' exists and was not written by sa3 render" in result.stderr


def test_sheet_problems_are_each_reported_once(tmp_path):
    """Both seconds and bars: one problem, not a second wrong one; a duplicate name is reported
    although that job's output is bad too (on the shipped model: nothing loads, nothing renders)."""
    sheet = write_sheet(
        tmp_path,
        """
        jobs:
          - {name: riser, prompt: riser, seconds: 2, bars: 4, bpm: 120}
          - {name: riser, prompt: pad, seconds: 1, output: riser.mp3}
        """,
    )
    result = run_sa3("render", sheet.name, "-o", "out", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    problems = [line.removeprefix("sa3: error: ") for line in result.stderr.splitlines()[:-1]]
    assert problems == [
        "pack.yaml:2: job 1 (riser): bars: give seconds or bars, not both",
        "pack.yaml:3: job 2 (riser): output: 'riser.mp3' has an unknown extension; use one of .wav, .flac, .aif, .aiff, .ogg",
        "pack.yaml:3: job 2: name: 'riser' is also job 1's name; names must be unique",
    ], result.stderr
    assert result.stderr.splitlines()[-1].startswith("sa3: error: 3 problem(s)")
    assert not (tmp_path / "out").exists()
