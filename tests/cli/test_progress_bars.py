"""Progress bars of the long commands (issue 26 item 18): on stderr like generate's, showing the
real total from their first frame, and off with --quiet."""

from __future__ import annotations

import re

import pytest

from sa3core.audio import save_audio
from sa3core.families.sa3 import read_settings
from tests.conftest import run_sa3, stereo_tone


def frames(stderr: str, label: str) -> list[str]:
    """The ``done/total`` counts of each frame tqdm drew for the bar ``label``."""
    return re.findall(rf"{label}:[^\r\n|]*\|[^|]*\| *(\d+/\d+)", stderr)


@pytest.mark.slow  # two encode searches on the shipped model, about 13 s; .ci/run runs it
def test_encode_search_has_a_progress_bar(tmp_path):
    """On the shipped model: a short clip is one chunk, so the bar counts the --search steps."""
    source = tmp_path / "tone.wav"
    save_audio(source, stereo_tone(0.25))
    result = run_sa3("encode", source, "-o", tmp_path / "tone.safetensors", "--search", "2")
    assert result.returncode == 0, result.stderr
    counts = frames(result.stderr, "search")
    assert counts and counts[0] == "0/2" and set(counts) <= {"0/2", "1/2", "2/2"}, result.stderr
    quiet = run_sa3("encode", source, "-o", tmp_path / "quiet.safetensors", "--search", "1", "--quiet")
    assert quiet.returncode == 0 and "search" not in quiet.stderr, quiet.stderr


def test_generate_bar_starts_at_its_real_total(tiny_model_dir, tmp_path):
    """The shipped model with --steps 2, and a model's own step count without --steps: never 0/1."""
    result = run_sa3("generate", "kick", "--seconds", "0.3", "--steps", "2", "-o", tmp_path / "kick.wav")
    assert result.returncode == 0, result.stderr
    counts = frames(result.stderr, "sampling")
    assert counts and counts[0] == "0/2" and set(counts) <= {"0/2", "1/2", "2/2"}, result.stderr
    steps = read_settings(tiny_model_dir).steps
    result = run_sa3("generate", "kick", "--seconds", "0.3", "--model", tiny_model_dir, "-o", tmp_path / "own.wav")
    assert result.returncode == 0, result.stderr
    counts = frames(result.stderr, "sampling")
    assert counts and counts[0] == f"0/{steps}" and all(c.endswith(f"/{steps}") for c in counts), result.stderr
