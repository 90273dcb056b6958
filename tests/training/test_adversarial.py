"""Stage 3 adversarial post-training (training/adversarial.py)."""

import torch

from tests.training.test_flow import config, corpus, one_thread  # noqa: F401  (module fixtures)
from training.adversarial import AdversarialConfig, AdversarialTrainer


def _trainer(corpus, out, steps=6, resume=False):  # noqa: F811
    settings = config(
        AdversarialConfig,
        corpus,
        loop={"steps": steps, "batch_size": 4, "checkpoint_every": 2},
        critic={"width": 64, "depth": 2, "lr": 1e-3},
        sample_steps=4,
    )
    return AdversarialTrainer(settings, out, resume=resume)


def test_critic_and_generator_updates_stay_apart(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    trainer = _trainer(corpus, tmp_path / "run")
    batch = trainer.get_batch(0, 0, torch.Generator())
    critic_before = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    losses = trainer.run_step(batch)
    # The critic stepped its own optimizer ...
    assert any(not torch.equal(critic_before[k], v) for k, v in trainer.critic.state_dict().items())
    # ... without leaving gradients on the generator,
    assert all(p.grad is None for p in trainer.model.parameters())
    critic_grads = [p.grad.clone() for p in trainer.critic.parameters() if p.grad is not None]
    # and the generator's loss reaches the generator only.
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    after = [p.grad for p in trainer.critic.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(critic_grads, after))
    for name in ("g_adversarial", "g_alignment", "d_adversarial", "d_contrastive", "d_alignment"):
        assert torch.isfinite(losses[name])


def test_critic_learns_prompts_and_resumes_with_its_state(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    trainer = _trainer(corpus, tmp_path / "run", steps=24)
    history = trainer.fit()

    def mean(name, rows):
        return sum(h[name] for h in rows) / len(rows)

    # The critic's alignment projection learns which prompt goes with which latent, and the
    # generator's outputs become identifiable by their prompt through it.
    for name in ("d_alignment", "g_alignment"):
        first, last = mean(name, history[:6]), mean(name, history[-6:])
        print(f"{name} {first:.3f} -> {last:.3f}")
        assert last < 0.8 * first, name
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    # A resumed run restores the critic and its optimizer from the checkpoint.
    resumed = _trainer(corpus, tmp_path / "run", steps=24, resume=True)
    assert resumed.step == 24
    saved = trainer.critic.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in resumed.critic.state_dict().items())
    assert resumed.critic_optimizer.state_dict()["state"]


def test_anchor_holds_the_generator_near_its_start(corpus, tmp_path):  # noqa: F811
    """anchor_weight: the distance of the generator's one-step output to its frozen start's. It is
    zero while the generator is its start, and alone it pulls a moved generator back."""
    torch.manual_seed(0)
    settings = config(
        AdversarialConfig,
        corpus,
        loop={"steps": 30, "batch_size": 2, "checkpoint_every": 100, "lr": 1e-3, "warmup_steps": 0, "ema_decay": 0},
        critic={"width": 64, "depth": 2},
        sample_steps=4,
        adversarial_weight=0.0,
        alignment_weight=0.0,
        anchor_weight=1.0,
    )
    trainer = AdversarialTrainer(settings, tmp_path / "run")
    batch = trainer.get_batch(0, 0, torch.Generator())
    assert trainer.run_step(batch)["g_anchor"].item() == 0.0
    assert not any(p.requires_grad for p in trainer.anchor.parameters())
    with torch.no_grad():  # move the generator away from its start
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    moved = trainer.run_step(batch)["g_anchor"].item()
    history = trainer.fit()
    back = trainer.run_step(batch)["g_anchor"].item()
    print(f"anchor distance {moved:.4f} -> {back:.4f}")
    assert moved > 0 and back < 0.7 * moved
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def test_negative_anchor_weight_is_refused(corpus, tmp_path):  # noqa: F811
    import pytest

    from sa3core.errors import Sa3Error

    settings = config(AdversarialConfig, corpus, loop={"steps": 1, "batch_size": 1}, anchor_weight=-1.0)
    with pytest.raises(Sa3Error, match="anchor_weight -1.0 must be 0 or more"):
        AdversarialTrainer(settings, tmp_path / "run")
