import math

import pytest
import torch

from sa3core.errors import Sa3Error
from sa3core.losses import LOSS_TERMS, AutoencoderLoss, LossInputs, LossWeights, chroma, ild
from sa3core.losses.music import PitchClassLoss, midi_to_hz


def _tone(hz_list, seconds=1.0):
    t = torch.arange(int(44_100 * seconds)) / 44_100
    return sum(torch.sin(2 * math.pi * hz * t) for hz in hz_list) / len(hz_list)


def test_c_major_triad_peaks_at_c_e_g():
    triad = _tone([midi_to_hz(60), midi_to_hz(64), midi_to_hz(67)])  # C4 E4 G4
    classes = chroma(torch.stack([triad, triad])[None])[0, :, 3]  # a frame inside the clip
    assert set(classes.topk(3).indices.tolist()) == {0, 4, 7}
    others = [classes[i].item() for i in range(12) if i not in (0, 4, 7)]
    assert max(others) < 0.2


def test_chroma_shape_and_silence():
    out = chroma(torch.zeros(2, 2, 4097))
    assert out.shape == (2, 12, 2) and out.abs().max() == 0


def test_ild_sign_convention():
    tone = _tone([220, 1500, 6000])
    silent = torch.zeros_like(tone)
    left = ild(torch.stack([tone, silent])[None])[0, :, 3]
    right = ild(torch.stack([silent, tone])[None])[0, :, 3]
    centre = ild(torch.stack([tone, tone])[None])[0, :, 3]
    for band in (0, 3, 5):  # bands holding 220 Hz, 1.5 kHz and 6 kHz
        assert left[band] > 30 and right[band] < -30
    assert centre.abs().max() < 1e-4
    half_right = ild(torch.stack([0.5 * tone, tone])[None])[0, 0, 3]
    assert abs(half_right.item() - 20 * math.log10(0.5)) < 0.1  # -6 dB


def test_composer_sums_weighted_terms_and_refuses_missing_plugins():
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(1, 2, 8192)
    batch = LossInputs(audio, audio + 0.01 * torch.randn_like(audio), torch.randn(1, 256, 2))
    loss = AutoencoderLoss(LossWeights(stft=1.0, phase=0.5, chroma=0.0, ild=0.0))
    values = loss(batch)
    assert set(values) == {"stft", "phase", "loss"}
    assert torch.allclose(values["loss"], values["stft"] + 0.5 * values["phase"])
    assert "adversarial" not in LOSS_TERMS and LossWeights().adversarial == 0 and LossWeights().contrastive == 0
    with pytest.raises(Sa3Error, match="adversarial"):
        AutoencoderLoss(LossWeights(adversarial=0.1))


def test_heads_learn_their_targets():
    torch.manual_seed(0)
    audio = torch.stack([_tone([261.6, 392.0], 0.5), 0.3 * _tone([261.6, 392.0], 0.5)])[None]
    latents = torch.randn(1, 256, 6)
    loss = AutoencoderLoss(LossWeights(stft=0.0, phase=0.0, chroma=1.0, ild=1.0))
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        values = loss(LossInputs(audio, audio, latents))
        first = first if first is not None else values["loss"].item()
        optimizer.zero_grad()
        values["loss"].backward()
        optimizer.step()
    assert values["loss"].item() < 0.2 * first


def test_pitch_class_loss_ignores_level_and_sees_a_stray_tone_and_a_wrong_key():
    """Zero for the same audio at any level; a steady stray tone (517 Hz, a flat C5, as the
    decoder used to add) costs something; the same chord a semitone up costs far more; silence
    in the input counts for nothing."""
    t = torch.arange(65_536) / 44_100

    def tones(*notes: int) -> torch.Tensor:
        mix = sum(0.2 * torch.sin(2 * math.pi * midi_to_hz(n) * t) for n in notes)
        return mix.expand(1, 2, -1).contiguous()

    loss = PitchClassLoss()
    c_major = tones(60, 64, 67)
    stray = c_major + 0.2 * torch.sin(2 * math.pi * 517.0 * t)
    assert loss(c_major * 0.3, c_major).item() < 1e-6
    assert 0.1 < loss(stray, c_major).item() < loss(tones(61, 65, 68), c_major).item() / 3
    half = c_major.clone()
    half[..., 32_768:] = 0.0
    wrong = half.clone()
    wrong[..., 32_768:] = tones(61, 65, 68)[..., 32_768:]  # different notes where the input is silent
    assert loss(wrong, half).item() < 0.1 * loss(tones(61, 65, 68), c_major).item()
    prediction = stray.clone().requires_grad_()
    loss(prediction, c_major).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
