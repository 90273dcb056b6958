"""Analysis-by-synthesis encoding (sa3core.codec_search) on a small real SAME."""

import math

import pytest
import torch

from sa3core.codec_search import search_latents
from sa3core.errors import Sa3Error
from sa3core.losses.spectral import MultiResolutionMelLoss, MultiResolutionSTFTLoss
from sa3core.models.same import SAME, SAMEConfig


@pytest.fixture(scope="module")
def model() -> SAME:
    torch.manual_seed(0)
    return SAME(SAMEConfig(width=32, heads=2, encoder_layers=2, decoder_layers=2, mlp_hidden=64)).eval()


def _tone(samples: int) -> torch.Tensor:
    t = torch.arange(samples) / 44_100
    left = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 1100 * t)
    return torch.stack([left, 0.5 * left.roll(37)])[None]


def _loss(model: SAME, latents: torch.Tensor, audio: torch.Tensor) -> float:
    with torch.inference_mode():
        decoded = model.decode(latents)[..., : audio.shape[-1]]
        return float(MultiResolutionSTFTLoss()(decoded, audio) + MultiResolutionMelLoss()(decoded, audio))


def test_search_lowers_the_reconstruction_loss_and_leaves_the_weights(model):
    audio = _tone(5 * 4096 + 123)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    start = model.encode(audio)
    seen = []
    latents = search_latents(model, audio, 6, progress=lambda done, total: seen.append((done, total)))
    assert latents.shape == start.shape and torch.isfinite(latents).all()
    assert _loss(model, latents, audio) < 0.98 * _loss(model, start, audio)
    assert seen == [(i, 6) for i in range(1, 7)]
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert torch.equal(search_latents(model, audio, 0), start)  # 0 steps: the encoder's latents


def test_chunked_search_moves_every_chunk_and_still_lowers_the_loss(model):
    audio = _tone(10 * 4096)
    start = model.encode(audio)
    latents = search_latents(model, audio, 3, chunk_frames=4)  # chunks [0, 4), [4, 8), [8, 10)
    for a, b in ((0, 4), (4, 8), (8, 10)):
        assert not torch.equal(latents[..., a:b], start[..., a:b])
    assert _loss(model, latents, audio) < _loss(model, start, audio)


def test_bad_arguments_are_refused(model):
    audio = _tone(4096)
    with pytest.raises(Sa3Error, match="0 or more"):
        search_latents(model, audio, -1)
    with pytest.raises(Sa3Error, match="multiple of window_frames"):
        search_latents(model, audio, 1, chunk_frames=6)
    with pytest.raises(Sa3Error, match=r"audio \[batch, 2"):
        search_latents(model, audio[:, :1], 1)
    with pytest.raises(Sa3Error, match="outside torch.inference_mode"), torch.inference_mode():
        search_latents(model, audio, 1)
