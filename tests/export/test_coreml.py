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


@pytest.mark.slow
def test_dit_step_package_spec(coreml_export):
    out, manifest, pipeline = coreml_export
    dit = pipeline.backend.dit
    spec = ct.utils.load_spec(str(out / manifest.parts["dit_step"].file))
    assert spec.WhichOneof("Type") == "mlProgram"
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == [s.name for s in manifest.parts["dit_step"].inputs]
    assert [o.name for o in spec.description.output] == ["velocity"] or len(spec.description.output) == 1
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
