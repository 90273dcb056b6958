"""Samplers on a velocity field with a known exact flow: Gaussian data.

If every latent element is x0 ~ N(mu, s^2) independently and noise ~ N(0, 1), the exact
flow-matching velocity is ``v = (x - E[x0 | x_t]) / t`` with
``E[x0 | x_t] = mu + (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) * (x_t - (1 - t) mu)``, and the ODE
carries a noise sample ``n`` to exactly ``mu + s n`` at t = 0. The trajectory is curved
(unless s = 1), so Euler has a real discretisation error to shrink.
"""

from __future__ import annotations

import pytest
import torch

from sa3core.errors import Sa3Error
from sa3core.samplers import SAMPLERS, cfg_velocity, length_shift, timesteps

SPREAD = 0.2


def gaussian_field(mu: torch.Tensor):
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)[:, None, None]
        x = x.to(torch.float64)
        gain = (1 - t) * SPREAD**2 / ((1 - t) ** 2 * SPREAD**2 + t**2)
        x0_hat = mu + gain * (x - (1 - t) * mu)
        return ((x - x0_hat) / t).to(torch.float32)

    return velocity


@pytest.fixture
def problem():
    torch.manual_seed(0)
    mu = torch.randn(1, 8, 50, dtype=torch.float64)
    noise = torch.randn(2, 8, 50)
    exact = (mu + SPREAD * noise.to(torch.float64)).to(torch.float32)
    return gaussian_field(mu), noise, exact


def error(sampler: str, problem, steps: int, shift: float = 1.0) -> float:
    field, noise, exact = problem
    return (SAMPLERS.get(sampler)().sample(field, noise, steps, shift=shift) - exact).abs().max().item()


def test_euler_converges_to_exact_flow(problem):
    errors = [error("euler", problem, steps) for steps in (4, 16, 64, 256)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-2
    assert errors[-1] < errors[-2] / 3  # first order: 4x the steps, about 4x less error
    assert errors[0] > 0.05  # the field is curved: a few Euler steps are visibly wrong


@pytest.mark.parametrize("steps", [8, 16, 32])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp_beats_euler_at_equal_steps(problem, steps, shift):
    assert error("dpmpp", problem, steps, shift) < error("euler", problem, steps, shift)


def test_dpmpp_converges(problem):
    errors = [error("dpmpp", problem, steps) for steps in (16, 64, 256)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


def test_pingpong_one_step_is_the_one_step_prediction(problem):
    field, noise, _ = problem
    out = SAMPLERS.get("pingpong")().sample(field, noise, 1, generator=torch.Generator().manual_seed(0))
    expected = noise - field(noise, torch.ones(noise.shape[0]))
    assert torch.equal(out, expected)


def test_pingpong_with_exact_field_lands_on_the_data_spread(problem):
    # Each step predicts E[x0 | x_t] then re-noises; the result is a sample, not the ODE
    # solution, but it must sit in the data's range (mu +- a few s), not at the noise.
    field, noise, exact = problem
    out = SAMPLERS.get("pingpong")().sample(field, noise, 8, generator=torch.Generator().manual_seed(1))
    assert (out - exact).abs().mean() < 4 * SPREAD


@pytest.mark.parametrize("name", ["euler", "dpmpp", "pingpong"])
def test_seeded_runs_are_bit_identical(problem, name):
    field, noise, _ = problem
    runs = [SAMPLERS.get(name)().sample(field, noise, 5, generator=torch.Generator().manual_seed(42)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].dtype == torch.float32 and runs[0].shape == noise.shape


def test_pingpong_seed_changes_result(problem):
    field, noise, _ = problem
    a = SAMPLERS.get("pingpong")().sample(field, noise, 4, generator=torch.Generator().manual_seed(1))
    b = SAMPLERS.get("pingpong")().sample(field, noise, 4, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_cfg_scale_one_is_conditional_exactly():
    torch.manual_seed(0)
    v_cond, v_uncond = torch.randn(2, 256, 30), torch.randn(2, 256, 30) * 1e3
    assert torch.equal(cfg_velocity(v_cond, v_uncond, 1.0), v_cond)
    torch.testing.assert_close(cfg_velocity(v_cond, v_uncond, 0.0), v_uncond)
    torch.testing.assert_close(cfg_velocity(v_cond, v_uncond, 3.0), v_uncond + 3.0 * (v_cond - v_uncond))


def test_progress_called_per_step_and_can_abort(problem):
    field, noise, _ = problem
    seen = []
    SAMPLERS.get("euler")().sample(field, noise, 3, progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    calls = []

    def counting_field(x, t):
        calls.append(t)
        return field(x, t)

    def cancel(step, total):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SAMPLERS.get("dpmpp")().sample(counting_field, noise, 6, progress=cancel)
    assert len(calls) == 2  # no model call after the abort


def test_timesteps_schedule():
    plain = timesteps(8)
    assert plain[0].item() == 1.0 and plain[-1].item() == 0.0 and plain.dtype == torch.float32
    torch.testing.assert_close(plain, torch.linspace(1, 0, 9))
    shifted = timesteps(8, 3.0)
    assert shifted[0].item() == 1.0 and shifted[-1].item() == 0.0
    assert torch.all(shifted[1:] < shifted[:-1])
    assert torch.all(shifted[1:-1] > plain[1:-1])  # more of the steps at high noise
    with pytest.raises(Sa3Error, match="steps"):
        timesteps(0)


def test_length_shift_monotone_and_matches_training():
    from training.timesteps import TimestepConfig
    from training.timesteps import length_shift as training_shift

    lengths = [1, 11, 32, 100, 646, 2048, 4092, 10_000]
    shifts = [length_shift(f) for f in lengths]
    assert all(a <= b for a, b in zip(shifts, shifts[1:]))
    assert shifts[0] == 1.0 and shifts[-1] == pytest.approx(3.0) and shifts[3] < shifts[4] < shifts[5]
    # The sampler must warp time the way the model was trained.
    trained = training_shift(torch.tensor(lengths), TimestepConfig())
    torch.testing.assert_close(torch.tensor(shifts, dtype=torch.float32), trained)


def test_default_shift_follows_length():
    # shift=None takes length_shift(frames): a long request spends more steps at high noise.
    seen = []

    def field(x, t):
        seen.append(t[0].item())
        return torch.zeros_like(x)

    SAMPLERS.get("euler")().sample(field, torch.zeros(1, 1, 2000), 4)
    long_ts, seen = seen, []
    SAMPLERS.get("euler")().sample(field, torch.zeros(1, 1, 10), 4)
    assert long_ts[1] > seen[1]


def test_cfg_rescale_matches_the_conditional_level_of_the_clean_estimate():
    torch.manual_seed(0)
    x = torch.randn(2, 256, 30)
    t = torch.tensor([0.7, 0.3])
    v_cond, v_uncond = torch.randn(2, 256, 30), torch.randn(2, 256, 30) * 0.5
    assert torch.equal(cfg_velocity(v_cond, v_uncond, 4.0, 0.0, x, t), cfg_velocity(v_cond, v_uncond, 4.0))
    full = cfg_velocity(v_cond, v_uncond, 4.0, 1.0, x, t)
    tt = t[:, None, None]
    x0_cond, x0_full = x - tt * v_cond, x - tt * full
    torch.testing.assert_close(x0_full.std(dim=(1, 2)), x0_cond.std(dim=(1, 2)))
    plain = cfg_velocity(v_cond, v_uncond, 4.0)
    half = cfg_velocity(v_cond, v_uncond, 4.0, 0.5, x, t)
    torch.testing.assert_close(half, 0.5 * (full + plain))  # the blend is linear in rescale
    assert torch.equal(cfg_velocity(v_cond, v_uncond, 1.0, 0.7, x, t), v_cond)  # no guidance, no rescale
    with pytest.raises(ValueError, match="needs the sampler's x and t"):
        cfg_velocity(v_cond, v_uncond, 4.0, 0.7)
