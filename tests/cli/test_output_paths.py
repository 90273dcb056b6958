"""Outputs that cannot be written are refused before any work, by every command that writes a
file: one line, exit 2, no traceback, nothing written (issue 26 item 7).

The commands run as a new user runs them, on the shipped default model; a model folder that
cannot load shows the check comes before the model does.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sa3core.audio import save_audio
from tests.conftest import run_sa3, stereo_tone

COMMANDS = ("generate", "inpaint", "continue", "encode", "decode")
# /proc takes no new files even from root (a read-only folder does not stop root).
UNWRITABLE = Path("/proc/sa3-test-output")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A source file and its latents (encoded by the shipped model) for the commands that read one."""
    folder = tmp_path_factory.mktemp("inputs")
    source = folder / "loop.wav"
    save_audio(source, stereo_tone(0.5))
    latents = folder / "loop.safetensors"
    result = run_sa3("encode", source, "-o", latents)
    assert result.returncode == 0, result.stderr
    return {"source": source, "latents": latents}


def command(name: str, inputs: dict[str, Path], output: Path, *extra: str) -> list:
    """``name`` as documented, writing ``output`` (its suffix is chosen here)."""
    suffix = ".safetensors" if name == "encode" else ".wav"
    output = output.with_name(output.name + suffix) if not output.name.endswith(suffix) else output
    args = {
        "generate": ["generate", "kick", "--seconds", "0.5", "--steps", "1", "--quiet"],
        "inpaint": ["inpaint", inputs["source"], "snare", "--region", "0.1:0.3", "--steps", "1", "--quiet"],
        "continue": ["continue", inputs["source"], "more", "--seconds", "0.3", "--steps", "1", "--quiet"],
        "encode": ["encode", inputs["source"]],
        "decode": ["decode", inputs["latents"]],
    }[name]
    return [*args, "-o", output, *extra]


def refused(result, needle: str) -> str:
    """The one error line of a refused command (asserting there is exactly one, with ``needle``)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sa3: error:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "wrote" not in result.stdout, result.stdout
    return lines[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_unwritable_folder_is_refused(name, inputs):
    result = run_sa3(*command(name, inputs, UNWRITABLE))
    refused(result, "cannot write files in folder '/proc'")


@pytest.mark.parametrize("name", COMMANDS)
def test_folder_given_as_the_output_is_refused(name, inputs, tmp_path):
    """With or without --overwrite it is "a folder", never "already exists"; the folder stays empty."""
    folder = tmp_path / ("take.safetensors" if name == "encode" else "take.wav")
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        line = refused(run_sa3(*command(name, inputs, folder, *extra)), "is a folder")
        assert "already exists" not in line
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /proc covers root")
@pytest.mark.parametrize("name", COMMANDS)
def test_read_only_folder_is_refused(name, inputs, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        refused(run_sa3(*command(name, inputs, folder / "take")), "Permission denied")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_output_is_checked_before_the_model_loads(inputs, tmp_path):
    """A model folder that cannot load: the output's error is the one shown, so it came first."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.json").write_text("{ not json")
    for name in ("generate", "encode", "decode"):
        result = run_sa3(*command(name, inputs, UNWRITABLE, "--model", broken))
        refused(result, "cannot write files in folder '/proc'")


def test_render_output_folder_is_checked_before_rendering(tmp_path):
    sheet = tmp_path / "pack.yaml"
    sheet.write_text(
        textwrap.dedent(
            """
            jobs:
              - {name: hit, prompt: kick, seconds: 0.3, steps: 1}
              - {name: taken, prompt: snare, seconds: 0.3, steps: 1, output: sub/taken.wav}
            """
        )
    )
    refused(run_sa3("render", sheet, "-o", UNWRITABLE, "--quiet"), "cannot write files in folder '/proc'")
    # A take whose file name is a folder, in an output folder that is otherwise fine.
    out = tmp_path / "out"
    (out / "sub" / "taken.wav").mkdir(parents=True)
    refused(run_sa3("render", sheet, "-o", out, "--quiet"), "is a folder")
    assert sorted(p.name for p in out.rglob("*")) == ["sub", "taken.wav"]
