"""SAME's transformer Linear layers at the int8 precision (sa3core/released/backend.py,
``int8_coder_layer``): a SAME of the released width (768, one block per coder, random weights)
decodes and encodes within the stated tolerance of float32; the fixtures' narrow SAMEs (32 wide,
where int8 is slower) stay float32, bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.precision import compare
from bench.released_shapes import _randomise, released_config
from sa3core.modules.int8 import Int8Linear, int8_layers, int8_supported
from sa3core.released.backend import INT8_CODER_MIN_FEATURES, int8_coders_copy, load
from sa3core.released.config import ReleasedConfig
from sa3core.released.same import ReleasedAutoencoder

pytestmark = pytest.mark.skipif(not int8_supported(), reason="torch has no x86 int8 kernels on this machine")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"


@pytest.fixture(scope="module")
def wide_same() -> ReleasedAutoencoder:
    """SAME-S's width and heads (768, 64-wide heads) with one transformer block per coder."""
    data = released_config("small")
    for part in ("encoder", "decoder"):
        data["model"]["pretransform"]["config"][part]["config"]["transformer_depths"] = [1]
    config = ReleasedConfig.from_dict(data, where="wide SAME").autoencoder
    same = ReleasedAutoencoder(config)
    same.load_state_dict(_randomise(same, torch.Generator().manual_seed(0)), strict=False)
    return same.eval().requires_grad_(False)


def test_the_released_width_runs_its_transformer_linears_in_int8(wide_same):
    layers = int8_layers(int8_coders_copy(wide_same))
    assert len(layers) == 8  # qkv, out, feed-forward in and out, in the encoder's block and the decoder's
    assert all(name.startswith(("encoder.", "decoder.")) and ".transformers." in name for name in layers)
    assert all(layer.in_features >= INT8_CODER_MIN_FEATURES for layer in layers.values())


@torch.inference_mode()
def test_int8_decode_and_encode_stay_within_the_tolerance_of_float32(wide_same):
    """Random weights make a decoder whose audio depends little on its latents (other latents move
    it by log-mel 0.004), so the tolerance is set from what int8 measured here (0.0002) with room,
    and a decoder missing one layer or given other latents must land outside it."""
    quick = int8_coders_copy(wide_same)
    latents = torch.randn(1, wide_same.config.latent_dim, 12, generator=torch.Generator().manual_seed(1))
    other = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    missing = copy.deepcopy(wide_same)
    missing.decoder.layers[3].transformers[0].ff.ff[2].weight.zero_()

    def decode(same, z):
        return same.decode(z, torch.Generator().manual_seed(3))[0].clamp(-1, 1).numpy()

    def close(found):
        return found["corr"] >= 0.99999 and found["log_mel_l1"] <= 0.001

    reference = decode(wide_same, latents)
    found = compare(reference, decode(quick, latents))
    assert close(found), found
    assert not close(compare(reference, decode(wide_same, other)))  # the check can fail
    assert not close(compare(reference, decode(missing, latents)))

    audio = torch.from_numpy(reference)[None]
    want = wide_same.encode(audio, torch.Generator().manual_seed(4))
    got = quick.encode(audio, torch.Generator().manual_seed(4))
    assert float((got - want).norm() / want.norm()) <= 0.005  # the bf16 coders: 0.004 at the released shapes
    assert not torch.equal(got, want)  # the int8 layers ran


def test_the_fixtures_narrow_same_stays_float32_bit_for_bit():
    int8 = load(FIXTURES / "small", int8=True)
    fp32 = load(FIXTURES / "small", bf16=False)
    latents = torch.randn(1, fp32.latent_channels, 40, generator=torch.Generator().manual_seed(0))
    got = int8.decode_latents(latents, torch.Generator().manual_seed(1))
    assert not int8_layers(int8._autoencoder_run) and not any(
        isinstance(m, Int8Linear) for m in int8._autoencoder_run.modules()
    )
    np.testing.assert_array_equal(got.numpy(), fp32.decode_latents(latents, torch.Generator().manual_seed(1)).numpy())


def test_each_coder_is_packed_at_its_first_use_and_a_daemon_packs_both():
    backend = load(FIXTURES / "small", int8=True)
    latents = torch.randn(1, backend.latent_channels, 40, generator=torch.Generator().manual_seed(0))
    assert backend._autoencoder_run is None
    audio = backend.decode_latents(latents, torch.Generator().manual_seed(1))
    assert backend._coder_parts == {"decoder"}  # a generate leaves the encoder's weights unread
    decoding = backend._autoencoder_run
    backend.decode_latents(latents, torch.Generator().manual_seed(1))
    assert backend._autoencoder_run is decoding  # not made again
    backend.encode_audio(audio, torch.Generator().manual_seed(2))
    assert backend._coder_parts == {"decoder", "encoder"}
    daemon = load(FIXTURES / "small", int8=True)
    daemon.prepare()
    assert daemon._coder_parts == {"decoder", "encoder"}
    fp32 = load(FIXTURES / "small", bf16=False)
    assert fp32._coders("decoder", "encoder") is fp32.autoencoder and not fp32._coder_parts  # float32: no copy
