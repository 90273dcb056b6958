"""The training loop every stage shares (autoencoder, flow, distill, adversarial).

A stage subclasses :class:`Trainer` (audiocraft style) and fills in four hooks:

- ``build_model() -> nn.Module``: everything the main optimizer trains (model plus any heads).
- ``get_batch(step, micro, generator) -> batch``: one micro-batch, drawn *only* from
  ``generator`` (seeded from ``(seed, step, micro, rank)``), so a resumed run sees exactly the
  batches the uninterrupted run would have seen. No iterator state needs saving.
- ``run_step(batch) -> dict[str, Tensor]``: forward pass and losses; ``"loss"`` is the one
  back-propagated, the others are logged.
- ``export(out_dir)``: write the final weights with :func:`sa3core.checkpoint.save_model`.

Optional: ``evaluate() -> dict[str, float]``, ``log_samples(writer, step)`` (TensorBoard audio),
``extra_state() -> dict[str, module | optimizer]`` for more things to checkpoint (e.g. a
discriminator and its optimizer that ``run_step`` steps itself).

Subclasses set their own attributes first and then call ``super().__init__``, which builds the
model, optimizer, LR schedule and EMA, and restores the last checkpoint when ``resume`` is set.

The loop handles: seeding, torchrun (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment;
gloo on CPU, NCCL on CUDA, DistributedDataParallel), gradient accumulation, optional bf16
autocast, gradient clipping, an EMA of the weights, AdamW with linear warmup then cosine decay,
atomic checkpoints (safetensors for tensors + a JSON sidecar for everything else, never pickle)
that resume bit-exactly, TensorBoard logs and a tqdm progress bar.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sa3core.checkpoint import atomic_write
from sa3core.errors import Sa3Error

CHECKPOINT_FORMAT = 1


@dataclass
class LoopConfig:
    """Settings of the shared loop; each stage's config holds one as its ``loop`` field."""

    seed: int = 0
    steps: int = 1000  # optimizer steps (the learning-rate schedule's length)
    stop_after: int = 0  # end the run (checkpoint, export) after this many steps of that schedule; 0 = at steps
    batch_size: int = 4  # items per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 100  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at `steps`
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    bf16: bool = False  # autocast forward passes to bfloat16 (CPU or CUDA)
    ema_decay: float = 0.999  # 0 turns the EMA off
    checkpoint_every: int = 500  # steps between checkpoints (a final one is always written)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    log_every: int = 10  # steps between TensorBoard scalar logs
    eval_every: int = 0  # steps between evaluate() calls; 0 = only at the end
    audio_every: int = 0  # steps between log_samples() calls; 0 = only at the end
    threads: int = 0  # torch.set_num_threads; 0 leaves torch's default
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Join the torchrun process group when launched by torchrun, else run single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if world_size > 1 and not torch.distributed.is_initialized():
        if use_cuda:
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, micro, rank): resumable data order."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR: linear warmup, then cosine from 1 down to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's floating-point parameters; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in params and value.is_floating_point():
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)


# ---- checkpoint (de)serialisation: tensors -> safetensors, the rest -> JSON, no pickle ----


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn nested dicts/lists/tensors into JSON, moving tensors into ``tensors`` by path."""
    if isinstance(obj, torch.Tensor):
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        tensors[prefix] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "iu" else obj.copy())
        return {"__ndarray__": prefix, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        # keys kept with their types (optimizer state uses int keys, which JSON would stringify)
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    return obj


class Trainer(abc.ABC):
    """Abstract stage trainer; see the module docstring for the hooks a stage fills in."""

    def __init__(self, loop: LoopConfig, out_dir: str | os.PathLike, resume: bool = False, run_config: Any = None):
        self.loop = loop
        self.out_dir = Path(out_dir)
        self.dist = setup_distributed()
        self.device = self.dist.device
        if loop.threads > 0:
            torch.set_num_threads(loop.threads)
        seed_everything(loop.seed + self.dist.rank)
        self.model = self.build_model().to(self.device)
        self.train_model: nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self.build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, loop.warmup_steps, loop.steps, loop.min_lr_ratio)
        )
        self.ema = EMA(self.model, loop.ema_decay) if loop.ema_decay > 0 else None
        self.step = 0
        self.history: list[dict[str, float]] = []  # per-step logged losses (rank 0's view)
        self._writer = None
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if run_config is not None:
                text = json.dumps(run_config, indent=2, sort_keys=True)
                atomic_write(self.out_dir / "config.json", lambda tmp: Path(tmp).write_text(text))
        if resume:
            if not self.load_checkpoint():
                raise Sa3Error(f"--resume given but {str(self.checkpoint_dir)!r} has no checkpoint; drop --resume")
        elif (self.checkpoint_dir / "latest.json").exists():
            raise Sa3Error(
                f"run folder {str(self.out_dir)!r} already has checkpoints; pass --resume or pick a new --out"
            )

    # ---- hooks ----
    @abc.abstractmethod
    def build_model(self) -> nn.Module: ...

    @abc.abstractmethod
    def get_batch(self, step: int, micro: int, generator: torch.Generator) -> Any: ...

    @abc.abstractmethod
    def run_step(self, batch: Any) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def export(self, out_dir: Path) -> None:
        """Write final weights with save_model (use :meth:`ema_model` for the averaged ones)."""

    def evaluate(self) -> dict[str, float]:
        return {}

    def log_samples(self, writer: Any, step: int) -> None:
        """Add audio (e.g. ``writer.add_audio``) to TensorBoard; nothing by default."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """More objects with state_dict/load_state_dict to checkpoint (discriminators, ...)."""
        return {}

    def build_optimizer(self) -> torch.optim.Optimizer:
        # no weight decay on norms, biases and learned embeddings of size 1 in any dim but one
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.loop.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.loop.lr, betas=tuple(self.loop.betas))

    # ---- helpers for stages ----
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.loop.bf16)

    def ema_model(self) -> nn.Module:
        """A copy of the model carrying the EMA weights (the live weights if EMA is off), eval mode."""
        model = copy.deepcopy(self.model)
        if self.ema is not None:
            model.load_state_dict(self.ema.state_dict())
        return model.eval()

    @property
    def writer(self):
        if self._writer is None and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._writer

    # ---- the loop ----
    def fit(self, stop_at: int | None = None) -> list[dict[str, float]]:
        """Train from ``self.step`` to ``loop.steps`` (or stop early after step ``stop_at``, e.g. to
        test resuming); returns the logged per-step losses. Exports final weights when finished."""
        loop = self.loop
        final = min(loop.stop_after, loop.steps) if loop.stop_after > 0 else loop.steps
        end = final if stop_at is None else min(stop_at, final)
        bar = None
        if self.dist.is_main and loop.progress:
            from tqdm import tqdm

            bar = tqdm(total=loop.steps, initial=self.step, desc=type(self).__name__, unit="step", dynamic_ncols=True)
        while self.step < end:
            step = self.step
            logs = self.train_step(step)
            self.step = step + 1
            self.history.append(logs)
            if bar is not None:
                bar.set_postfix(loss=f"{logs['loss']:.4g}")
                bar.update(1)
            done = self.step == end
            if self.dist.is_main and (self.step % loop.log_every == 0 or done):
                for name, value in logs.items():
                    self.writer.add_scalar(f"train/{name}", value, self.step)
            if loop.eval_every and self.step % loop.eval_every == 0 or done:
                self._evaluate()
            if self.dist.is_main and (loop.audio_every and self.step % loop.audio_every == 0 or done):
                self.log_samples(self.writer, self.step)
            if self.step % loop.checkpoint_every == 0 or done:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self.dist.is_main and self.step == final:
            self.export(self.out_dir)
            if self._writer is not None:
                self._writer.flush()
        return self.history

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns floats to log."""
        self.train_model.train()
        accum = self.loop.grad_accum
        totals: dict[str, float] = {}
        for micro in range(accum):
            generator = step_generator(self.loop.seed, step, micro, self.dist.rank)
            batch = self.to_device(self.get_batch(step, micro, generator))
            last = micro == accum - 1
            sync = contextlib.nullcontext()
            if self.train_model is not self.model and not last:
                sync = self.train_model.no_sync()  # all-reduce gradients once, on the last micro-batch
            with sync:
                with self.autocast():
                    losses = self.run_step(batch)
                if "loss" not in losses:
                    raise KeyError(f"{type(self).__name__}.run_step must return a 'loss' entry")
                (losses["loss"].float() / accum).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / accum
        if self.loop.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.loop.grad_clip)
            totals["grad_norm"] = float(norm)
        totals["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return totals

    def to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def _evaluate(self) -> None:
        self.model.eval()
        with torch.no_grad():
            metrics = self.evaluate()
        if self.dist.is_main:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, self.step)

    # ---- checkpoints ----
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        for name, obj in self.extra_state().items():
            state[f"extra.{name}"] = obj.state_dict()
        return state

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.{safetensors,json}`` then point ``latest.json`` at it."""
        if not self.dist.is_main:
            return None
        tensors: dict[str, torch.Tensor] = {}
        tree = flatten_state(self._state(), "s", tensors)
        name = f"step_{self.step:08d}"
        folder = self.checkpoint_dir
        sidecar = {"format": CHECKPOINT_FORMAT, "step": self.step, "world_size": self.dist.world_size, "state": tree}
        atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(tensors, tmp))
        atomic_write(folder / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(sidecar)))
        pointer = json.dumps({"step": self.step, "name": name})
        atomic_write(folder / "latest.json", lambda tmp: Path(tmp).write_text(pointer))
        old = sorted(folder.glob("step_*.json"))[: -self.loop.keep_checkpoints or None]
        for path in old:
            path.unlink(missing_ok=True)
            path.with_suffix(".safetensors").unlink(missing_ok=True)
        return folder / f"{name}.safetensors"

    def load_checkpoint(self) -> bool:
        """Restore the checkpoint ``latest.json`` names; False when there is none."""
        pointer = self.checkpoint_dir / "latest.json"
        if not pointer.exists():
            return False
        name = json.loads(pointer.read_text())["name"]
        sidecar = json.loads((self.checkpoint_dir / f"{name}.json").read_text())
        if sidecar.get("format") != CHECKPOINT_FORMAT:
            raise Sa3Error(
                f"checkpoint {name!r} has format {sidecar.get('format')!r}; this sa3 reads {CHECKPOINT_FORMAT}"
            )
        tensors = load_file(str(self.checkpoint_dir / f"{name}.safetensors"))
        state = unflatten_state(sidecar["state"], tensors)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        for key, obj in self.extra_state().items():
            obj.load_state_dict(state[f"extra.{key}"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(_tuples(rng["python"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(sidecar["step"])
        return True


def _tuples(obj: Any) -> Any:
    """random.setstate wants nested tuples."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj
