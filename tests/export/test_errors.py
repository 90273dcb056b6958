"""Bad input to the exporter and the onnx backend: one clear line each (Sa3Error / exit 2)."""

from __future__ import annotations

import json
import os

import pytest

from export.manifest import EXPORT_FORMAT, MANIFEST_NAME, prepare_output, read_manifest
from sa3core.errors import Sa3Error

from ..conftest import run_sa3


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sa3: error: "), result.stderr
    return lines[0]


def test_export_of_a_missing_model(tmp_path):
    line = _one_line_error(run_sa3("export", "onnx", "--model", tmp_path / "nope", "-o", tmp_path / "out"))
    assert "nope" in line and "does not exist" in line
    assert not (tmp_path / "out").exists()


def test_export_without_a_model_when_the_default_is_missing(monkeypatch, tmp_path):
    import sa3core.pipeline
    from export.onnx_export import load_for_export

    monkeypatch.setattr(sa3core.pipeline, "DEFAULT_MODEL_DIR", tmp_path / "gone")
    with pytest.raises(Sa3Error, match="default model is missing.*--model"):
        load_for_export(None)


def test_non_empty_output_needs_force(tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(Sa3Error, match="not empty.*--force"):
        prepare_output(tmp_path, force=False)
    assert prepare_output(tmp_path, force=True) == tmp_path


def test_read_only_output(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/sa3-export"  # root writes through permission bits; /proc is read-only for everyone
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "out"
    with pytest.raises(Sa3Error, match="cannot write to output directory"):
        prepare_output(target, force=False)


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(Sa3Error, match="is a file"):
        prepare_output(tmp_path / "file", force=False)


@pytest.mark.parametrize("text", [json.dumps({"format": EXPORT_FORMAT + 1, "runtime": "onnx"}), "{not json"])
def test_manifest_of_another_format_or_broken(tmp_path, text):
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(Sa3Error, match="format|not valid JSON") as err:
        read_manifest(tmp_path)
    assert "\n" not in str(err.value)


def test_onnx_backend_on_a_folder_without_export(tiny_model_dir, tmp_path):
    line = _one_line_error(
        run_sa3(
            "generate", "x", "--seconds", "1", "--backend", "onnx", "--model", tiny_model_dir, "-o", tmp_path / "a.wav"
        )
    )
    assert "no ONNX export" in line and "sa3 export onnx" in line


def test_onnx_export_with_a_too_old_opset(tmp_path):
    line = _one_line_error(run_sa3("export", "onnx", "--random", "tiny", "--opset", "11", "-o", tmp_path / "o"))
    assert "opset 11" in line


@pytest.mark.parametrize(
    "target, module, extra", [("onnx", "onnx", "export"), ("coreml", "coremltools", "export-coreml")]
)
def test_export_without_its_packages_names_the_extra(target, module, extra, tmp_path):
    """A plain `scripts/setup` has no export packages: the command says what to install (once it
    printed a traceback after loading the model). The package is hidden the way a missing one
    fails: None in sys.modules makes its import raise ModuleNotFoundError."""
    import subprocess
    import sys

    from ..conftest import REPO

    code = (
        f"import sys; sys.modules[{module!r}] = None; from sa3.cli import main; "
        f"sys.exit(main(['export', {target!r}, '-o', {str(tmp_path / 'out')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    line = _one_line_error(done)
    assert f"needs {module!r}" in line and f"sa3[{extra}]" in line
    assert not (tmp_path / "out").exists()
