"""int8 linear layers (sa3core/modules/int8.py): close to the float layer on real-looking inputs,
never saturating, the same bits at any thread count, and a copy that leaves the model alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa3core.modules.int8 import Int8Linear, hadamard, int8_inference_copy, int8_layers, int8_supported, rotation_block

pytestmark = pytest.mark.skipif(not int8_supported(), reason="torch has no x86 int8 kernels on this machine")


def relative_rms(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).norm() / reference.norm())


def linear(in_features: int, out_features: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias).eval()


def inputs(kind: str, rows: int = 96, features: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "gaussian":
        return torch.randn(2, rows, features, generator=g)
    if kind == "swiglu":  # value * silu(gate): the heavy-tailed input of a feed-forward's output layer
        value, gate = torch.randn(2, rows, features, generator=g), torch.randn(2, rows, features, generator=g)
        return value * nn.functional.silu(gate) * torch.rand(2, rows, 1, generator=g) * 10
    if kind == "outlier features":  # a few features 50x the others, as trained transformers have
        x = torch.randn(2, rows, features, generator=g)
        x[..., :: features // 4] *= 50
        return x
    raise ValueError(kind)


def test_hadamard_blocks_are_orthonormal():
    for size in (1, 2, 16, 64):
        h = hadamard(size)
        assert torch.allclose(h @ h.T, torch.eye(size), atol=1e-6) and torch.equal(h, h.T)
    assert [rotation_block(n) for n in (1024, 4096, 96, 80, 7)] == [64, 64, 32, 16, 1]


@pytest.mark.parametrize("kind", ["gaussian", "swiglu", "outlier features"])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_stays_close_to_the_float_layer(kind, bias):
    layer = linear(256, 192, bias)
    x = inputs(kind)
    with torch.inference_mode():
        reference, output = layer(x), Int8Linear.from_linear(layer)(x)
        other = linear(256, 192, bias, seed=1)(x)
    assert output.shape == reference.shape == (2, 96, 192) and output.dtype == torch.float32
    assert relative_rms(output, reference) < 0.02, relative_rms(output, reference)
    assert relative_rms(other, reference) > 0.5  # another layer's weights are far: the check can fail


def test_rows_are_scaled_one_by_one():
    """A quiet row beside a loud one keeps its own resolution (one scale per tensor would give the
    quiet row a few quantisation steps)."""
    layer = linear(256, 128, bias=False)
    x = inputs("gaussian")
    x[:, 0] *= 1000.0
    with torch.inference_mode():
        reference, output = layer(x), Int8Linear.from_linear(layer)(x)
    assert relative_rms(output[:, 1:], reference[:, 1:]) < 0.02
    assert relative_rms(output[:, :1], reference[:, :1]) < 0.02


def test_large_weights_and_inputs_do_not_saturate():
    """Without VNNI the int8 kernels add pairs of u8 x s8 products in int16: 8-bit activations
    against large weights overflow there (26 % wrong outputs when measured). Inputs at their
    extremes against weights whose large values sit side by side must still give the product."""
    layer = linear(256, 128, bias=False)
    with torch.no_grad():
        layer.weight[:, :64] = layer.weight[:, :64].sign() * 3.0
    for x in (torch.ones(4, 256), -torch.ones(4, 256), layer.weight[:4].sign() * 2.0):
        with torch.inference_mode():
            assert relative_rms(Int8Linear.from_linear(layer)(x), layer(x)) < 0.02


def test_the_thread_count_does_not_move_the_result():
    layer, x = linear(1024, 512), inputs("swiglu", rows=300, features=1024)
    before = torch.get_num_threads()
    try:
        quantized = Int8Linear.from_linear(layer)
        with torch.inference_mode():
            torch.set_num_threads(1)
            one = quantized(x)
            torch.set_num_threads(2)
            two = quantized(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_the_copy_swaps_the_chosen_layers_and_shares_the_rest():
    model = nn.Sequential(linear(64, 64), nn.GELU(), linear(64, 32), nn.LayerNorm(32)).eval()
    copy = int8_inference_copy(model, lambda name: name == "0")
    assert isinstance(copy[0], Int8Linear) and type(copy[2]) is nn.Linear
    assert type(model[0]) is nn.Linear  # the model itself is left as it was
    assert copy[2].weight is model[2].weight and copy[3].weight is model[3].weight  # shared, not copied
    x = inputs("gaussian", rows=8, features=64)
    with torch.inference_mode():
        assert relative_rms(copy(x), model(x)) < 0.02


def test_a_later_copy_packs_only_the_weights_that_changed():
    model = nn.Sequential(linear(64, 64), linear(64, 64, seed=1)).eval()
    first = int8_inference_copy(model, lambda name: True)
    with torch.no_grad():
        model[1].weight.mul_(2.0)  # in place: the same tensor, another version
    second = int8_inference_copy(model, lambda name: True, reuse=int8_layers(first))
    assert second[0] is first[0] and second[1] is not first[1]
    x = inputs("gaussian", rows=8, features=64)
    with torch.inference_mode():
        assert relative_rms(second(x), model(x)) < 0.02  # the new weight, not the old one
