"""Core ML export of a released model (export/released_coreml.py), validated as sa3's own Core ML
export is on Linux: the reshaped torch graphs that are converted equal the eager model (fast),
and each package's spec (ML program, input names and types, flexible ranges) is as the manifest
says (slow: converting takes about a minute). Predictions need macOS and are not run here."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from export.released_coreml import (
    CoreMLConditionGraph,
    CoreMLDecoderGraph,
    CoreMLEncoderGraph,
    CoreMLStepGraph,
    CoreMLTextGraph,
    coreml_window_inputs,
)
from export.released_export import (
    codec_entry,
    inputs_at,
    load_released_for_export,
    same_reference,
    same_window,
    unit_frames,
)
from sa3core.released.onnx_backend import code_in_windows

SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "small"


@pytest.fixture(scope="module")
def backend():
    return load_released_for_export(SMALL)


@pytest.mark.parametrize("frames", [1, 6, 64])  # a single frame, a partial unit, a whole window's worth
@pytest.mark.parametrize("part", ["same_decoder", "same_encoder"])
def test_window_graphs_equal_the_eager_windows(backend, part, frames):
    """The unit-shaped window graphs (what Core ML converts), their noise drawn as the backend
    draws it, against ``decode_window`` / ``encode_window`` drawing from the same seed."""
    feeds, x = same_window(part, backend, 1, frames, torch.Generator().manual_seed(frames), seed=7)
    graph = (CoreMLDecoderGraph if part == "same_decoder" else CoreMLEncoderGraph)(backend.autoencoder)
    with torch.inference_mode():
        got = graph(*coreml_window_inputs(part, feeds, unit_frames(backend)[part])).numpy()
    want = same_reference(part, backend.autoencoder, x, seed=7)
    np.testing.assert_allclose(got[..., : want.shape[-1]], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("part", ["same_decoder", "same_encoder"])
def test_window_graphs_run_on_the_kept_frames_as_a_host_does(backend, part):
    """A host windowing long audio as the manifest's codec says (the released windows, each cut to
    the frames the join keeps plus the span context) gets the eager encode / decode of the whole."""
    codec = codec_entry(backend)
    graph = (CoreMLDecoderGraph if part == "same_decoder" else CoreMLEncoderGraph)(backend.autoencoder)
    unit = unit_frames(backend)[part]

    def run(feeds):
        with torch.inference_mode():
            return graph(*coreml_window_inputs(part, feeds, unit)).numpy()

    same, generator = backend.autoencoder, torch.Generator().manual_seed(1)
    if part == "same_decoder":
        x = torch.randn(1, same.config.latent_dim, 300, generator=generator)
        want = same.decode(x, torch.Generator().manual_seed(7))
    else:
        x = 0.3 * torch.randn(1, 2, 300 * 4096, generator=generator)
        want = same.encode(x, torch.Generator().manual_seed(7))
    got = code_in_windows(part, run, x, codec, torch.Generator().manual_seed(7))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=1e-5)


def test_condition_and_step_graphs_equal_the_dit(backend):
    dit = backend.dit
    context, global_cond = inputs_at("dit_condition", backend, 2, 0, 9, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        global_embed, keys, values = CoreMLConditionGraph(dit)(context, global_cond)
        cond = dit.encode_condition(context, global_cond)
        x, t = torch.randn(2, dit.config.io_channels, 13), torch.rand(2)
        local = torch.randn(2, dit.config.io_channels + 1, 13)
        mask = torch.ones(2, 13)
        mask[1, 9:] = 0
        got = CoreMLStepGraph(dit)(x, t, global_embed, keys, values, local, mask)
        want = dit(x, t, cond, local, mask > 0.5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_text_graph_equals_the_eager_encoder_and_another_prompt_does_not(backend):
    """The float32-table twin that Core ML converts gives the eager (bf16-table) encoder's hidden
    state; the weights are shared, not copied, apart from the table."""
    text = backend.text_encoder
    ids, mask = text.tokenizer(["warm analog pad in C minor", "tight breakbeat, 170 bpm"])
    graph = CoreMLTextGraph(text.encoder)
    with torch.inference_mode():
        got = graph(ids[:1].int(), mask[:1].float())
        want = text.encoder(ids[:1], mask[:1]).float()
        other = text.encoder(ids[1:], mask[1:]).float()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert (other - want).abs().max() > 100 * 1e-6  # another prompt is far beyond the tolerance
    assert text.encoder.embed_tokens.weight.dtype == torch.bfloat16  # the backend's own table is untouched
    assert graph.encoder.layers is text.encoder.layers


@pytest.mark.slow
def test_package_specs(tmp_path):
    ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install sa3[export-coreml])")
    from export.released_coreml import export_released_coreml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = export_released_coreml(SMALL, tmp_path / "coreml", progress=lambda _: None)
    types = {"float32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32,
             "int32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32}  # fmt: skip
    assert set(manifest.parts) == {"text_encoder", "dit_condition", "dit_step", "same_decoder", "same_encoder"}
    assert (tmp_path / "coreml" / "tokenizer" / "tokenizer.json").is_file()
    assert manifest.model["text_max_length"] == manifest.parts["text_encoder"].inputs[0].shape[1]
    for part, entry in manifest.parts.items():
        spec = ct.utils.load_spec(str(tmp_path / "coreml" / entry.file))
        assert spec.WhichOneof("Type") == "mlProgram", part
        inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
        assert list(inputs) == [s.name for s in entry.inputs], part
        assert [o.name for o in spec.description.output] == [s.name for s in entry.outputs], (
            part
        )  # a host looks them up
        assert [inputs[t.name].dataType for t in entry.inputs] == [types[t.dtype] for t in entry.inputs], part
        for tensor in entry.inputs:  # fixed sizes as the manifest says; flexible axes as ranges
            ranges = inputs[tensor.name].shapeRange.sizeRanges
            shape = list(inputs[tensor.name].shape)
            for axis, size in enumerate(tensor.shape):
                if isinstance(size, int):
                    assert shape[axis] == size, (part, tensor.name, axis)
                else:
                    assert ranges[axis].lowerBound == 1 and ranges[axis].upperBound > 1, (part, tensor.name, axis)
