"""Pre-packed bf16 linears (sa3core.backends.PackedLinear): in a process that packs (`sa3 serve`),
the run copies sa3 makes at its default precision hold their linear weights in oneDNN's blocked
layout and give the same numbers bit for bit as the plain bf16 layers they replace, for the
released DiT and SAME and for sa3's own model; one-shot commands leave them plain."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from sa3core.backends import PackedLinear, bf16_inference_copy, pack_linears, packing_available, use_packed_linears
from sa3core.lora import LoraStack
from sa3core.pipeline import Pipeline
from sa3core.released.backend import LORA_PREFIXES
from sa3core.released.checkpoint import load_conditioners, load_dit, open_released

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "released"

pytestmark = pytest.mark.skipif(not packing_available(), reason="this CPU has no native bf16 (nothing is packed)")


@pytest.fixture(autouse=True)
def packing():
    """As `sa3 serve` runs: run copies made meanwhile are packed (one-shot commands do not pack)."""
    use_packed_linears(True)
    yield
    use_packed_linears(False)


def plain_bf16_copy(model: nn.Module) -> nn.Module:
    """What bf16_inference_copy made before packing: bf16 linear weights, nothing else changed."""
    plain = copy.deepcopy(model).eval()
    for module in plain.modules():
        if isinstance(module, nn.Linear):
            module.to(torch.bfloat16)
    return plain


def linears(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, PackedLinear))}


def test_a_packed_layer_gives_the_plain_layers_numbers():
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(96, 160).to(torch.bfloat16)
    packed = PackedLinear(layer)
    for x in (torch.randn(3, 96, generator=gen), torch.randn(2, 7, 96, generator=gen), torch.randn(96, 5).t()):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(packed(x), layer(x))
    other = nn.Linear(96, 160).to(torch.bfloat16)  # another layer's weights: far from it
    x = torch.randn(4, 96, generator=gen)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert (packed(x).float() - other(x).float()).abs().max() > 0.1
    assert packed.weight.shape == (160, 96) and packed.weight.dtype == torch.bfloat16


def test_the_released_dit_run_copy_is_packed_and_unchanged_in_its_numbers():
    dit = load_dit(open_released(FIXTURES / "small")).float()
    run, plain = bf16_inference_copy(dit), plain_bf16_copy(dit)
    kinds = linears(run)
    assert kinds and set(kinds.values()) == {PackedLinear}
    assert run.state_dict().keys() < dit.state_dict().keys()  # packed weights are not state
    gen = torch.Generator().manual_seed(1)
    context = torch.randn(1, 9, dit.config.cond_token_dim, generator=gen)
    global_cond = torch.randn(1, dit.config.global_cond_dim, generator=gen)
    x = torch.randn(1, dit.config.io_channels, 24, generator=gen)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = run(x, torch.tensor([0.6]), run.encode_condition(context, global_cond))
        expected = plain(x, torch.tensor([0.6]), plain.encode_condition(context, global_cond))
        elsewhere = plain(x, torch.tensor([0.3]), plain.encode_condition(context, global_cond))
    assert torch.equal(ours, expected)
    assert (ours - elsewhere).abs().max() > 1e-2  # another time step: far from it


def test_the_default_pipelines_run_packed_layers():
    """The released backend packs its DiT copy and SAME's bf16 blocks; sa3's own backend its copies."""
    released = Pipeline.load(FIXTURES / "small").backend
    assert set(linears(released._dit_run).values()) == {PackedLinear}
    assert set(linears(released.autoencoder.decoder).values()) == {PackedLinear}
    assert set(linears(released.dit).values()) == {nn.Linear}  # the float32 model stays as saved
    fp32 = Pipeline.load(FIXTURES / "small", bf16=False).backend
    assert PackedLinear not in set(linears(fp32._dit_run).values()) | set(linears(fp32.autoencoder).values())


def test_a_process_that_does_not_pack_keeps_plain_layers():
    use_packed_linears(False)
    assert set(linears(Pipeline.load(FIXTURES / "small").backend._dit_run).values()) == {nn.Linear}


def test_lora_adapted_layers_are_left_as_they_are():
    """Kept-apart LoRA layers change with each request's strength: they are not packed."""
    folder = open_released(FIXTURES / "small")
    dit, conditioners = load_dit(folder).float(), load_conditioners(folder).float()
    stack = LoraStack.read([(FIXTURES / "lora" / "lora.safetensors", 0.8)])
    stack.attach({LORA_PREFIXES["dit"]: dit, LORA_PREFIXES["conditioners"]: conditioners}, merge=False)
    kinds = linears(pack_linears(plain_bf16_copy(dit)))
    adapted = {name for name, kind in kinds.items() if kind not in (nn.Linear, PackedLinear)}
    assert adapted and all(kinds[name] is not PackedLinear for name in adapted)
    assert any(kind is PackedLinear for kind in kinds.values())
