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
