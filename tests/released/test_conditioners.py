"""The released conditioners: seconds clamped and scaled before the features, the prompt's three
padding modes, and the DiT inputs assembled in the config's id order."""

from __future__ import annotations

import math

import pytest
import torch

from sa3core.released.conditioners import assemble, build_conditioners
from sa3core.released.config import ReleasedConfig

from .released_folder import model_config, randomize


def make(padding_mode: str = "learned"):
    data = model_config()
    data["model"]["conditioning"]["configs"][0]["config"]["padding_mode"] = padding_mode
    config = ReleasedConfig.from_dict(data)
    return config, randomize(build_conditioners(config.model.conditioning), seed=2)


def test_seconds_are_clamped_scaled_and_embedded():
    _, conditioners = make()
    seconds = conditioners["seconds_total"]
    out = seconds(torch.tensor([-3.0, 0.0, 96.0, 384.0, 500.0]))
    assert out.shape == (5, 1, 768)
    # clamped to [0, 384]: equal up to the last bits (a row in a SIMD lane and a row in the scalar
    # tail of the vectorised cos/sin can round differently: 1e-6 on an AMD EPYC)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[3], out[4], rtol=0, atol=1e-5)
    assert (out[2] - out[3]).abs().max() > 1e-2  # 96 s is another token
    linear = seconds.embedder.embedding[1]
    ramp = torch.linspace(0, 1, 128)
    f = torch.exp(ramp * (math.log(10_000.0) - math.log(0.5)) + math.log(0.5))
    angles = torch.tensor([[96.0 / 384.0]]) * f * 2 * math.pi
    expected = linear(torch.cat([angles.cos(), angles.sin()], dim=-1))
    torch.testing.assert_close(out[2], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["learned", "zero", "none"])
def test_prompt_padding_modes(mode):
    _, conditioners = make(mode)
    prompt = conditioners["prompt"]
    hidden = torch.randn(2, 256, 768)
    mask = torch.arange(256)[None, :] < torch.tensor([[5], [200]])
    out = prompt(hidden, mask)
    assert torch.equal(out[mask], hidden[mask])  # real tokens pass unchanged
    padded = out[~mask]
    if mode == "learned":
        assert torch.equal(padded, prompt.padding_embedding.expand_as(padded))
    elif mode == "zero":
        assert torch.equal(padded, torch.zeros_like(padded))
    else:
        assert torch.equal(padded, hidden[~mask])
    assert ("padding_embedding" in dict(prompt.named_parameters())) == (mode == "learned")


def test_assemble_follows_the_config_order():
    config, conditioners = make()
    prompt = torch.randn(2, 256, 768)
    seconds = conditioners["seconds_total"](torch.tensor([10.0, 20.0]))
    context, global_cond = assemble({"prompt": prompt, "seconds_total": seconds}, config.model.diffusion)
    assert torch.equal(context, torch.cat([prompt, seconds], dim=1))  # prompt tokens, then the seconds token
    assert torch.equal(global_cond, seconds[:, 0])
