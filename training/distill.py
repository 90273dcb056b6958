"""Stage 2: distillation warmup (``sa3 train distill``).

A frozen teacher (the stage 1 DiT) samples each batch item from noise with the multistep
solver and classifier-free guidance (defaults: 15 DPM++(2M) steps, guidance 5). The student,
initialised from the teacher, learns to jump from an intermediate point of that trajectory
straight to the teacher's endpoint in one step:

    x0_student = x_k - t_k * student(x_k, t_k)      loss = || x0_student - x0_teacher ||^2

with k drawn uniformly over the solver's steps (k = 0 is pure noise at t = 1, the one-step
case). The student has no CFG: it absorbs the guided teacher. Inpaint masks are kept, so the
teacher inpaints the item's real latents and the student learns to do the same; the loss
counts regenerated real frames (as in stage 1). Trajectories are generated on the fly (a
trajectory is cheap next to a student step for the sizes trained on CPU; cache them on disk
for large runs by sampling the same plans offline).

Every trajectory point is one ``velocity_fn`` call of the sampler, captured as it happens, so
any registered sampler can be the teacher's solver.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sa3core import checkpoint
from sa3core.errors import Sa3Error
from sa3core.samplers import SAMPLERS
from training import TRAINERS
from training.flow import ConditionedDiT, DiffusionConfig, DiffusionTrainer, build_dit, item_loss, load_stage_config


@dataclass
class DistillConfig(DiffusionConfig):
    """Stage 2 settings (plus everything in DiffusionConfig)."""

    teacher: str = ""  # the stage 1 dit.safetensors; "" = a random teacher (smoke runs only)
    teacher_sampler: str = "dpmpp"
    teacher_steps: int = 15
    guidance: float = 5.0  # the teacher's CFG scale
    cfg_rescale: float = 0.0  # the teacher's guidance rescaling (sa3core.samplers.cfg_velocity)
    # Trajectory points each item trains on per step, spread evenly over the teacher's solve:
    # one solve costs the teacher ``2 * teacher_steps`` forward passes, a point the student one
    # forward and backward pass, so several points per solve buy more training per second.
    states_per_trajectory: int = 1
    sample_sampler: str = "pingpong"  # students sample in few ping-pong steps, without CFG
    sample_steps: int = 4
    sample_cfg: float = 1.0


class DistillTrainer(DiffusionTrainer):
    config: DistillConfig

    def __init__(self, config: DistillConfig, out_dir: str, resume: bool = False) -> None:
        if config.teacher_steps < 1:
            raise Sa3Error(f"teacher_steps {config.teacher_steps!r} must be at least 1")
        if not 1 <= config.states_per_trajectory <= config.teacher_steps:
            raise Sa3Error(
                f"states_per_trajectory {config.states_per_trajectory!r} must be from 1 to teacher_steps "
                f"({config.teacher_steps})"
            )
        if not 0.0 <= config.cfg_rescale <= 1.0:
            raise Sa3Error(f"cfg_rescale {config.cfg_rescale!r} must be from 0 to 1")
        self.config = config
        self.teacher_sampler = SAMPLERS.get(config.teacher_sampler)
        super().__init__(config, out_dir, resume)

    def build_model(self) -> nn.Module:
        if self.config.teacher:
            self.teacher = build_dit(self.config, self.text.dim, self.config.teacher)
        else:
            warnings.warn(
                "no teacher given: distilling a randomly initialised DiT (fine for smoke runs only)", stacklevel=2
            )
            with torch.random.fork_rng():
                torch.manual_seed(self.config.loop.seed)
                self.teacher = build_dit(self.config, self.text.dim)
        self.teacher.eval().requires_grad_(False)
        if self.config.init:
            student = build_dit(self.config, self.text.dim, self.config.init)
        else:
            student = build_dit(self.config, self.text.dim)
            student.load_state_dict(self.teacher.state_dict())  # the student starts as the teacher
        return ConditionedDiT(student.train().requires_grad_(True))

    @torch.no_grad()
    def trajectory(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The teacher's guided solve from ``batch['noise']``: (states, times, endpoint x0)."""
        self.teacher.to(self.device)
        states, times = [], []
        velocity = self.velocity_fn(self.teacher, batch, self.config.guidance, rescale=self.config.cfg_rescale)

        def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            states.append(x.clone())
            times.append(t.clone())
            return velocity(x, t)

        sampler = self.teacher_sampler()
        endpoint = sampler.sample(recording, batch["noise"].float(), self.config.teacher_steps, generator=None)
        return states, times, endpoint

    def run_step(self, batch: dict) -> dict[str, torch.Tensor]:
        states, times, target = self.trajectory(batch)
        size, count = target.shape[0], self.config.states_per_trajectory
        # ``count`` points per item, evenly spaced over the solver's steps from a uniform offset
        # (count 1: one point uniform over the steps; k = 0 is pure noise, the one-step case).
        offsets = (batch["u"][:, :1] + torch.arange(count, device=target.device) / count) % 1.0  # (B, count)
        index = (offsets * len(states)).long().clamp(max=len(states) - 1).T.reshape(-1)  # (count*B,) point-major
        rows = torch.arange(size, device=target.device).repeat(count)
        x_k = torch.stack(states)[index, rows]  # (count*B, C, T)
        t_k = torch.stack(times)[index, rows]  # (count*B,)
        points = repeat_items(batch, count)
        v = self.train_model(points, x_k, t_k)
        x0 = x_k - t_k[:, None, None] * v.float()
        loss = item_loss((x0 - target.repeat(count, 1, 1)) ** 2, self.loss_weight(points))
        return {"loss": loss, "t_mean": t_k.mean()}


def repeat_items(batch: dict, count: int) -> dict:
    """``batch`` with every per-item entry (tensors and lists of batch length) repeated ``count``
    times, whole batch after whole batch."""
    if count == 1:
        return batch
    size = batch["latents"].shape[0]
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            out[key] = value.repeat(count, *([1] * (value.dim() - 1)))
        elif isinstance(value, list) and len(value) == size:
            out[key] = value * count
        else:
            out[key] = value
    return out


@TRAINERS.register("distill")
def run(config_path: str | None, out_dir: str, resume: bool = False) -> None:
    """``sa3 train distill``: stage 2 from a YAML of DistillConfig overrides."""
    config = load_stage_config(DistillConfig, config_path)
    if config.teacher:
        checkpoint.read_metadata(config.teacher)  # a clear error before any work when the path is wrong
    DistillTrainer(config, out_dir, resume).fit()
