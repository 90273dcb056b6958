"""Minibatch OT coupling (training/ot.py) and training timesteps (training/timesteps.py)."""

import torch
from scipy.optimize import linear_sum_assignment

from training.ot import greedy_permutation, ot_couple, sinkhorn_log, transport_cost
from training.timesteps import TimestepConfig, length_shift, sample_logit_normal, shift_timesteps, training_timesteps


def _pair_cost(x0, noise, mask):
    return transport_cost(x0, noise, mask).diagonal().sum().item()


def test_sinkhorn_coupling_lowers_transport_cost():
    torch.manual_seed(0)
    lower = 0
    for _ in range(10):
        # Data with structure (clusters), as real latents have; noise is white.
        x0 = torch.randn(16, 8, 12) * 0.5 + torch.randn(16, 1, 1) * 2.0
        noise = torch.randn(16, 8, 12)
        mask = torch.ones(16, 12, dtype=torch.bool)
        before = _pair_cost(x0, noise, mask)
        after = _pair_cost(x0, ot_couple(x0, noise, mask), mask)
        assert after <= before + 1e-4
        lower += after < before
        # Close to the exact optimum (Hungarian) on this small batch.
        exact_rows, exact_cols = linear_sum_assignment(transport_cost(x0, noise, mask).numpy())
        optimum = transport_cost(x0, noise, mask).numpy()[exact_rows, exact_cols].sum()
        assert after <= optimum * 1.05
    assert lower == 10


def test_coupling_is_a_permutation_and_counts_only_real_frames():
    torch.manual_seed(1)
    x0, noise = torch.randn(6, 4, 10), torch.randn(6, 4, 10)
    mask = torch.ones(6, 10, dtype=torch.bool)
    mask[2, 5:] = False
    coupled = ot_couple(x0, noise, mask)
    # every noise row used exactly once
    matches = (coupled[:, None] == noise[None]).flatten(2).all(-1)
    assert matches.sum(1).eq(1).all() and matches.sum(0).eq(1).all()
    # changing data in padded frames leaves the cost matrix unchanged
    x0_changed = x0.clone()
    x0_changed[2, :, 5:] = 100.0
    assert torch.allclose(transport_cost(x0, noise, mask), transport_cost(x0_changed, noise, mask))


def test_sinkhorn_plan_has_uniform_marginals_and_greedy_is_permutation():
    torch.manual_seed(2)
    cost = torch.rand(8, 8)
    plan = sinkhorn_log(cost, epsilon=0.1, iterations=200)
    assert torch.allclose(plan.sum(0), torch.full((8,), 1 / 8), atol=1e-4)
    assert torch.allclose(plan.sum(1), torch.full((8,), 1 / 8), atol=1e-4)
    perm = greedy_permutation(plan)
    assert sorted(perm.tolist()) == list(range(8))


def test_timestep_shift_is_monotone_in_length():
    config = TimestepConfig(shift_min=1.0, shift_max=3.0, frames_min=32, frames_max=2048)
    frames = torch.arange(1, 4000)
    shift = length_shift(frames, config)
    assert (shift[1:] >= shift[:-1]).all()
    assert shift[0].item() == 1.0 and abs(shift[-1].item() - 3.0) < 1e-5
    assert shift[500].item() > shift[40].item()  # strictly grows inside the range
    # For any fixed draw, a longer item gets a noisier (larger) timestep.
    t = torch.rand(100)
    short = shift_timesteps(t, length_shift(torch.full((100,), 50), config))
    long = shift_timesteps(t, length_shift(torch.full((100,), 1500), config))
    assert (long >= short).all() and (long > short).any()
    # The warp keeps the ends and is monotone in t.
    grid = torch.linspace(0, 1, 101)
    warped = shift_timesteps(grid, 2.5)
    assert warped[0] == 0 and abs(warped[-1] - 1) < 1e-6 and (warped[1:] > warped[:-1]).all()


def test_logit_normal_is_truncated_at_the_low_end():
    config = TimestepConfig(cut=0.075)
    gen = torch.Generator().manual_seed(0)
    t = sample_logit_normal(200_000, config, gen)
    # The 7.5% quantile of sigmoid(N(0,1)) is sigmoid(-1.4395) = 0.1916.
    assert t.min().item() >= 0.1915
    assert abs(t.min().item() - 0.1916) < 0.01
    untruncated = sample_logit_normal(200_000, TimestepConfig(cut=0.0), gen)
    assert (untruncated < 0.19).float().mean().item() > 0.06
    assert 0.0 < training_timesteps(torch.tensor([10, 3000]), config, gen).min() < 1.0
