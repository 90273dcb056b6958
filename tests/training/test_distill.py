"""Stage 2 distillation warmup (training/distill.py)."""

import torch

from sa3core.samplers import SAMPLERS
from tests.training.test_flow import config, corpus, one_thread  # noqa: F401  (module fixtures)
from training.distill import DistillConfig, DistillTrainer


def _trainer(corpus, tmp_path, **loop):  # noqa: F811
    settings = config(
        DistillConfig,
        corpus,
        loop={"steps": 25, "batch_size": 3, "checkpoint_every": 100, **loop},
        teacher_steps=4,
        guidance=3.0,
    )
    return DistillTrainer(settings, tmp_path / "run")


def test_student_starts_as_teacher_and_targets_are_the_teachers_solve(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    trainer = _trainer(corpus, tmp_path)
    teacher, student = trainer.teacher.state_dict(), trainer.model.dit.state_dict()
    assert all(torch.equal(teacher[k], student[k]) for k in teacher)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    batch = trainer.get_batch(0, 0, torch.Generator())
    states, times, endpoint = trainer.trajectory(batch)
    assert len(states) == 4 and torch.equal(states[0], batch["noise"])
    assert torch.allclose(times[0], torch.ones(3))  # the first point is pure noise
    # The captured endpoint is exactly what the registered solver returns with guidance.
    with torch.no_grad():
        velocity = trainer.velocity_fn(trainer.teacher, batch, 3.0)
        again = SAMPLERS.get("dpmpp")().sample(velocity, batch["noise"], 4)
    assert torch.allclose(endpoint, again, atol=1e-6)


def test_distillation_loss_falls(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    trainer = _trainer(corpus, tmp_path)
    held_out = [trainer.get_batch(10_000 + k, 0, torch.Generator()) for k in range(3)]

    def held_out_loss():
        with torch.no_grad():
            return sum(trainer.run_step(b)["loss"].item() for b in held_out) / len(held_out)

    before = held_out_loss()
    trainer.fit()
    after = held_out_loss()
    print(f"distill held-out loss {before:.4f} -> {after:.4f}")
    assert after < 0.85 * before
    assert (tmp_path / "run" / "model" / "dit.safetensors").exists()


def test_rescaled_teacher_and_several_points_per_solve(corpus, tmp_path):  # noqa: F811
    """The teacher solves with rescaled guidance; with states_per_trajectory 3, each item trains on
    three points spread over its solve, and the loss is their plain mean."""
    from training.flow import item_loss

    torch.manual_seed(0)
    settings = config(
        DistillConfig,
        corpus,
        loop={"steps": 1, "batch_size": 2, "checkpoint_every": 100},
        teacher_steps=6,
        guidance=3.0,
        cfg_rescale=0.7,
        states_per_trajectory=3,
    )
    trainer = DistillTrainer(settings, tmp_path / "run")
    batch = trainer.get_batch(0, 0, torch.Generator())
    states, times, endpoint = trainer.trajectory(batch)
    with torch.no_grad():
        plain = SAMPLERS.get("dpmpp")().sample(trainer.velocity_fn(trainer.teacher, batch, 3.0), batch["noise"], 6)
        rescaled = SAMPLERS.get("dpmpp")().sample(
            trainer.velocity_fn(trainer.teacher, batch, 3.0, rescale=0.7), batch["noise"], 6
        )
    assert torch.allclose(endpoint, rescaled, atol=1e-6)
    assert not torch.allclose(endpoint, plain, atol=1e-3)  # the rescaling changed the solve

    with torch.no_grad():
        loss = trainer.run_step(batch)["loss"].item()
        by_hand = []
        for item in range(2):
            one = {
                k: (v[item : item + 1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == 2 else v)
                for k, v in batch.items()
            }
            one["captions"] = batch["captions"][item : item + 1]
            u = batch["u"][item, 0].item()
            points = sorted({int(((u + c / 3) % 1.0) * 6) for c in range(3)})
            assert len(points) == 3  # evenly spread: three different points of the six
            for k in points:
                x_k, t_k = states[k][item : item + 1], times[k][item : item + 1]
                x0 = x_k - t_k[:, None, None] * trainer.model(one, x_k, t_k).float()
                by_hand.append(item_loss((x0 - endpoint[item : item + 1]) ** 2, trainer.loss_weight(one)).item())
    assert abs(loss - sum(by_hand) / len(by_hand)) < 1e-4 * max(1.0, loss)


def test_bad_distill_settings_are_refused(corpus, tmp_path):  # noqa: F811
    import pytest

    from sa3core.errors import Sa3Error

    for bad, message in (
        ({"states_per_trajectory": 0}, "states_per_trajectory 0 must be from 1 to teacher_steps"),
        ({"states_per_trajectory": 5}, "states_per_trajectory 5 must be from 1 to teacher_steps"),
        ({"cfg_rescale": 1.5}, "cfg_rescale 1.5 must be from 0 to 1"),
    ):
        settings = config(DistillConfig, corpus, loop={"steps": 1, "batch_size": 1}, teacher_steps=4, **bad)
        with pytest.raises(Sa3Error, match=message):
            DistillTrainer(settings, tmp_path / "run")
