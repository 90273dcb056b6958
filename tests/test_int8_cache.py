"""The disk cache of int8 weights (sa3core/modules/int8_cache.py): a layer packed from the cache
gives the bits of one packed from its float weight; any change to the weight misses; a broken
entry or a folder that cannot be written costs time, never a take; the folder keeps its size
limit; a released backend packs its second process from the first one's entries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sa3core.modules.int8 import Int8Linear, int8_inference_copy, int8_layers, int8_supported
from sa3core.modules.int8_cache import Int8Cache, cache_folder

pytestmark = pytest.mark.skipif(not int8_supported(), reason="torch has no x86 int8 kernels on this machine")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "released"


def linear(seed: int = 0, in_features: int = 256, out_features: int = 384) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features).eval()


X = torch.randn(3, 20, 256, generator=torch.Generator().manual_seed(1))


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def test_a_layer_from_the_cache_has_the_bits_of_one_packed_from_its_weight(tmp_path):
    layer = linear()
    reference = Int8Linear.from_linear(layer)(X)
    first = Int8Cache(tmp_path)
    torch.testing.assert_close(Int8Linear.from_linear(layer, first)(X), reference, rtol=0, atol=0)
    assert (first.hits, first.misses) == (0, 1) and len(entries(tmp_path)) == 1
    second = Int8Cache(tmp_path)  # another process
    torch.testing.assert_close(Int8Linear.from_linear(layer, second)(X), reference, rtol=0, atol=0)
    assert (second.hits, second.misses) == (1, 0) and len(entries(tmp_path)) == 1


def test_any_change_to_the_weight_misses(tmp_path):
    layer = linear()
    cache = Int8Cache(tmp_path)
    before = Int8Linear.from_linear(layer, cache)(X)
    with torch.no_grad():  # one weight of 98 304 moved by one float32 step
        layer.weight[7, 11] = torch.nextafter(layer.weight[7, 11], torch.tensor(1.0))
    assert Int8Cache.key(layer.weight, 64) != entries(tmp_path)[0].stem
    with torch.no_grad():  # a merged low-rank adapter: every weight moves
        layer.weight += 0.05 * torch.randn(384, 2) @ torch.randn(2, 256)
    after = Int8Linear.from_linear(layer, cache)(X)
    assert cache.misses == 2 and len(entries(tmp_path)) == 2
    torch.testing.assert_close(after, Int8Linear.from_linear(layer)(X), rtol=0, atol=0)
    assert float((after - before).norm() / before.norm()) > 0.05  # the stale entry would have been heard


@pytest.mark.parametrize("damage", ["truncated", "not safetensors", "another layer's shape"])
def test_an_unreadable_entry_is_packed_again_and_rewritten(tmp_path, damage):
    layer = linear()
    reference = Int8Linear.from_linear(layer)(X)
    Int8Linear.from_linear(layer, Int8Cache(tmp_path))
    (entry,) = entries(tmp_path)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "not safetensors":
        entry.write_bytes(b"\0" * 4096)
    else:  # an entry of a 384 x 128 layer under this layer's name
        other = Int8Cache(tmp_path / "other")
        Int8Linear.from_linear(linear(in_features=128), other)
        entries(tmp_path / "other")[0].replace(entry)
    cache = Int8Cache(tmp_path)
    torch.testing.assert_close(Int8Linear.from_linear(layer, cache)(X), reference, rtol=0, atol=0)
    assert cache.misses == 1
    again = Int8Cache(tmp_path)
    Int8Linear.from_linear(layer, again)
    assert again.hits == 1  # rewritten whole


def test_a_folder_that_cannot_be_written_is_warned_about_once_and_packing_goes_on(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    cache = Int8Cache(blocked / "int8")
    layers = [linear(seed) for seed in range(3)]
    with pytest.warns(UserWarning, match="cannot write the int8 weight cache") as caught:
        outputs = [Int8Linear.from_linear(layer, cache)(X) for layer in layers]
    assert len(caught) == 1
    for layer, output in zip(layers, outputs):
        torch.testing.assert_close(output, Int8Linear.from_linear(layer)(X), rtol=0, atol=0)


def test_the_folder_keeps_its_limit_and_drops_the_least_recently_used_first(tmp_path):
    old = Int8Cache(tmp_path)
    for seed in range(3):
        Int8Linear.from_linear(linear(seed), old)
    made = entries(tmp_path)
    size = made[0].stat().st_size
    for age, path in enumerate(sorted(made, key=lambda p: p.stat().st_mtime)):
        os.utime(path, (time.time() - 1000 + age, time.time() - 1000 + age))
    newest = max(made, key=lambda p: p.stat().st_mtime)
    model = nn.Sequential(linear(seed=10), linear(seed=11))  # never run: only packed
    cache = Int8Cache(tmp_path, limit_bytes=3 * size + size // 2)
    int8_inference_copy(model, lambda name: True, cache=cache)  # two new entries, then the trim
    left = entries(tmp_path)
    assert len(left) == 3 and sum(p.stat().st_size for p in left) <= cache.limit_bytes
    assert newest in left  # of the old three, the last used stays
    assert {Int8Cache.key(m.weight, 64) for m in model} <= {p.stem for p in left}  # this process's never go


def test_the_folder_and_the_switch_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SA3_INT8_CACHE", raising=False)
    monkeypatch.setenv("SA3_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine" / "int8"
    monkeypatch.delenv("SA3_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "sa3" / "int8"
    monkeypatch.setenv("SA3_INT8_CACHE", "0")
    assert cache_folder() is None and Int8Cache.default() is None
    monkeypatch.setenv("SA3_INT8_CACHE", "1")
    monkeypatch.setenv("SA3_INT8_CACHE_GB", "0.5")
    assert Int8Cache.default().limit_bytes == 2**29


def test_a_released_backend_packs_its_second_process_from_the_first_ones_entries(monkeypatch, tmp_path):
    from sa3core.pipeline import Pipeline

    monkeypatch.setenv("SA3_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SA3_INT8_CACHE", raising=False)
    takes, caches = [], []
    for _ in range(2):
        pipeline = Pipeline.load(FIXTURES / "small", int8=True)
        takes.append(pipeline.generate("dry kick drum", 44_100, steps=2, seed=0)[0])
        caches.append(pipeline.backend._int8_cache)
        layers = len(int8_layers(pipeline.backend._dit()))
    assert caches[0].misses == layers and caches[0].hits == 0
    assert caches[1].hits == layers and caches[1].misses == 0
    np.testing.assert_array_equal(takes[1], takes[0])
    assert len(entries(tmp_path / "int8")) == layers  # the fixture's SAME is narrower than int8's 512
    monkeypatch.setenv("SA3_INT8_CACHE", "off")
    assert Pipeline.load(FIXTURES / "small", int8=True).backend._int8_cache is None
