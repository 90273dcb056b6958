"""Minibatch optimal-transport coupling of noise to data (Sinkhorn, then a greedy permutation).

Flow matching pairs each data item with a noise draw. Pairing them at random makes the
learned paths cross; re-pairing within the batch to lower the squared L2 transport cost
straightens them (fewer sampler steps needed). As in the official implementation we run
20 log-domain Sinkhorn iterations on the cost matrix, then read a permutation off the soft
plan greedily (largest entries first, each row and column used once).

Padding: an item's cost counts only its real frames, because the noise in its padded
frames never reaches the loss.
"""

from __future__ import annotations

import torch


def transport_cost(x0: torch.Tensor, noise: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Squared L2 cost of pairing data item i with noise j, over item i's real frames.

    x0, noise: [B, C, T]; frame_mask: bool [B, T]. Returns float32 [B, B] (rows data, cols noise).
    """
    mask = frame_mask.to(torch.float32)[:, None, :]  # (B, 1, T)
    data = (x0.float() * mask).flatten(1)  # (B, C*T)
    noise_flat = noise.float().flatten(1)  # (B, C*T)
    # ||m_i x_i - m_i n_j||^2 = ||m_i x_i||^2 - 2 <m_i x_i, n_j> + <m_i, n_j^2>
    mask_flat = mask.expand_as(x0).flatten(1)  # (B, C*T)
    data_sq = (data * data).sum(1, keepdim=True)  # (B, 1)
    cross = data @ noise_flat.T  # (B, B)
    noise_sq = mask_flat @ (noise_flat * noise_flat).T  # (B, B)
    return (data_sq - 2.0 * cross + noise_sq).clamp_min(0.0)


def sinkhorn_log(cost: torch.Tensor, epsilon: float = 0.05, iterations: int = 20) -> torch.Tensor:
    """Entropic OT plan between two uniform marginals, in the log domain: float32 [B, B].

    ``epsilon`` is relative to the mean cost, so it means the same at any latent scale.
    The log domain keeps small epsilons from underflowing ``exp(-C/eps)``.
    """
    cost = cost.float()
    n = cost.shape[0]
    scale = cost.mean().clamp_min(1e-12)
    log_kernel = -cost / (epsilon * scale)
    log_marginal = torch.full((n,), -torch.log(torch.tensor(float(n))).item())
    f = torch.zeros(n)
    g = torch.zeros(n)
    for _ in range(iterations):
        f = log_marginal - torch.logsumexp(log_kernel + g[None, :], dim=1)
        g = log_marginal - torch.logsumexp(log_kernel + f[:, None], dim=0)
    return (log_kernel + f[:, None] + g[None, :]).exp()


def greedy_permutation(plan: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` [B] (long) with row i matched to column perm[i], largest plan entries first."""
    n = plan.shape[0]
    order = torch.argsort(plan.flatten(), descending=True).tolist()
    perm, column_used, assigned = [-1] * n, [False] * n, 0
    for flat in order:  # plain Python lists: per-element tensor indexing would cost ~n^2 dispatches
        row, col = divmod(flat, n)
        if perm[row] >= 0 or column_used[col]:
            continue
        perm[row], column_used[col] = col, True
        assigned += 1
        if assigned == n:
            break
    return torch.tensor(perm, dtype=torch.long)


def ot_couple(
    x0: torch.Tensor, noise: torch.Tensor, frame_mask: torch.Tensor, epsilon: float = 0.05, iterations: int = 20
) -> torch.Tensor:
    """Reorder ``noise`` [B, C, T] so that noise[i] goes with x0[i] at low total transport cost."""
    if x0.shape[0] < 2:
        return noise
    with torch.no_grad():
        cost = transport_cost(x0, noise, frame_mask)
        perm = greedy_permutation(sinkhorn_log(cost, epsilon, iterations))
    return noise[perm.to(noise.device)]
