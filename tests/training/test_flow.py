"""Stage 1 flow matching (training/flow.py): padding invariance, resume, the loss falls, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sa3core.config import from_dict
from sa3core.errors import Sa3Error
from training.flow import FlowConfig, FlowTrainer, load_stage_config
from training.smoke import build_latent_corpus

# A very small DiT keeps every test here to seconds on 2 cores.
SMALL_DIT = {"width": 64, "depth": 2, "heads": 4, "mlp_dim": 128, "memory_tokens": 4, "fourier_dim": 32}


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast and immune to other jobs on the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_latent_corpus(tmp_path_factory.mktemp("corpus"), clips=6, max_seconds=2.0)


def config(cls, corpus, loop=None, **overrides):
    """A stage config for tests: tiny DiT, hash text encoder, short crops, no progress bar."""
    data = {
        "corpus": str(corpus),
        "text_encoder": "hash",
        "dit": SMALL_DIT,
        "data": {"max_seconds": 1.5, "min_seconds": 0.3},
        "loop": {
            "steps": 6,
            "batch_size": 3,
            "lr": 2e-3,
            "warmup_steps": 1,
            "checkpoint_every": 3,
            "log_every": 1,
            "progress": False,
            "ema_decay": 0.9,
            **(loop or {}),
        },
        **overrides,
    }
    return from_dict(cls, data)


def test_loss_ignores_padded_frames(corpus, tmp_path):
    torch.manual_seed(0)
    trainer = FlowTrainer(config(FlowConfig, corpus), tmp_path / "run")
    batch = None
    for step in range(20):  # find a batch whose items differ in length
        batch = trainer.get_batch(step, 0, torch.Generator())
        if not batch["frame_mask"].all():
            break
    assert not batch["frame_mask"].all()
    padding = ~batch["frame_mask"][:, None, :].expand_as(batch["latents"])
    trainer.model.eval()
    with torch.no_grad():
        reference = trainer.run_step(batch)["loss"]
        changed = dict(batch, latents=batch["latents"].masked_fill(padding, 7.0))
        assert torch.equal(trainer.run_step(changed)["loss"], reference)  # OT on: data padding unseen
        trainer.config.ot = False
        reference = trainer.run_step(batch)["loss"]
        changed = dict(batch, noise=batch["noise"].masked_fill(padding, -5.0), latents=changed["latents"])
        assert torch.equal(trainer.run_step(changed)["loss"], reference)
        # ... while a change in a real frame does change the loss
        real = dict(batch, latents=batch["latents"].clone())
        real["latents"][0, :, 0] += 1.0
        assert not torch.equal(trainer.run_step(real)["loss"], reference)


def test_batches_depend_only_on_step_and_position(corpus, tmp_path):
    trainer = FlowTrainer(config(FlowConfig, corpus, loop={"batch_size": 4}), tmp_path / "a")
    whole = trainer.get_batch(5, 0, torch.Generator())
    trainer.loop.batch_size, trainer.loop.grad_accum = 2, 2  # the same global batch of 4, in two halves
    first = trainer.get_batch(5, 0, torch.Generator())
    second = trainer.get_batch(5, 1, torch.Generator())  # micro-batch 1 = the second half
    for half, rows in ((first, slice(0, 2)), (second, slice(2, 4))):
        frames = half["frame_mask"].shape[1]
        assert torch.equal(half["t"], whole["t"][rows])
        assert torch.equal(half["frame_mask"], whole["frame_mask"][rows, :frames])
        assert torch.equal(half["noise"], whole["noise"][rows, :, :frames])
        assert half["captions"] == whole["captions"][rows]
    # conditioning dropout happens: some prompts are empty over many items
    captions = [c for step in range(30) for c in trainer.get_batch(step, 0, torch.Generator())["captions"]]
    assert 0 < captions.count("") < len(captions) // 2


def test_resume_continues_the_same_loss_curve(corpus, tmp_path):
    torch.manual_seed(0)
    straight = FlowTrainer(config(FlowConfig, corpus), tmp_path / "straight")
    expected = [h["loss"] for h in straight.fit()]
    first = FlowTrainer(config(FlowConfig, corpus), tmp_path / "killed")
    first.fit(stop_at=3)
    resumed = FlowTrainer(config(FlowConfig, corpus), tmp_path / "killed", resume=True)
    assert resumed.step == 3
    got = [h["loss"] for h in first.history] + [h["loss"] for h in resumed.fit()]
    assert got == expected  # bit-exact: every draw depends on (seed, step), the state is restored
    a = load_file(str(tmp_path / "straight" / "model" / "dit.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "dit.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flow_loss_falls(corpus, tmp_path):
    torch.manual_seed(0)
    trainer = FlowTrainer(
        config(FlowConfig, corpus, loop={"steps": 40, "batch_size": 4, "checkpoint_every": 100}), tmp_path / "run"
    )
    held_out = [trainer.get_batch(10_000 + k, 0, torch.Generator()) for k in range(4)]  # never trained on

    def held_out_loss():
        trainer.model.eval()
        with torch.no_grad():
            return sum(trainer.run_step(b)["loss"].item() for b in held_out) / len(held_out)

    before = held_out_loss()
    losses = [h["loss"] for h in trainer.fit()]
    after = held_out_loss()
    print(f"flow held-out loss {before:.4f} -> {after:.4f}")
    assert after < 0.85 * before, (before, after, losses)
    assert (tmp_path / "run" / "model" / "dit.safetensors").exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("corpus: x\nloop:\n  stepz: 3\n")
    with pytest.raises(Sa3Error, match="stepz.*steps"):
        load_stage_config(FlowConfig, str(path))
    path.write_text("dit:\n  widht: 3\ncorpus: smoke\n")
    with pytest.raises(Sa3Error, match="widht"):
        FlowTrainer(load_stage_config(FlowConfig, str(path)), tmp_path / "run")
    with pytest.raises(Sa3Error, match="corpus"):
        FlowTrainer(FlowConfig(text_encoder="hash"), tmp_path / "run2")


def _cli(*args, **kwargs):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "sa3", *map(str, args)], env=env, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["flow", "distill", "adversarial"])
def test_smoke_config_from_the_cli(stage, tmp_path):
    start = time.perf_counter()
    proc = _cli("train", stage, "--config", f"configs/smoke/{stage}.yaml", "--out", tmp_path / "run")
    assert proc.wait(timeout=300) == 0
    assert (tmp_path / "run" / "model" / "model.json").exists()
    print(f"smoke {stage}: {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(corpus, tmp_path):
    """A real kill -9 in the middle of training; the resumed run ends with the same weights."""
    settings = {
        "corpus": str(corpus),
        "text_encoder": "hash",
        "dit": SMALL_DIT,
        "data": {"max_seconds": 1.5},
        "loop": {"steps": 12, "batch_size": 3, "checkpoint_every": 2, "progress": False, "threads": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    assert _cli("train", "flow", "--config", path, "--out", tmp_path / "straight").wait(timeout=300) == 0
    proc = _cli("train", "flow", "--config", path, "--out", tmp_path / "killed")
    while not (tmp_path / "killed" / "checkpoints" / "step_00000006.json").exists():
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pointer = json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())
    assert pointer["step"] < 12
    resumed = _cli("train", "flow", "--config", path, "--out", tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0
    a = load_file(str(tmp_path / "straight" / "model" / "dit.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "dit.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_shipped_stage_config_parses():
    from pathlib import Path

    from training.adversarial import AdversarialConfig
    from training.distill import DistillConfig

    stages = {"flow": FlowConfig, "distill": DistillConfig, "adversarial": AdversarialConfig}
    root = Path(__file__).resolve().parents[2] / "configs"
    checked = 0
    for stage, cls in stages.items():
        for path in [*sorted((root / stage).glob("*.yaml")), root / "smoke" / f"{stage}.yaml"]:
            load_stage_config(cls, str(path))
            checked += 1
    assert checked >= 9


def test_bf16_autocast_trains(corpus, tmp_path):
    torch.manual_seed(0)
    trainer = FlowTrainer(config(FlowConfig, corpus, loop={"steps": 2, "bf16": True}), tmp_path / "run")
    history = trainer.fit()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
