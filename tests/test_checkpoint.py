import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from sa3core import checkpoint
from sa3core.errors import Sa3Error


@dataclass
class ToyConfig:
    width: int = 4


class Toy(torch.nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(config.width, config.width)


if "toy-test" not in checkpoint.MODELS:
    checkpoint.MODELS.register("toy-test")(checkpoint.ModelKind(ToyConfig, Toy))


def test_round_trip_keeps_weights_and_config(tmp_path):
    model = Toy(ToyConfig(width=6))
    path = checkpoint.save_model(tmp_path / "toy.safetensors", "toy-test", model, extra={"steps": 3})
    loaded, extra = checkpoint.load_model(path, expect_kind="toy-test")
    assert loaded.config == ToyConfig(width=6) and extra == {"steps": 3}
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_loading_draws_no_weights_and_leaves_init_working(tmp_path):
    """load_model builds the module without drawing starting weights (they are all loaded next),
    so the global random stream is untouched, and torch.nn.init works as before afterwards."""
    path = checkpoint.save_model(tmp_path / "toy.safetensors", "toy-test", Toy(ToyConfig(width=64)))
    torch.manual_seed(5)
    checkpoint.load_model(path)
    after_load = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_load, torch.rand(3))
    torch.manual_seed(5)
    fresh = Toy(ToyConfig(width=64))  # init draws again
    assert fresh.proj.weight.std() > 0.05 and not torch.equal(fresh.proj.weight, Toy(ToyConfig(width=64)).proj.weight)
    missing = tmp_path / "missing.safetensors"
    state = {k: v for k, v in Toy(ToyConfig(width=64)).state_dict().items() if k != "proj.bias"}
    save_file(state, str(missing), metadata={"sa3_format": "1", "kind": "toy-test", "config": '{"width": 64}'})
    with pytest.raises(Sa3Error, match="proj.bias"):
        checkpoint.load_model(missing)  # an undrawn weight never survives


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"sa3_format": "99", "kind": "toy-test", "config": "{}"})
    with pytest.raises(Sa3Error, match="format '99'"):
        checkpoint.load_model(path)


def test_wrong_kind_and_bad_config_are_refused(tmp_path):
    path = checkpoint.save_model(tmp_path / "toy.safetensors", "toy-test", Toy(ToyConfig()))
    with pytest.raises(Sa3Error, match="not a 'dit'"):
        checkpoint.load_model(path, expect_kind="dit")
    bad = tmp_path / "bad.safetensors"
    save_file(
        {"w": torch.zeros(1)},
        str(bad),
        metadata={"sa3_format": "1", "kind": "toy-test", "config": json.dumps({"widht": 3})},
    )
    with pytest.raises(Sa3Error, match="unknown key 'widht'"):
        checkpoint.load_model(bad)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04pickle-looking bytes")
    with pytest.raises(Sa3Error, match="not a safetensors model file"):
        checkpoint.load_model(path)
