"""Core ML export: the package's spec (inputs, outputs, flexible ranges, precision) on every
platform; a prediction compared with torch on macOS only (Core ML runs nowhere else)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from sa3core import timebase

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install sa3[export-coreml])")


@pytest.fixture(scope="module")
def coreml_export(tmp_path_factory):
    from export.coreml_export import export_coreml

    from .conftest import micro_pipeline

    pipeline = micro_pipeline()
    out = tmp_path_factory.mktemp("coreml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = export_coreml(
            pipeline.backend.autoencoder,
            pipeline.backend.dit,
            pipeline.settings,
            out,
            force=True,
            progress=lambda _: None,
        )
    return out, manifest, pipeline


@pytest.mark.parametrize("frames", [1, 5, 8, 13])  # whole windows, partial windows, a single frame
def test_coreml_decoder_graph_equals_eager(frames):
    """The window-shaped decoder graph (what Core ML converts) against SAME.decode, in torch."""
    from export.coreml_export import CoreMLDecoderGraph, decoder_inputs

    from .conftest import micro_pipeline

    same = micro_pipeline().backend.autoencoder
    torch.manual_seed(frames)
    latents = torch.randn(1, 256, frames)
    with torch.inference_mode():
        got = CoreMLDecoderGraph(same)(*decoder_inputs(latents, same.config.window_frames))
        want = same.decode(latents, chunk_frames=0)
    torch.testing.assert_close(got[..., : want.shape[-1]], want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_decoder_package_spec(coreml_export):
    out, manifest, pipeline = coreml_export
    spec = ct.utils.load_spec(str(out / manifest.parts["same_decoder"].file))
    assert spec.WhichOneof("Type") == "mlProgram"
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == ["latents", "frame_valid"]
    assert [o.name for o in spec.description.output] == [s.name for s in manifest.parts["same_decoder"].outputs]
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert all(array.dataType == float32 for array in inputs.values())
    W = pipeline.backend.autoencoder.config.window_frames
    max_frames = timebase.samples_to_frames(timebase.seconds_to_samples(pipeline.settings.max_seconds))
    ranges = [(r.lowerBound, r.upperBound) for r in inputs["latents"].shapeRange.sizeRanges]
    assert ranges == [(1, 1), (256, 256), (1, -(-max_frames // W)), (W, W)]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions run only on macOS")
def test_decoder_prediction_matches_torch(coreml_export):
    from export.coreml_export import decoder_inputs

    out, manifest, pipeline = coreml_export
    same = pipeline.backend.autoencoder
    model = ct.models.MLModel(str(out / manifest.parts["same_decoder"].file))
    for frames in (5, 108):
        latents = torch.randn(1, 256, frames, generator=torch.Generator().manual_seed(frames))
        padded, valid = decoder_inputs(latents, same.config.window_frames)
        got = model.predict({"latents": padded.numpy(), "frame_valid": valid.numpy()})["audio"]
        want = same.decode(latents, chunk_frames=0).numpy()
        np.testing.assert_allclose(got[..., : want.shape[-1]], want, atol=1e-3)


@pytest.mark.slow
def test_dit_step_package_spec(coreml_export):
    out, manifest, pipeline = coreml_export
    dit = pipeline.backend.dit
    spec = ct.utils.load_spec(str(out / manifest.parts["dit_step"].file))
    assert spec.WhichOneof("Type") == "mlProgram"
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == [s.name for s in manifest.parts["dit_step"].inputs]
    assert [o.name for o in spec.description.output] == [s.name for s in manifest.parts["dit_step"].outputs]
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert all(array.dataType == float32 for array in inputs.values())
    max_frames = timebase.samples_to_frames(timebase.seconds_to_samples(pipeline.settings.max_seconds))
    x_range = inputs["x"].shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in x_range] == [(2, 2), (256, 256), (1, max_frames)]
    keys_range = inputs["keys"].shapeRange.sizeRanges
    assert (keys_range[0].lowerBound, keys_range[3].lowerBound, keys_range[3].upperBound) == (dit.config.depth, 3, 258)
    # float32 weights: the program holds no fp16 constants
    program = str(spec.mlProgram)
    assert "fp16" not in program.lower() or "FLOAT16" not in program


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions run only on macOS")
def test_dit_step_prediction_matches_torch(coreml_export):
    from export.onnx_export import inputs_at

    out, manifest, pipeline = coreml_export
    dit = pipeline.backend.dit
    model = ct.models.MLModel(str(out / manifest.parts["dit_step"].file))
    args = inputs_at("dit_step", dit, 2, 37, 6, torch.Generator().manual_seed(3))
    with torch.inference_mode():
        from export.verify import torch_reference

        (want,) = torch_reference("dit_step", pipeline.backend.autoencoder, dit, args)
    feeds = {s.name: a.float().numpy() for s, a in zip(manifest.parts["dit_step"].inputs, args)}
    feeds["keys"] = feeds["keys"].reshape(dit.config.depth, -1, *feeds["keys"].shape[3:])
    got = next(iter(model.predict(feeds).values()))
    np.testing.assert_allclose(got, want, atol=1e-3)
