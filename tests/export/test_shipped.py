"""The exports of the model that ships (sa3core/assets/default), not only of random micro models.

The shipped autoencoder has parts the micro models lack (measured semitone channels, 8-patch
spectral windows, the semitone skip into the head, peak-frequency phases) and its model.json asks
for phase refinement: the graphs are checked against the eager model here, fast, and the real
`sa3 export onnx` / `sa3 export coreml` commands run on it in the slow tests (CI runs them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from export import graphs
from export.coreml_export import CoreMLDecoderGraph, decoder_inputs
from export.manifest import MANIFEST_NAME, staged_output
from sa3core.models.same import MAX_LOG_MAGNITUDE, refine_phase
from sa3core.pipeline import Pipeline

from ..conftest import run_sa3

PROMPT = "punchy house drum loop, 120 bpm"


@pytest.fixture(scope="module")
def shipped():
    return Pipeline.load(bf16=False)


@pytest.mark.parametrize("frames", [3, 17])  # a partial window and not a window multiple
def test_graphs_equal_the_shipped_autoencoder(shipped, frames):
    same = shipped.backend.autoencoder
    torch.manual_seed(frames)
    audio = torch.randn(1, 2, frames * 4096) * 0.3
    latents = same.encode(audio, chunk_frames=0)
    with torch.inference_mode():
        got_latents = graphs.SAMEEncoderGraph(same)(audio)
        got_audio, log_magnitude, phase = graphs.SAMEDecoderGraph(same)(latents)
        core = CoreMLDecoderGraph(same)(*decoder_inputs(latents, same.config.window_frames))
    # the encoder graph once left out the measured semitone channels: latents off by ~4
    torch.testing.assert_close(got_latents, latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_audio, same.decode(latents, chunk_frames=0), atol=1e-5, rtol=1e-5)
    # the Core ML graph's other op order: 2e-5 apart on an AMD EPYC's float32 kernels (audio in [-1, 1])
    torch.testing.assert_close(core[..., : got_audio.shape[-1]], got_audio, atol=5e-5, rtol=1e-5)
    # what the ONNX backend does with the graph's spectra is the torch decode the model asks for
    iterations = shipped.settings.phase_iterations
    assert iterations > 0
    c = same.config
    refined = refine_phase(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE).exp(), phase, iterations, c.head_patches, c.patch)
    want = same.decode(latents, chunk_frames=0, phase_iterations=iterations)
    torch.testing.assert_close(refined, want, atol=1e-5, rtol=1e-5)
    assert (want - got_audio).abs().max() > 1e-2  # the refinement is not a no-op


def test_the_shipped_decoder_exports_without_alias_nodes(shipped):
    """Core ML's converter refuses aten.alias ("Unsupported fx node alias"); a no-op ``.float()`` or
    ``.detach()`` in the head once put one in the shipped decoder's graph. Checked on the exported
    program, without coremltools (the full conversion is the slow test below)."""
    from torch.export import Dim

    same = shipped.backend.autoencoder
    args = decoder_inputs(torch.randn(1, 256, 3 * same.config.window_frames), same.config.window_frames)
    with graphs.exporting(), torch.no_grad():
        program = torch.export.export(
            CoreMLDecoderGraph(same).eval(), args, dynamic_shapes=({2: Dim.DYNAMIC}, {1: Dim.DYNAMIC})
        ).run_decompositions()
    aliases = [node.name for node in program.graph.nodes if "alias" in str(node.target)]
    assert aliases == []


def test_a_failed_export_leaves_no_folder(tmp_path):
    target = tmp_path / "exported"
    with pytest.raises(RuntimeError), staged_output(target, force=False) as work:
        (work / "dit_step.onnx").write_bytes(b"half")
        raise RuntimeError("the self-check failed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "old.onnx").write_bytes(b"old")
    with pytest.raises(RuntimeError), staged_output(existing, force=True) as work:
        (work / "old.onnx").write_bytes(b"new")
        raise RuntimeError("interrupted")
    assert (existing / "old.onnx").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with staged_output(existing, force=True) as work:
        (work / "old.onnx").write_bytes(b"new")
    assert (existing / "old.onnx").read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def _generate(tmp_path, name: str, *args: str) -> np.ndarray:
    out = tmp_path / f"{name}.wav"
    result = run_sa3("generate", PROMPT, "--bars", "1", "--bpm", "120", "-o", out, "--quiet", *args)
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 44_100 and audio.shape == (88_200, 2)
    return audio


@pytest.mark.slow
def test_sa3_export_onnx_of_the_shipped_model_runs_as_torch(tmp_path):
    """The documented command on the default model, then `--backend onnx` against the float32
    torch backend for the same seed (phase refinement included)."""
    exported = tmp_path / "exported"
    result = run_sa3("export", "onnx", "-o", exported, timeout=900)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((exported / MANIFEST_NAME).read_text())
    assert set(manifest["parts"]) == {"dit_condition", "dit_step", "same_encoder", "same_decoder", "text_encoder"}
    onnx = _generate(tmp_path, "onnx", "--seed", "3", "--backend", "onnx", "--model", exported)
    torch_audio = _generate(tmp_path, "torch", "--seed", "3", "--fp32")
    other_seed = _generate(tmp_path, "other", "--seed", "4", "--fp32")
    assert np.abs(onnx - torch_audio).max() <= 2e-3
    assert np.corrcoef(onnx.ravel(), torch_audio.ravel())[0, 1] >= 0.9999
    assert np.abs(other_seed - torch_audio).max() > 0.1  # the tolerance does tell takes apart


@pytest.mark.slow
def test_sa3_export_coreml_of_the_shipped_model(tmp_path):
    ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install sa3[export-coreml])")
    exported = tmp_path / "coreml"
    result = run_sa3("export", "coreml", "-o", exported, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((exported / MANIFEST_NAME).read_text())
    for part in ("same_decoder", "dit_step"):
        spec = ct.utils.load_spec(str(exported / manifest["parts"][part]["file"]))
        assert spec.WhichOneof("Type") == "mlProgram"
        assert [i.name for i in spec.description.input] == [i["name"] for i in manifest["parts"][part]["inputs"]]
        assert [o.name for o in spec.description.output] == [o["name"] for o in manifest["parts"][part]["outputs"]]
