"""A sheet job's ``loras``: LoRA files next to the sheet at their strengths, in order, on the job's
model; the adapters' contents and strengths are part of the take hash; bad entries are sheet errors."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3.render.runner import InProcessRenderer, recorded_comment, render_sheet
from sa3.render.sheet import SheetError, load_sheet
from sa3core.pipeline import Pipeline
from tests.conftest import REPO

RELEASED = REPO / "tests" / "fixtures" / "released"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sheet.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


SHEET = """
    defaults: {{prompt: bright bells, seconds: 0.3, steps: 2, seed: 7, bit_depth: float, model: {model}}}
    jobs:
      - name: styled
        loras: ["loras/dora-rows.safetensors:{strength}", {{file: loras/lora-xs.safetensors, strength: 1}}]
      - name: plain
      - name: reversed
        loras: [loras/lora-xs.safetensors, "loras/dora-rows.safetensors:{strength}"]
"""


def _render(tmp_path: Path, strength: float):
    sheet = load_sheet(write(tmp_path, SHEET.format(model=RELEASED / "small", strength=strength)))
    return render_sheet(sheet, tmp_path / "out", InProcessRenderer(), show_progress=False)


def _read(tmp_path: Path, name: str) -> np.ndarray:
    return sf.read(tmp_path / "out" / f"{name}.wav", always_2d=True, dtype="float32")[0].T


def test_jobs_render_with_their_adapters_and_a_job_without_gets_the_base_model(tmp_path):
    (tmp_path / "loras").mkdir()
    for name in ("dora-rows", "lora-xs"):
        shutil.copy(RELEASED / "lora" / f"{name}.safetensors", tmp_path / "loras")
    results = _render(tmp_path, 0.7)
    assert [r.status for r in results] == ["rendered"] * 3, results
    files = [(RELEASED / "lora" / "dora-rows.safetensors", 0.7), (RELEASED / "lora" / "lora-xs.safetensors", 1.0)]
    adapted = Pipeline.load(RELEASED / "small", loras=files, merge_loras=False)
    np.testing.assert_array_equal(_read(tmp_path, "styled"), adapted.generate("bright bells", 13_230, 2, None, 7)[0])
    base = Pipeline.load(RELEASED / "small").generate("bright bells", 13_230, 2, None, 7)[0]
    np.testing.assert_array_equal(_read(tmp_path, "plain"), base)  # the adapters came off
    assert np.abs(_read(tmp_path, "styled") - base).max() > 0.05
    assert np.abs(_read(tmp_path, "reversed") - _read(tmp_path, "styled")).max() > 0.05  # order counts
    assert "loras=dora-rows@0.7,lora-xs@1 " in recorded_comment(tmp_path / "out" / "styled.wav")
    assert "loras=" not in recorded_comment(tmp_path / "out" / "plain.wav")
    assert [r.status for r in _render(tmp_path, 0.7)] == ["skipped"] * 3
    again = _render(tmp_path, 0.5)  # another strength: the two jobs with adapters render again
    assert [r.status for r in again] == ["rendered", "skipped", "rendered"]
    (tmp_path / "loras" / "lora-xs.safetensors").write_bytes((RELEASED / "lora" / "lora.safetensors").read_bytes())
    changed = _render(tmp_path, 0.5)  # same file name, other adapter (another type): its content counts
    assert [r.status for r in changed] == ["rendered", "skipped", "rendered"]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ('["a.safetensors:3"]', "outside -2..2"),
        ("a.safetensors", "must be a list"),
        ("[{file: a.safetensors, strength: 1, gain: 2}]", "FILE[:STRENGTH]"),
        ("[a, b, c, d, e, f, g, h, i]", "more than 8"),
    ],
)
def test_bad_lora_entries_are_sheet_errors(tmp_path, entry, words):
    path = write(tmp_path, f"jobs:\n  - {{prompt: x, seconds: 1, loras: {entry}}}\n")
    with pytest.raises(SheetError) as err:
        load_sheet(path)
    assert words in str(err.value) and "loras" in str(err.value)
