"""A sheet job's own ``model`` (a released name or a folder), released folders in `sa3 render`, and
the cheap identity a released folder gets (configs by content, weights by size and time)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3.render.runner import InProcessRenderer, model_identity, render_sheet
from sa3.render.sheet import SheetError, load_sheet
from tests.conftest import REPO, run_sa3

RELEASED_SMALL = REPO / "tests" / "fixtures" / "released" / "small"


@pytest.fixture(scope="module")
def two_model_daemon():
    """`sa3 serve` with the random tiny model (default) and the small released fixture as "small"."""
    from tests.bridge.conftest import DaemonProcess

    daemon = DaemonProcess("--threads", "2", "--model", str(RELEASED_SMALL), model="random:tiny")
    yield daemon.wait_ready()
    daemon.stop()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sheet.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_a_sheet_job_on_a_released_folder_renders_the_pipelines_audio(tmp_path):
    from sa3core.pipeline import Pipeline

    shutil.copytree(RELEASED_SMALL, tmp_path / "models" / "small")
    sheet = load_sheet(
        write(
            tmp_path,
            """
            jobs:
              - name: bells
                prompt: bright bells
                seconds: 0.5
                steps: 2
                seed: 7
                model: models/small
                bit_depth: float
            """,
        )
    )
    assert sheet.jobs[0].model == str(tmp_path / "models" / "small")  # found next to the sheet
    renderer = InProcessRenderer(model=None)
    results = render_sheet(sheet, tmp_path / "out", renderer, show_progress=False)
    assert [r.status for r in results] == ["rendered"], results
    assert renderer._pipeline is None  # the default model was never needed, so never loaded
    audio, rate = sf.read(tmp_path / "out" / "bells.wav", always_2d=True, dtype="float32")
    expected = Pipeline.load(RELEASED_SMALL).generate("bright bells", 22_050, 2, None, 7)
    assert (rate, audio.shape) == (44_100, (22_050, 2))
    np.testing.assert_array_equal(audio.T, expected[0])
    again = render_sheet(
        load_sheet(tmp_path / "sheet.yaml"), tmp_path / "out", InProcessRenderer(), show_progress=False
    )
    assert [r.status for r in again] == ["skipped"]  # the identity is stable from run to run


def test_a_released_folder_identity_reads_configs_not_weights(tmp_path):
    folder = shutil.copytree(RELEASED_SMALL, tmp_path / "small")
    first = model_identity(folder)
    assert first.startswith("small:") and model_identity(folder) == first
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert model_identity(folder) != first  # a new weights file (pull, copy) is a new identity
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_identity(folder) == first
    config = folder / "model_config.json"
    config.write_text(config.read_text().replace("}", " }", 1))
    assert model_identity(folder) != first  # configs count by content


def test_a_folder_of_no_known_layout_has_no_identity(tmp_path):
    with pytest.raises(Exception, match="neither an sa3 model folder"):
        model_identity(tmp_path)


def test_an_empty_model_key_is_a_sheet_error(tmp_path):
    path = write(tmp_path, 'jobs:\n  - {prompt: x, seconds: 1, model: "  "}\n')
    with pytest.raises(SheetError) as caught:
        load_sheet(path)
    assert any("model: model is empty" in issue for issue in caught.value.issues)


def test_a_model_key_that_is_not_text_is_a_sheet_error(tmp_path):
    path = write(tmp_path, "jobs:\n  - {prompt: x, seconds: 1, model: 3}\n")
    with pytest.raises(SheetError) as caught:
        load_sheet(path)
    assert any("model: must be text" in issue for issue in caught.value.issues)


def test_sa3_render_refuses_an_unknown_model_before_anything_renders(tmp_path):
    sheet = write(tmp_path, "jobs:\n  - {name: a, prompt: x, seconds: 0.2, model: no-such-model}\n")
    result = run_sa3("render", sheet, "-o", tmp_path / "out", "--quiet", timeout=300)
    assert result.returncode == 2
    assert "job 1 (a): model: unknown model 'no-such-model'" in result.stderr
    assert not (tmp_path / "out" / "a.wav").exists()


def test_sa3_render_with_a_released_model_job(tmp_path):
    sheet = write(
        tmp_path,
        f"""
        jobs:
          - {{name: pad, prompt: warm pad, seconds: 0.3, steps: 1, model: {RELEASED_SMALL}}}
        """,
    )
    result = run_sa3("render", sheet, "-o", tmp_path / "out", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert sf.info(str(tmp_path / "out" / "pad.wav")).frames == 13_230


def test_a_render_sheet_names_a_daemon_model(two_model_daemon, tmp_path):
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(
        textwrap.dedent(
            """
            jobs:
              - {name: bells, prompt: bright bells, seconds: 0.3, steps: 1, model: small}
              - {name: beat, prompt: dusty beat, seconds: 0.3, steps: 1}
            """
        )
    )
    result = run_sa3("render", sheet, "-o", tmp_path / "out", "--daemon", two_model_daemon.endpoint, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sf.info(str(tmp_path / "out" / "bells.wav")).frames == 13_230
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - {name: b, prompt: x, seconds: 0.3, model: medium}\n")
    result = run_sa3("render", bad, "-o", tmp_path / "bad", "--daemon", two_model_daemon.endpoint, "--quiet")
    assert result.returncode == 2
    assert "model 'medium' is not served by the daemon" in result.stderr and "random:tiny, small" in result.stderr
