"""The export wrappers compute what the eager models compute (no exporter involved: fast)."""

from __future__ import annotations

import pytest
import torch

from export import graphs
from sa3core.backends import BACKENDS
from sa3core.models.dit import DiT, DiTConfig
from sa3core.models.same import SAME, SAMEConfig

from .conftest import MICRO_DIT, MICRO_SAME


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return SAME(SAMEConfig(**MICRO_SAME)).eval(), DiT(DiTConfig(**MICRO_DIT)).eval()


@pytest.mark.parametrize("frames", [1, 4, 6, 13])  # window multiples and not, and a single frame
def test_same_graphs_equal_eager(parts, frames):
    torch.manual_seed(frames)
    same, _ = parts
    audio = torch.randn(2, 2, frames * 4096) * 0.3
    latents = torch.randn(2, 256, frames)
    with torch.inference_mode():
        want_latents = same.encode(audio, chunk_frames=0)
        want_audio = same.decode(latents, chunk_frames=0)
        got_latents = graphs.SAMEEncoderGraph(same)(audio)
        got_audio, *_spectra = graphs.SAMEDecoderGraph(same)(latents)
    torch.testing.assert_close(got_latents, want_latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_audio, want_audio, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames", [1, 6])
def test_decoder_graphs_with_a_refiner_equal_eager(frames):
    """A SAME with a refiner after its decoder: the ONNX and the Core ML decoder graphs both run it."""
    from export.coreml_export import CoreMLDecoderGraph, decoder_inputs
    from sa3core.models.same import add_refiner

    torch.manual_seed(frames)
    same = add_refiner(SAME(SAMEConfig(**MICRO_SAME)), 2, 64).eval()
    with torch.no_grad():
        same.refiner_out.weight.normal_(std=0.02)  # as if trained: the refiner changes the output
    latents = torch.randn(1, 256, frames)
    with torch.inference_mode():
        want = same.decode(latents, chunk_frames=0)
        got, *_spectra = graphs.SAMEDecoderGraph(same)(latents)
        core = CoreMLDecoderGraph(same)(*decoder_inputs(latents, same.config.window_frames))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(core[..., : want.shape[-1]], want, atol=1e-5, rtol=1e-5)


def test_dit_graphs_equal_eager_with_masks_forced(parts):
    torch.manual_seed(1)
    _, dit = parts
    tokens, text_mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool)
    text_mask[1, 2:] = False
    seconds = torch.tensor([3.0, 12.0])
    x, t = torch.randn(2, 256, 9), torch.tensor([0.3, 0.9])
    keep = (torch.rand(2, 1, 9) > 0.5).float()
    frame_mask = torch.ones(2, 9, dtype=torch.bool)  # all real: eager skips the mask, the graph keeps it
    with torch.inference_mode():
        cond = dit.encode_condition(tokens, text_mask, seconds)
        want = dit(x, t, cond, x * keep, keep, frame_mask)
        with graphs.exporting():
            stacked = graphs.DiTConditionGraph(dit)(tokens, text_mask, seconds)
            got = graphs.DiTStepGraph(dit)(x, t, *stacked, x * keep, keep, frame_mask)
    for a, b in zip(stacked, graphs.stack_condition(cond)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_exporting_restores_the_attention_fast_path():
    from sa3core.modules import attention

    before = attention._key_mask
    with graphs.exporting():
        assert attention._key_mask is not before
    assert attention._key_mask is before
    assert attention._key_mask(torch.ones(1, 3, dtype=torch.bool)) is None


def test_onnx_backend_is_found_by_name():
    from sa3core.onnx_backend import OnnxBackend

    assert BACKENDS.get("onnx") is OnnxBackend
    assert "onnx" in BACKENDS.names()
