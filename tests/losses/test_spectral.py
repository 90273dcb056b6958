import torch

from sa3core.losses.spectral import SEVEN_RESOLUTIONS, MultiResolutionSTFTLoss, PhaseLoss


def _music(seconds: float = 0.5) -> torch.Tensor:
    torch.manual_seed(0)
    t = torch.arange(int(44_100 * seconds)) / 44_100
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 1760 * t)
    return torch.stack([tone, 0.7 * tone + 0.01 * torch.randn_like(tone)])[None]


def test_seven_resolutions():
    assert len(SEVEN_RESOLUTIONS) == 7


def test_mrstft_zero_for_identical_and_monotonic_in_noise():
    loss = MultiResolutionSTFTLoss()
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
    (MultiResolutionSTFTLoss()(prediction, audio) + PhaseLoss()(prediction, audio)).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
