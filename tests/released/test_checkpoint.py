"""Reading a released folder: strict, memory-mapped loading, and one-line errors for every way a
folder can be wrong (not a checkpoint, truncated weights, unknown keys, no text encoder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3core.errors import Sa3Error
from sa3core.released import checkpoint
from sa3core.released.conditioners import assemble

from .released_folder import autoencoder_config, model_config, random_parts, write_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("released") / "small", model_config(differential=True))


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def one_line_error(path) -> str:
    with pytest.raises(Sa3Error) as err:
        loaded = checkpoint.open_released(path)
        checkpoint.load_dit(loaded)
        checkpoint.load_conditioners(loaded)
        loaded.text_encoder_dir()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_loads_the_written_weights_and_runs(folder):
    loaded = checkpoint.open_released(folder)
    dit, conditioners = checkpoint.load_dit(loaded), checkpoint.load_conditioners(loaded)
    reference = random_parts(json.loads((folder / "model_config.json").read_text()))
    for name, state in (("dit", dit.state_dict()), ("conditioners", conditioners.state_dict())):
        assert state.keys() == reference[name].keys()
        assert all(torch.equal(state[k], reference[name][k]) for k in state)
    assert not any(p.requires_grad for p in dit.parameters()) and not dit.training
    assert set(loaded.parts["autoencoder"]) == {"bottleneck.running_std"}
    assert loaded.text_encoder_dir() == folder / "t5gemma-b-b-ul2"
    with torch.no_grad():
        prompt = conditioners["prompt"](torch.randn(2, 256, 768), torch.arange(256)[None, :] < torch.tensor([[3], [9]]))
        seconds = conditioners["seconds_total"](torch.tensor([10.0, 500.0]))
        context, global_cond = assemble({"prompt": prompt, "seconds_total": seconds}, loaded.config.model.diffusion)
        v = dit(torch.randn(2, 256, 5), torch.tensor([0.5, 0.9]), dit.encode_condition(context, global_cond))
    assert context.shape == (2, 257, 768) and global_cond.shape == (2, 768) and v.shape == (2, 256, 5)
    assert torch.equal(prompt[0, 3:], conditioners["prompt"].padding_embedding.expand(253, -1))


def test_weights_are_the_memory_map_not_a_copy(folder):
    loaded = checkpoint.open_released(folder)
    mapped = {k: t.data_ptr() for k, t in loaded.parts["dit"].items()}
    dit = checkpoint.load_dit(loaded)
    assert all(t.data_ptr() == mapped[k] for k, t in dit.state_dict().items())


MEASURE = """
import sys
from pathlib import Path
import torch
from sa3core.released import checkpoint
from sa3core.released.dit import ReleasedDiT

def anonymous_mb():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon"))
    return int(line.split()[1]) / 1024

loaded = checkpoint.open_released(sys.argv[1])
with torch.device("meta"):  # torch's one-time set-up of meta kernels (~70 MB) is not the weights
    ReleasedDiT(loaded.config.model.diffusion.config)
before = anonymous_mb()
dit = checkpoint.load_dit(loaded)
total = sum(float(p.sum()) for p in dit.parameters())  # every page read
print(anonymous_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_loading_a_large_dit_takes_no_anonymous_memory(tmp_path):
    """In a fresh process (no freed memory to reuse), loading and reading every weight adds file
    pages, not anonymous ones: the weights are the file's memory map."""
    path = write_folder(tmp_path / "large", model_config(embed_dim=512, depth=6, num_heads=8))
    size_mb = (path / "model.safetensors").stat().st_size / 2**20
    run = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert size_mb > 60 and float(run.stdout.split()[-1]) < 0.25 * size_mb


def test_a_same_repo_holds_the_autoencoder_without_prefix(tmp_path):
    path = tmp_path / "same"
    path.mkdir()
    config = {"model_type": "autoencoder", "sample_rate": 44100, "model": autoencoder_config()}
    (path / "model_config.json").write_text(json.dumps(config))
    save_file({"bottleneck.running_std": torch.ones(1, 256, 1)}, str(path / "model.safetensors"))
    loaded = checkpoint.open_released(path)
    assert set(loaded.parts["autoencoder"]) == {"bottleneck.running_std"} and not loaded.parts["dit"]
    with pytest.raises(Sa3Error, match="holds an autoencoder alone; it has no DiT"):
        checkpoint.load_dit(loaded)


# ----------------------------------------------------------------------------- bad folders
def test_not_a_folder(tmp_path):
    assert "is not a folder" in one_line_error(tmp_path / "nowhere")


def test_a_folder_without_model_config(tmp_path):
    (tmp_path / "dit.safetensors").write_bytes(b"")  # e.g. a folder in sa3's own format
    assert not checkpoint.is_released_folder(tmp_path)
    assert "is not a released Stable Audio 3 checkpoint: it has no model_config.json" in one_line_error(tmp_path)


def test_invalid_json(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    (path / "model_config.json").write_text("{ not json")
    assert "is not valid JSON" in one_line_error(path)


def test_unknown_config_key_from_a_newer_release(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    data = json.loads((path / "model_config.json").read_text())
    data["model"]["diffusion"]["config"]["attn_kwargs"]["sliding_window"] = [8, 8]
    (path / "model_config.json").write_text(json.dumps(data))
    message = one_line_error(path)
    assert "unknown key 'sliding_window'" in message and "model.diffusion.config.attn_kwargs" in message


def test_missing_weights_file(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    (path / "model.safetensors").unlink()
    assert "has no model.safetensors" in one_line_error(path)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_truncated_weights(folder, tmp_path, keep):
    path = copy_of(folder, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: int(len(data) * keep)])
    assert "is truncated or not a safetensors file" in one_line_error(path)


def rewrite_weights(path: Path, change) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def test_a_missing_layer_is_named(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    rewrite_weights(path, lambda t: t.pop("model.model.transformer.layers.1.ff.ff.2.weight"))
    assert "lacks 'transformer.layers.1.ff.ff.2.weight' (1 missing)" in one_line_error(path)


def test_an_unexpected_key_is_named(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    rewrite_weights(path, lambda t: t.update({"model.model.transformer.layers.9.pre_norm.gamma": torch.ones(128)}))
    assert "has 'transformer.layers.9.pre_norm.gamma' (1 unexpected)" in one_line_error(path)


def test_a_key_under_no_known_prefix_is_named(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    rewrite_weights(path, lambda t: t.update({"model.ema.memory_tokens": torch.ones(4, 128)}))
    assert "holds 'model.ema.memory_tokens', which is under none of model.model." in one_line_error(path)


def test_a_wrong_shape_is_named(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    rewrite_weights(path, lambda t: t.update({"conditioner.conditioners.prompt.padding_embedding": torch.ones(512)}))
    assert "'prompt.padding_embedding' has shape (512,), the config expects (768,)" in one_line_error(path)


def test_a_missing_text_encoder_folder(folder, tmp_path):
    path = copy_of(folder, tmp_path)
    shutil.rmtree(path / "t5gemma-b-b-ul2")
    message = one_line_error(path)
    assert "has no text-encoder folder t5gemma-b-b-ul2/" in message
    assert "download the whole of stabilityai/stable-audio-3-small-music" in message
    (path / "t5gemma-b-b-ul2").mkdir()
    (path / "t5gemma-b-b-ul2" / "config.json").write_text("{}")
    assert "a t5gemma-b-b-ul2/ folder without model.safetensors" in one_line_error(path)
