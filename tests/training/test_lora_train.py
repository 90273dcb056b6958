"""``sa3 train lora`` (training/lora/): the official objective bit for bit, captions, the loss falls,
the file loads and changes the audio, resume equals an uninterrupted run, bad input is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sa3.cli import main
from sa3core.config import from_dict
from sa3core.errors import Sa3Error
from sa3core.lora import LoraConfig, read_lora
from sa3core.released.checkpoint import open_released
from sa3core.released.text import load_text_encoder
from training.lora.adapters import selected_layers
from training.lora.data import caption_from_name, scan_folder
from training.lora.objective import LengthShift, inpaint_keep_mask, truncated_logit_normal
from training.lora.trainer import LoraTrainConfig, LoraTrainer, build_lora_model, load_config, training_loss

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "tests" / "fixtures" / "released" / "small-base"
OFFICIAL = REPO / "tests" / "fixtures" / "lora-training"
SMOKE = REPO / "configs" / "smoke" / "lora.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """The fixture model is tiny: one thread is as fast and immune to other jobs on the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_wav(path: Path, seconds: float, freq: float, rate: int = 44_100, channels: int = 2) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-2 * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t)
    sf.write(path, np.stack([tone, 0.8 * tone][:channels], axis=1).astype(np.float32), rate)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_wav(folder / "dusty_breakbeat_01.wav", 1.3, 110)
    write_wav(folder / "warm_pad.wav", 0.9, 220, rate=48_000, channels=1)
    (folder / "loops").mkdir()
    write_wav(folder / "loops" / "pluck-2.wav", 1.7, 440)
    (folder / "captions.csv").write_text('file,caption\nloops/pluck-2.wav,"bright, plucky marimba"\n')
    return folder


def settings(data: Path, out_cache: Path, **loop) -> dict:
    """The smoke config plus the test's data and a shared cache (so runs encode once)."""
    return {
        "base": str(BASE),
        "data": str(data),
        "cache": str(out_cache),
        "crop_seconds": 4.0,
        "lora": {"rank": 4},
        "loop": {"steps": 4, "lr": 1e-3, "checkpoint_every": 2, "progress": False, "threads": 1, **loop},
    }


# ----------------------------------------------------------------------------- the official objective
def _official(kind: str) -> tuple[dict, dict]:
    with safe_open(str(OFFICIAL / f"step_{kind}.safetensors"), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, json.loads(handle.metadata()["fixture"])


def test_timestep_draws_match_the_official_transforms():
    """The official sampler and length shift, fed the same normal draws / grid, give these numbers."""
    draws = load_file(str(OFFICIAL / "draws.safetensors"))
    # float rounding only: the fixture's CPU and another one's vectorised exp/erf differ in the last bits
    torch.testing.assert_close(truncated_logit_normal(draws["logits"]), 1 - draws["sampler_output"], rtol=0, atol=1e-6)
    shift = LengthShift.from_options(open_released(BASE).config.model.diffusion.distribution_shift_options, "test")
    lengths, grid = draws["lengths"], draws["grid_t"]
    shifted = shift(grid[None].expand(len(lengths), -1).reshape(-1), lengths.repeat_interleave(len(grid)))
    torch.testing.assert_close(shifted.reshape(len(lengths), -1), draws["shifted"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", ["dora-rows", "lora", "bora-xs"])
def test_loss_and_gradients_equal_the_official_training_step(kind):
    """scripts/released/make_lora_training_fixture.py ran the official training_step (train_lora.py's
    settings, float32) with its draws handed in; sa3's step on the same draws gives its loss and
    every adapter gradient: the objective, conditioning, inpaint input, CFG dropout, OT, padding
    masks and the adapter placement and math all agree."""
    ref, meta = _official(kind)
    raw = meta["lora_config"]
    lora = LoraConfig(raw["rank"], raw["alpha"], raw["adapter_type"], raw["dropout"],
                      None if raw["include"] is None else tuple(raw["include"]),
                      None if raw["exclude"] is None else tuple(raw["exclude"]))  # fmt: skip
    released = open_released(BASE)
    model = build_lora_model(released, lora, torch.device("cpu"), seed=0)
    adapters = model.named_adapters()
    stored = {k[len("lora.") :]: v for k, v in ref.items() if k.startswith("lora.")}
    assert {f"{layer}.parametrizations.weight.0.{p}" for layer, a in adapters.items() for p in a.kind.params} == set(
        stored
    )  # the same layers adapted, the same tensors
    with torch.no_grad():
        for key, value in stored.items():
            layer, param = key.split(".parametrizations.weight.0.")
            getattr(adapters[layer], param).copy_(value)
    text = load_text_encoder(released.text_encoder_dir(), 256, torch.bfloat16)  # as the official conditioner
    hidden, mask = text.encode(meta["prompts"])
    shift = LengthShift.from_options(released.config.model.diffusion.distribution_shift_options, "test")
    frames = torch.tensor([-(-int(s * 44_100) // 4096) for s in meta["seconds_total"]])
    t = shift(1 - ref["input.sampler"], frames)
    assert torch.equal(t, ref["t_shifted"]) and torch.equal(frames, ref["effective_frames"])
    batch = {
        "latents": ref["input.latents"],
        "noise": ref["input.noise"],
        "t": t,
        "keep": ref["input.keep"],
        "valid": ref["input.extended"].bool(),
        "drop": ref["input.dropped"].bool(),
        "hidden": hidden,
        "text_mask": mask,
        "seconds": torch.tensor(meta["seconds_total"], dtype=torch.float32),
    }
    model.train()
    loss = training_loss(model, batch, ot=True, context_weight=1.0)["loss"]
    loss.backward()
    torch.testing.assert_close(loss.reshape(1), ref["loss"], rtol=1e-6, atol=0)
    for key in stored:
        layer, param = key.split(".parametrizations.weight.0.")
        grad, expected = getattr(adapters[layer], param).grad, ref[f"grad.{key}"]
        # bit for bit at the fixture's 2 threads; other thread counts sum in another order
        assert (grad - expected).norm() <= 2e-4 * expected.norm(), key
    # The comparison has teeth: leaving out the kept-frame term or the OT pairing moves the loss.
    with torch.no_grad():
        assert abs(training_loss(model, batch, ot=True, context_weight=0.0)["loss"] - loss) > 1e-3 * loss
        assert abs(training_loss(model, batch, ot=False, context_weight=1.0)["loss"] - loss) > 1e-3 * loss


def test_adapters_go_where_the_official_add_lora_puts_them():
    """Every Linear and Conv1d of the DiT and the conditioners, by their official names, filtered."""
    released = open_released(BASE)
    model = build_lora_model(released, LoraConfig(2, 2, "lora"), torch.device("cpu"), 0)
    names = set(model.named_adapters())
    assert "conditioners.seconds_total.embedder.embedding.1" in names
    assert {"model.preprocess_conv", "model.postprocess_conv", "model.to_cond_embed.0"} <= names
    assert not any("pretransform" in n or n.startswith("conditioners.prompt") for n in names)
    filtered = LoraConfig(2, 2, "lora", include=("transformer.layers.[0-1].self_attn",), exclude=("to_out",))
    roots = {"model.": model.dit, "conditioners.": model.conditioners}
    assert set(selected_layers(roots, filtered)) == {f"model.transformer.layers.{i}.self_attn.to_qkv" for i in (0, 1)}


def test_inpaint_masks_keep_nothing_after_the_valid_frames():
    generator = torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(200):
        keep = inpaint_keep_mask(20, (0.1, 0.8, 0.1), 10, generator)
        assert keep.shape == (20,) and set(keep.tolist()) <= {0.0, 1.0}
        kinds.add("full" if keep.sum() == 0 else "partial")
    assert kinds == {"full", "partial"}


# ----------------------------------------------------------------------------- data
def test_captions_from_table_txt_and_file_names(tmp_path):
    assert caption_from_name("dusty_breakbeat_01") == "dusty breakbeat"
    assert caption_from_name("808-kick_hard-3") == "808 kick hard"
    write_wav(tmp_path / "dusty_breakbeat_01.wav", 0.2, 100)
    write_wav(tmp_path / "b.wav", 0.2, 100)
    (tmp_path / "b.txt").write_text("a txt caption\n")
    (tmp_path / ".hidden.wav").write_bytes(b"")
    clips = {c.name: (c.caption, c.caption_from) for c in scan_folder(tmp_path)}
    assert clips == {"b.wav": ("a txt caption", "b.txt"), "dusty_breakbeat_01.wav": ("dusty breakbeat", "file name")}
    (tmp_path / "captions.jsonl").write_text('{"file": "b.wav", "caption": "from the table"}\n\n')
    assert scan_folder(tmp_path)[0].caption == "from the table"
    (tmp_path / "captions.jsonl").write_text('{"file": "c.wav", "caption": "x"}\n')
    with pytest.raises(Sa3Error, match=r"captions.jsonl:1 names 'c.wav'"):
        scan_folder(tmp_path)


# ----------------------------------------------------------------------------- training
def test_loss_goes_down_on_a_memorised_example(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    write_wav(folder / "dusty_breakbeat.wav", 1.0, 110)
    config = from_dict(LoraTrainConfig, settings(folder, tmp_path / "cache", steps=40, lr=1e-2, checkpoint_every=100))
    trainer = LoraTrainer(config, tmp_path / "run")
    fixed = [trainer.to_device(trainer.get_batch(step, 0, None)) for step in range(1000, 1004)]  # unseen draws

    def held_out() -> float:
        trainer.model.eval()
        with torch.no_grad():
            return float(np.mean([float(trainer.run_step(batch)["loss"]) for batch in fixed]))

    before = held_out()
    trainer.fit()
    after = held_out()
    assert after < 0.6 * before, (before, after)


def test_cli_trains_a_file_that_loads_and_changes_the_audio(data, tmp_path, capsys):
    from sa3core.pipeline import Pipeline

    out = tmp_path / "dusty-lora"
    code = main(["train", "lora", "--config", str(SMOKE), "--out", str(out), "--data", str(data), "--steps", "4",
                 "--checkpoint-every", "2", "--rank", "3", "--exclude", "seconds_total"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    final = out / "dusty-lora.safetensors"
    adapter = read_lora(final)
    assert adapter.config == LoraConfig(3, 3, "dora-rows", 0.0, None, ("seconds_total",))
    assert sorted(p.name for p in (out / "adapters").iterdir()) == [
        "dusty-lora-step000002.safetensors",
        "dusty-lora-step000004.safetensors",
    ]
    assert load_file(str(final)).keys() == load_file(str(out / "adapters" / "dusty-lora-step000004.safetensors")).keys()
    assert any((out / "tensorboard").iterdir()) and (out / "checkpoints" / "latest.json").is_file()
    checkpoint = load_file(str(next((out / "checkpoints").glob("*.safetensors"))))
    assert sum(t.numel() for t in checkpoint.values()) < 10 * sum(
        t.numel() for layer in adapter.layers.values() for t in layer.values()
    )  # adapters and optimizer state, never the base model
    cached = list((out / "cache" / "latents").rglob("*.safetensors"))
    assert len(cached) == 4  # three files (each with its inverted twin) and the silence
    prompt, samples = "dusty breakbeat", 22_050
    base = Pipeline.load(BASE, bf16=False).generate(prompt, samples, steps=2, seed=3)
    adapted = Pipeline.load(BASE, bf16=False, loras=[final]).generate(prompt, samples, steps=2, seed=3)
    assert np.abs(adapted - base).max() > 1e-3


def test_resume_continues_exactly_where_the_run_stopped(data, tmp_path):
    straight = LoraTrainer(from_dict(LoraTrainConfig, settings(data, tmp_path / "cache", batch_size=2)), tmp_path / "a")
    straight.fit()
    first = LoraTrainer(
        from_dict(LoraTrainConfig, settings(data, tmp_path / "cache", batch_size=2, stop_after=2)), tmp_path / "b"
    )
    first.fit()
    assert json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())["step"] == 2
    resumed = load_config(None, str(tmp_path / "b"), True, {"loop": {"stop_after": 0}})  # the saved config
    LoraTrainer(resumed, tmp_path / "b", resume=True).fit()
    a, b = load_file(str(tmp_path / "a" / "a.safetensors")), load_file(str(tmp_path / "b" / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Sa3Error, match="rank"):
        load_config(None, str(tmp_path / "b"), True, {"lora": {"rank": 8}})


def _bad(argv: list[str], capsys) -> str:
    code = main(["train", "lora", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("sa3: error: "), err
    return err


def test_bad_input_is_one_line_and_exit_2(data, tmp_path, capsys):
    common = ["--base", str(BASE), "--out", str(tmp_path / "out")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is empty" in _bad([*common, "--data", str(empty)], capsys)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no audio here")
    assert "holds no audio files" in _bad([*common, "--data", str(notes)], capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    write_wav(broken / "a.wav", 0.2, 100)
    (broken / "captions.csv").write_bytes(b"file,caption\na.wav,\xff\xfe caf\xe9\n")
    assert "is not UTF-8" in _bad([*common, "--data", str(broken)], capsys)
    (broken / "captions.csv").write_text("name,text\na.wav,hi\n")
    assert "no 'file' column" in _bad([*common, "--data", str(broken)], capsys)
    assert "adapter type 'qlora' is unknown" in _bad([*common, "--data", str(data), "--adapter-type", "qlora"], capsys)
    assert "rank 0 must be" in _bad([*common, "--data", str(data), "--rank", "0"], capsys)
    assert "rank -3 must be" in _bad([*common, "--data", str(data), "--rank", "-3"], capsys)
    assert "post-trained" in _bad([*common[2:], "--base", str(BASE.parent / "small"), "--data", str(data)], capsys)
    assert main(["train", "flow", "--out", str(tmp_path / "f"), "--rank", "4"]) == 2
    assert "--rank is an option of `sa3 train lora`" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


# ----------------------------------------------------------------------------- kill -9
def _cli(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sa3", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow  # three training processes: about 17 s
def test_sigkill_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    """A real kill -9 as soon as a checkpoint lands; the resumed run ends with the same adapter."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(settings(data, tmp_path / "cache", steps=10, checkpoint_every=1)))  # JSON is YAML
    assert _cli("train", "lora", "--config", path, "--out", tmp_path / "straight").wait(timeout=300) == 0
    proc = _cli("train", "lora", "--config", path, "--out", tmp_path / "killed")
    while not (tmp_path / "killed" / "checkpoints" / "step_00000004.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())["step"] < 10
    assert _cli("train", "lora", "--out", tmp_path / "killed", "--resume").wait(timeout=300) == 0  # saved config
    a = load_file(str(tmp_path / "straight" / "straight.safetensors"))
    b = load_file(str(tmp_path / "killed" / "killed.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # about 15 s
def test_two_processes_train_what_one_does(data, tmp_path):
    """torchrun with 2 processes (gloo) x batch 1 = one process x batch 2: the same items and draws
    (OT off: it pairs within a process's micro-batch); the adapters agree to float16 storage."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({**settings(data, tmp_path / "cache", steps=3), "ot": False}))
    one = _cli("train", "lora", "--config", path, "--out", tmp_path / "one", "--batch-size", "2")
    assert one.wait(timeout=300) == 0, one.stderr.read().decode()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sa3", "train",
         "lora", "--config", str(path), "--out", str(tmp_path / "two"), "--batch-size", "1"],
        cwd=REPO, env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr.decode()[-2000:]
    a = load_file(str(tmp_path / "one" / "one.safetensors"))
    b = load_file(str(tmp_path / "two" / "two.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 2e-3 * a[key].float().abs().max(), key


def test_the_shipped_configs_parse_and_official_yaml_is_the_defaults(tmp_path):
    """configs/lora/official.yaml writes out every default (what docs/lora.md's table lists)."""
    written = load_config(str(REPO / "configs" / "lora" / "official.yaml"), str(tmp_path), False, {})
    assert written == LoraTrainConfig()
    smoke = load_config(str(SMOKE), str(tmp_path), False, {"data": "x"})
    assert smoke.lora.lora_config() == LoraConfig(4, 4, "dora-rows") and smoke.loop.steps == 8


def test_the_bench_quick_run_writes_its_json(tmp_path):
    from bench import lora_train

    out = tmp_path / "lora_train.json"
    assert lora_train.main(["--quick", "--threads", "1", "--rank", "4", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert (
        row["shape"] == "tiny" and row["seconds_per_step"] > 0 and row["frames_per_item"] == 21
    )  # 2 s, cropped to whole frames
