import pytest
import torch

from sa3core.losses.spectral import (
    SEVEN_RESOLUTIONS,
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    PhaseLoss,
    SpectralFluxLoss,
)


def _music(seconds: float = 0.5) -> torch.Tensor:
    torch.manual_seed(0)
    t = torch.arange(int(44_100 * seconds)) / 44_100
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 1760 * t)
    return torch.stack([tone, 0.7 * tone + 0.01 * torch.randn_like(tone)])[None]


def test_seven_resolutions():
    assert len(SEVEN_RESOLUTIONS) == 7


@pytest.mark.parametrize("loss_type", [MultiResolutionSTFTLoss, MultiResolutionMelLoss])
def test_zero_for_identical_and_monotonic_in_noise(loss_type):
    loss = loss_type()
    audio = _music()
    assert loss(audio, audio).item() == 0.0
    noise = torch.randn_like(audio)
    values = [loss(audio + level * noise, audio).item() for level in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_mrstft_sees_side_errors():
    loss = MultiResolutionSTFTLoss()
    audio = _music()
    swapped = audio.flip(1)  # same mid, inverted side
    assert loss(swapped, audio).item() > 0.1


def test_phase_loss_zero_for_identical_and_grows_with_delay():
    loss = PhaseLoss()
    audio = _music()
    assert loss(audio, audio).item() == 0.0
    errors = [loss(torch.roll(audio, shift, dims=-1), audio).item() for shift in (8, 64, 512)]
    assert all(b > a for a, b in zip(errors, errors[1:])), errors
    # level changes do not change phase
    assert loss(audio * 0.5, audio).item() < min(1e-4, errors[0] / 10)


def test_losses_have_gradients():
    audio = _music(0.2)
    prediction = (audio + 0.05 * torch.randn_like(audio)).requires_grad_()
    losses = MultiResolutionSTFTLoss()(prediction, audio) + PhaseLoss()(prediction, audio)
    (losses + MultiResolutionMelLoss()(prediction, audio)).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_mel_loss_weighs_a_missing_bass_far_more_than_the_stft_loss_does():
    """Drop the 220 Hz tone or the 3520 Hz tone of an equal-level pair: relative to the STFT
    loss, the mel loss counts the missing bass more than twice as much."""
    t = torch.arange(22_050) / 44_100
    bass, treble = torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 3520 * t)
    audio = torch.stack([0.3 * bass + 0.3 * treble] * 2)[None]
    no_bass, no_treble = torch.stack([0.3 * treble] * 2)[None], torch.stack([0.3 * bass] * 2)[None]
    mel, stft = MultiResolutionMelLoss(), MultiResolutionSTFTLoss()
    mel_ratio = mel(no_bass, audio).item() / mel(no_treble, audio).item()
    stft_ratio = stft(no_bass, audio).item() / stft(no_treble, audio).item()
    assert mel_ratio > 2 * stft_ratio, (mel_ratio, stft_ratio)


def test_flux_loss_sees_a_frame_rate_pulse_more_than_a_level_error():
    """A steady chord with a +-1.4 dB dip once per latent frame (the decoder's pulse) against the
    same chord 3 dB quiet throughout: the level losses rank the steady error as the larger one,
    the flux loss ranks the pulse far above it (a level change alone moves nothing)."""
    t = torch.arange(4 * 4096 * 4) / 44_100
    chord = sum(0.1 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 277.2, 329.6))
    audio = torch.stack([chord, chord])[None]
    dip = 1.0 - 0.15 * torch.exp(-0.5 * ((torch.arange(t.numel()) % 4096 - 1700) / 300.0) ** 2)
    pulsed, quiet = audio * dip, audio * 10 ** (-3 / 20)
    flux, mel = SpectralFluxLoss(), MultiResolutionMelLoss()
    assert flux(audio, audio).item() == 0.0
    assert mel(quiet, audio).item() > mel(pulsed, audio).item()
    assert flux(pulsed, audio).item() > 10 * flux(quiet, audio).item()
    prediction = pulsed.clone().requires_grad_()
    flux(prediction, audio).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_head_loss_is_zero_on_the_target_ignores_what_is_below_the_floor_and_needs_the_spectra():
    from sa3core.errors import Sa3Error
    from sa3core.losses.compose import HEAD_FLOOR, AutoencoderLoss, LossInputs, LossWeights

    loss = AutoencoderLoss(LossWeights(stft=0.0, phase=0.0, chroma=0.0, ild=0.0, head=1.0))
    audio = torch.zeros(1, 2, 4096)
    target = torch.randn(1, 2, 16, 513)
    quiet = float(torch.log(torch.tensor(HEAD_FLOOR))) - 5.0
    assert float(loss(LossInputs(audio, audio, torch.zeros(1, 256, 1), (target, target)))["loss"]) == 0.0
    below = torch.full_like(target, quiet)
    assert float(loss(LossInputs(audio, audio, torch.zeros(1, 256, 1), (below, below - 3.0)))["loss"]) == 0.0
    off = float(loss(LossInputs(audio, audio, torch.zeros(1, 256, 1), (target + 0.5, target)))["loss"])
    assert off == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(Sa3Error, match="head loss needs"):
        loss(LossInputs(audio, audio, torch.zeros(1, 256, 1)))
