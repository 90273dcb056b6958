"""Batch rendering with a real (random, tiny) model: lengths, loudness, resume, failures, CLI, daemon."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from sa3.render.loudness import true_peak_db
from sa3.render.runner import REPORT_NAME, InProcessRenderer, render_sheet, summary_table
from sa3.render.sheet import load_sheet
from sa3core import timebase
from tests.conftest import run_sa3, stereo_tone

RATE = 44_100


def write_sheet(folder: Path, body: str, name: str = "sheet.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


PACK = """
defaults:
  steps: 1
  loudness: -20  # a random model renders click trains: -14 would need extreme limiting (tested below)
jobs:
  - name: loop
    prompt: odd meter drum loop
    bars: 1
    bpm: 140
    meter: 7/8
    loop: true
    tail: fold
    chain: [{type: HighpassFilter, cutoff_frequency_hz: 40}, {type: Reverb, room_size: 0.5}]
  - name: hit
    prompt: impact
    seconds: 0.5
    tail: keep
    tail_max: 1.5
    chain: [{type: Reverb, room_size: 0.9, wet_level: 0.6}]
    output: hits/{name}.flac
  - name: takes
    prompt: pad
    seconds: 0.6
    seed: 5
    variations: 2
    loudness: null
"""


@pytest.fixture(scope="module")
def rendered(tiny_model_dir, tmp_path_factory):
    """The PACK sheet rendered once; later tests re-run it in the same folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pack")
    sheet = load_sheet(write_sheet(folder, PACK))
    out = folder / "out"
    results = render_sheet(sheet, out, InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    return sheet, out, results


def test_outputs_have_exact_lengths_loudness_and_peaks(rendered):
    sheet, out, results = rendered
    assert [r.status for r in results] == ["rendered"] * 4
    loop, _ = sf.read(out / "loop.wav", dtype="float32", always_2d=True)
    assert loop.shape[0] == timebase.bars_to_samples(1, 140, "7/8")
    assert abs(pyloudnorm.Meter(RATE).integrated_loudness(loop.astype(np.float64)) - -20) < 0.5
    assert true_peak_db(loop.T, circular=True) <= -1.0 + 1e-4  # 24-bit rounding may add a hair
    hit, _ = sf.read(out / "hits" / "hit.flac", dtype="float32", always_2d=True)
    assert RATE // 2 < hit.shape[0] <= RATE * 2  # kept tail: longer than the 0.5 s, at most +1.5 s
    takes = [sf.read(out / f"takes-{k}.wav", dtype="float32")[0] for k in (1, 2)]
    assert all(t.shape == (round(0.6 * RATE), 2) for t in takes)
    assert not np.allclose(takes[0], takes[1])  # seeds 5 and 6 differ
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["rendered"] == 4 and report["failed"] == 0
    assert {o["file"] for o in report["outputs"]} == {"loop.wav", "hits/hit.flac", "takes-1.wav", "takes-2.wav"}


def test_rerun_skips_finished_outputs_without_loading_the_model(rendered, tiny_model_dir):
    sheet, out, _ = rendered
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix in (".wav", ".flac")}
    renderer = InProcessRenderer(str(tiny_model_dir))
    results = render_sheet(sheet, out, renderer, show_progress=False)
    assert [r.status for r in results] == ["skipped"] * 4
    assert renderer._pipeline is None  # nothing needed the model
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    table = summary_table(results)
    assert "0 rendered, 4 skipped, 0 failed" in table and "loop.wav" in table


def test_changed_job_rerenders_only_itself(rendered, tiny_model_dir):
    sheet, out, _ = rendered
    path = sheet.path
    path.write_text(PACK.replace("prompt: impact", "prompt: bigger impact"))
    hit_before = (out / "hits" / "hit.flac").stat().st_mtime_ns
    loop_before = (out / "loop.wav").stat().st_mtime_ns
    results = render_sheet(load_sheet(path), out, InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    assert {r.file: r.status for r in results} == {
        "loop.wav": "skipped",
        "hits/hit.flac": "rendered",
        "takes-1.wav": "skipped",
        "takes-2.wav": "skipped",
    }
    assert (out / "hits" / "hit.flac").stat().st_mtime_ns != hit_before
    assert (out / "loop.wav").stat().st_mtime_ns == loop_before
    with sf.SoundFile(out / "hits" / "hit.flac") as f:
        assert f.title == "bigger impact"
    path.write_text(PACK)


def test_failed_jobs_are_reported_and_the_batch_goes_on(tiny_model_dir, tmp_path):
    sf.write(tmp_path / "src.wav", stereo_tone(1.0).T, RATE, subtype="FLOAT")
    impulse = np.zeros(4410, np.float32)
    impulse[0] = 1.0
    sf.write(tmp_path / "ir.wav", impulse, RATE)
    path = write_sheet(
        tmp_path,
        f"""
        defaults: {{steps: 1}}
        jobs:
          - {{name: gone, prompt: more, mode: continue, source: src.wav, seconds: 0.3}}
          - name: badfx
            prompt: hit
            seconds: 0.3
            chain: [{{type: Convolution, impulse_response_filename: "{tmp_path / "ir.wav"}"}}]
          - {{name: fine, prompt: ok, seconds: 0.3}}
          - {{name: loud, prompt: ok, seconds: 0.5, loudness: -3, true_peak: -9}}
        """,
    )
    sheet = load_sheet(path)  # both files exist now: the sheet is valid
    (tmp_path / "src.wav").unlink()
    (tmp_path / "ir.wav").unlink()
    out = tmp_path / "out"
    results = render_sheet(sheet, out, InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    status = {r.job: r for r in results}
    assert status["gone"].status == "failed" and "does not exist" in status["gone"].error
    assert status["badfx"].status == "failed" and status["badfx"].error
    assert status["fine"].status == "rendered" and (out / "fine.wav").exists()
    names = [".sa3-render-manifest.json", "fine.wav", "loud.wav", REPORT_NAME]
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary files left behind
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["failed"] == 2 and report["rendered"] == 2
    # -3 LUFS under a -9 dBTP ceiling cannot be reached: it renders, under the ceiling, and says so.
    assert status["loud"].status == "rendered" and "not the -3 target" in status["loud"].warning
    assert status["loud"].true_peak_db <= -9.0 and status["fine"].warning == ""
    assert "FAILED" in summary_table(results)


def test_inpaint_job_keeps_audio_outside_its_bar_regions(tiny_model_dir, tmp_path):
    source = stereo_tone(2.0)
    sf.write(tmp_path / "src.wav", source.T, RATE, subtype="FLOAT")
    path = write_sheet(
        tmp_path,
        """
        jobs:
          - {name: fix, prompt: fill, mode: inpaint, source: src.wav, bpm: 120, regions: ["1.3:1.4"], steps: 1, bit_depth: float}
        """,
    )
    out = tmp_path / "out"
    results = render_sheet(load_sheet(path), out, InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    assert results[0].status == "rendered", results[0].error
    audio, _ = sf.read(out / "fix.wav", dtype="float32", always_2d=True)
    start, end = RATE, RATE * 3 // 2  # beats 3 and 4 of bar 1 at 120 bpm: 1.0 s to 1.5 s
    np.testing.assert_array_equal(audio.T[:, :start], source[:, :start])
    np.testing.assert_array_equal(audio.T[:, end:], source[:, end:])
    assert not np.array_equal(audio.T[:, start:end], source[:, start:end])


def test_cli_renders_and_a_rerun_skips(tiny_model_dir, tmp_path):
    good = write_sheet(tmp_path, "jobs:\n  - {name: blip, prompt: blip, seconds: 0.3, steps: 1, loudness: -20}\n")
    out = tmp_path / "out"
    first = run_sa3("render", good, "-o", out, "--model", tiny_model_dir, "--quiet")
    assert first.returncode == 0, first.stderr
    assert "blip.wav" in first.stdout and "1 rendered, 0 skipped, 0 failed" in first.stdout
    assert sf.info(out / "blip.wav").frames == round(0.3 * RATE)
    # The same sheet, model and folder from the Python API: the CLI's output counts as finished.
    mtime = (out / "blip.wav").stat().st_mtime_ns
    results = render_sheet(load_sheet(good), out, InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    assert [r.status for r in results] == ["skipped"] and (out / "blip.wav").stat().st_mtime_ns == mtime


def test_cli_lists_every_sheet_problem_and_renders_nothing(tiny_model_dir, tmp_path):
    bad = write_sheet(
        tmp_path,
        "jobs:\n  - {name: a, prompt: x, seconds: 1, chain: [{type: Reverbb}]}\n  - {name: b, prompt: y, bars: 2}\n",
        name="bad.yaml",
    )
    result = run_sa3("render", bad, "-o", tmp_path / "bad_out", "--model", tiny_model_dir)
    assert result.returncode == 2
    assert "bad.yaml:2: job 1 (a): chain[0].type:" in result.stderr and "did you mean 'Reverb'" in result.stderr
    assert "bad.yaml:3: job 2 (b): bars:" in result.stderr
    assert not (tmp_path / "bad_out").exists()


def test_daemon_render_matches_in_process(tiny_model_dir, tmp_path):
    from sa3.render.daemon import DaemonRenderer
    from tests.bridge.conftest import DaemonProcess

    path = write_sheet(tmp_path, "jobs:\n  - {name: d, prompt: hum, seconds: 0.4, seed: 3, steps: 1, loudness: -18}\n")
    sheet = load_sheet(path)
    local = render_sheet(sheet, tmp_path / "local", InProcessRenderer(str(tiny_model_dir)), show_progress=False)
    daemon = DaemonProcess(model=str(tiny_model_dir)).wait_ready()
    try:
        renderer = DaemonRenderer(daemon.endpoint)
        remote = render_sheet(sheet, tmp_path / "remote", renderer, show_progress=False)
        renderer.close()
    finally:
        daemon.stop()
    assert local[0].status == remote[0].status == "rendered", remote[0].error
    a, _ = sf.read(tmp_path / "local" / "d.wav", dtype="float32")
    b, _ = sf.read(tmp_path / "remote" / "d.wav", dtype="float32")
    np.testing.assert_allclose(a, b, atol=1e-4)
