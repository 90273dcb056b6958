"""``--backend``: an unknown name lists every backend, and an ONNX export that stopped part way
says so instead of suggesting to export the export (issue 26 item 14)."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from sa3core.backends import BACKENDS
from sa3core.pipeline import default_model_dir
from tests.conftest import run_sa3


def one_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sa3: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_every_backend_is_registered_or_lazy():
    assert {"torch", "onnx"} <= set(BACKENDS.names())


@pytest.mark.parametrize("command", ["generate", "render"])
def test_unknown_backend_lists_every_backend(command, tmp_path):
    if command == "generate":
        args = ["generate", "kick", "--seconds", "0.5", "-o", tmp_path / "kick.wav"]
    else:
        sheet = tmp_path / "pack.yaml"
        sheet.write_text(textwrap.dedent("jobs:\n  - {name: hit, prompt: kick, seconds: 0.5}\n"))
        args = ["render", sheet, "-o", tmp_path / "out"]
    line = one_error(run_sa3(*args, "--backend", "tensorflow", "--quiet"))
    assert line == "sa3: error: unknown backend 'tensorflow'; choose one of onnx, torch"
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["pack.yaml"])


@pytest.mark.parametrize("given", ["export folder", "model folder"])
def test_incomplete_export_says_so(given, tmp_path):
    """An export of the shipped model that stopped before its manifest (model.json and a graph),
    given as --model itself or as the onnx/ subfolder of the model folder given."""
    model = tmp_path / "model"
    export = model / "onnx" if given == "model folder" else model
    export.mkdir(parents=True)
    for folder in {model, export}:
        shutil.copy(default_model_dir() / "model.json", folder / "model.json")
    (export / "dit_condition.onnx").write_bytes(b"")
    out = tmp_path / "take.wav"
    line = one_error(run_sa3("generate", "kick", "--seconds", "0.5", "--backend", "onnx", "--model", model, "-o", out))
    assert f"'{export}' is an incomplete export (no manifest.json)" in line
    assert f"re-run `sa3 export onnx -o {export} --force`" in line
    assert not out.exists()


def test_model_without_export_still_suggests_exporting_it(tmp_path):
    """The shipped model folder has no export: the suggestion names it and its onnx/ subfolder."""
    folder = default_model_dir()
    line = one_error(run_sa3("generate", "kick", "--seconds", "0.5", "--backend", "onnx", "-o", tmp_path / "x.wav"))
    assert f"run `sa3 export onnx --model {folder} -o {folder / 'onnx'}` first" in line
