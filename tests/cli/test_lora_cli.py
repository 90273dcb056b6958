"""`sa3 generate --lora FILE[:STRENGTH]` as a user types it, on the released small fixture and the
official LoRA fixtures (tests/fixtures/released/lora: the official code made the references)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from sa3core.audio import read_audio
from tests.conftest import run_sa3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"
MANIFEST = json.loads((LORA / "manifest.json").read_text())
CALL = MANIFEST["generate"]["call"]
STACK = list(MANIFEST["generate"]["stack"].items())  # [(file, strength)] in order


def _generate(tmp_path: Path, name: str, *extra) -> tuple[np.ndarray, object]:
    out = tmp_path / f"{name}.wav"
    result = run_sa3(
        "generate", CALL["prompt"], "--model", FIXTURES / "small", "--seconds", CALL["duration"],
        "--seed", CALL["seed"], "--steps", CALL["steps"], "--fp32", "--bit-depth", "float", "-o", out, "--quiet",
        *extra,
    )  # fmt: skip
    return (read_audio(out)[0] if result.returncode == 0 else None), result


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.abs(a - b).max()), float(np.corrcoef(a, b)[0, 1])


def test_two_stacked_adapters_give_the_official_audio(tmp_path):
    """dora-rows at 0.7 then lora-xs at 1.0 (the official generate with both loaded); the other
    order and a dropped adapter miss it far beyond the tolerance."""
    official = load_file(str(LORA / "reference" / "generate_stack.safetensors"))["audio"].numpy()[0]
    loras = [arg for name, strength in STACK for arg in ("--lora", f"{LORA / name}:{strength}")]
    ours, result = _generate(tmp_path, "stack", *loras)
    assert result.returncode == 0, result.stderr
    diff, corr = _compare(ours, official)
    assert diff <= 2e-3 and corr >= 0.9999, (diff, corr)
    reversed_args = [arg for name, strength in STACK[::-1] for arg in ("--lora", f"{LORA / name}:{strength}")]
    for label, extra in (("reversed", reversed_args), ("dropped", loras[:2])):
        other, result = _generate(tmp_path, label, *extra)
        assert result.returncode == 0, result.stderr
        assert _compare(other, official)[0] > 0.05, label


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("{lora}/dora-rows.safetensors:2.5", "outside -2..2"),
        ("{tmp}/missing.safetensors", "no LoRA file"),
        ("{tmp}/old.ckpt", "never loads"),
        ("{tmp}/notalora.safetensors", "not a LoRA file"),
    ],
)
def test_bad_adapters_are_one_line_and_write_nothing(tmp_path, spec, words):
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04" + b"\x00" * 64)
    (tmp_path / "notalora.safetensors").write_bytes(b"hello, not safetensors at all")
    _, result = _generate(tmp_path, "bad", "--lora", spec.format(lora=LORA, tmp=tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert not (tmp_path / "bad.wav").exists()


def test_an_adapter_for_another_base_names_the_layer(tmp_path):
    """A small-fixture adapter on the medium fixture (other widths): one line naming a layer."""
    out = tmp_path / "m.wav"
    result = run_sa3(
        "generate", "x", "--model", FIXTURES / "medium", "--seconds", "0.1", "--steps", "1",
        "--lora", LORA / "lora.safetensors", "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another base model" in lines[0] and "model.transformer.layers.0" in lines[0], (
        result.stderr
    )
