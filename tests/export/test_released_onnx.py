"""ONNX export of a released Stable Audio 3 folder and its onnx backend, against the float32
torch backend (``bf16=False, text_dtype=float32``: the graphs are float32; the torch backend's
default bf16 T5Gemma moves the audio by ~2e-3).

The small random-weight fixture (tests/fixtures/released/small) is exported once per module
(about 30 s on 2 shared cores, its self-check included), then whole requests run through the
pipeline on both backends: generate below one SAME window and across the released 128-latent
windows, and inpaint (the encoder, the local input). The parity is tight (max |diff| < 1e-4,
correlation > 0.999999) and can fail: another prompt or another seed moves the audio by > 0.1.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from export.manifest import read_manifest
from export.released_export import TOLERANCE, export_released_onnx
from sa3core.errors import Sa3Error
from sa3core.pipeline import Pipeline, Region

from ..conftest import run_sa3, stereo_tone

SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "small"
MEDIUM = SMALL.parent / "medium"  # differential DiT, SAME-L: band attention, encoder token noise
AUDIO_TOLERANCE = 1e-4  # max |onnx - torch| on [-1, 1] audio (measured 8.6e-6 small, 6.9e-5 medium: docs/export.md)
MIN_CORRELATION = 0.999999
FAR = 0.1  # what a wrong prompt or seed moves the audio by, at least (measured ~0.5)


def exported_copy(source: Path, tmp_path_factory) -> Path:
    """A copy of a fixture folder with its export in ``onnx/`` (written and self-checked by the exporter)."""
    folder = tmp_path_factory.mktemp("released") / source.name
    shutil.copytree(source, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_released_onnx(folder, folder / "onnx", progress=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return exported_copy(SMALL, tmp_path_factory)


@pytest.fixture(scope="module")
def pipelines(small_folder):
    reference = Pipeline.load(small_folder, bf16=False, text_dtype=torch.float32)
    return reference, Pipeline.load(small_folder, backend="onnx")


def _close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float(np.abs(a - b).max()), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_manifest_records_the_parts_and_the_measured_differences(small_folder):
    manifest = read_manifest(small_folder / "onnx", runtime="onnx")
    assert manifest.model["family"] == "released" and manifest.tolerance == TOLERANCE
    assert set(manifest.parts) == {"text_encoder", "dit_condition", "dit_step", "same_encoder", "same_decoder"}
    for part, spec in manifest.parts.items():
        assert 0 <= spec.checked_max_abs_diff < 1e-2, part
    assert manifest.codec["window_latents"] == 128 and manifest.codec["overlap_latents"] == 32
    assert (small_folder / "onnx" / "conditioners.safetensors").is_file()


@pytest.mark.parametrize("seconds", [2.0, 14.0])  # 2 s: one SAME pass (72 frames); 14 s: two released windows
def test_generate_matches_torch_and_a_wrong_prompt_or_seed_does_not(pipelines, seconds):
    reference, onnx = pipelines
    samples = int(seconds * 44_100)
    want = reference.generate("warm analog pad", samples, seed=3)
    got = onnx.generate("warm analog pad", samples, seed=3)
    difference, correlation = _close(got, want)
    assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)
    # the same check fails for another prompt or another seed (the parity is not vacuous)
    assert np.abs(onnx.generate("a different prompt", samples, seed=3) - want).max() > FAR
    assert np.abs(onnx.generate("warm analog pad", samples, seed=4) - want).max() > FAR


def test_inpaint_matches_torch(pipelines):
    reference, onnx = pipelines
    audio = stereo_tone(4.0)
    regions = [Region.from_seconds(1.0, 2.5)]
    want = reference.inpaint(audio, "drum fill", regions, seed=5)
    got = onnx.inpaint(audio, "drum fill", regions, seed=5)
    difference, correlation = _close(got, want)
    assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)


def test_the_export_folder_itself_loads(small_folder):
    pipeline = Pipeline.load(small_folder / "onnx", backend="onnx")
    assert pipeline.family.name == "released" and pipeline.backend.name == "onnx"


def test_user_errors_are_one_line(small_folder, tmp_path):
    onnx = Pipeline.load(small_folder, backend="onnx")
    with pytest.raises(Sa3Error, match="LoRA files need the torch backend"):
        onnx.backend.attach_loras(None, merge=True)
    with pytest.raises(Sa3Error, match="torch or onnx backend"):
        Pipeline.load(small_folder, backend="coreml")
    bare = tmp_path / "bare"
    shutil.copytree(SMALL, bare)
    with pytest.raises(Sa3Error, match="holds no ONNX export; run `sa3 export onnx --model"):
        Pipeline.load(bare, backend="onnx")
    with pytest.raises(Sa3Error, match="takes no phase iterations option"):
        Pipeline.load(small_folder, backend="onnx", phase_iterations=2)


@pytest.mark.slow
def test_medium_generate_and_inpaint_match_torch(tmp_path_factory):
    """The medium fixture (differential attention, SAME-L with its encoder's token noise) end to end."""
    folder = exported_copy(MEDIUM, tmp_path_factory)
    reference = Pipeline.load(folder, bf16=False, text_dtype=torch.float32)
    onnx = Pipeline.load(folder, backend="onnx")
    samples = int(14.0 * 44_100)
    for want, got in (
        (reference.generate("warm analog pad", samples, seed=3), onnx.generate("warm analog pad", samples, seed=3)),
        (
            reference.inpaint(stereo_tone(4.0), "drum fill", [Region.from_seconds(1.0, 2.5)], seed=5),
            onnx.inpaint(stereo_tone(4.0), "drum fill", [Region.from_seconds(1.0, 2.5)], seed=5),
        ),
    ):
        difference, correlation = _close(got, want)
        assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)


@pytest.mark.slow
def test_cli_export_then_generate_with_the_onnx_backend(tmp_path):
    folder = tmp_path / "small"
    shutil.copytree(SMALL, folder)
    done = run_sa3("export", "onnx", "--model", folder, "-o", folder / "onnx")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dit_step" in done.stdout
    out = tmp_path / "take.wav"
    done = run_sa3("generate", "warm analog pad", "--model", folder, "--backend", "onnx", "--seconds", "2", "-o", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()
