"""LoRA (sa3core.lora) on the released small fixture gives what the official LoRA code gives.

The references in tests/fixtures/released/lora/ were made by the official loader and generate
(scripts/released/make_lora_fixtures.py; README "LoRA"): per adapter type a conditioner + DiT
forward, and whole generate calls with two stacked files of different types and with a file sa3
wrote. Each parity test also shows that a wrong input (a dropped file, the other order, another
strength) misses the reference far beyond the tolerance, so a pass means the right thing was
reproduced. Then: strength 0 is the base model bit for bit, merged equals unmerged to float
rounding, and every bad input is a one-line Sa3Error.

Bit-for-bit claims are made between runs on the machine the test runs on. Against the stored
references they hold only on a CPU whose float32 kernels match the fixtures' maker (MKL and
oneDNN choose kernels by CPU vendor and ISA: on an AMD EPYC the velocities move by up to 5e-4
from the references made on an Intel Xeon), so there the bound is float rounding
(:data:`ROUNDING`), far below what a wrong input moves.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3core.errors import Sa3Error
from sa3core.lora import ADAPTER_TYPES, LoraConfig, LoraStack, parse_spec, read_lora, save_lora
from sa3core.pipeline import Pipeline
from sa3core.released.backend import LORA_PREFIXES
from sa3core.released.checkpoint import load_conditioners, load_dit, open_released

from .test_pipeline_parity import assert_far, assert_parity, compare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"
REFERENCE = LORA / "reference"
MANIFEST = json.loads((LORA / "manifest.json").read_text())
CALL = MANIFEST["generate"]["call"]  # the small_pingpong call
STACK = [(LORA / name, strength) for name, strength in MANIFEST["generate"]["stack"].items()]
FORWARD_STRENGTH = 0.8
# Float rounding between CPUs (and thread counts) on the forward's outputs: the seconds token
# (values about 1; 5e-5 measured on an AMD EPYC) and the velocity (about 10; up to 5e-4 there).
# A wrong strength moves the velocity by more than 0.05.
ROUNDING = {"seconds": {"rtol": 0, "atol": 1e-4}, "v": {"rtol": 0, "atol": 1e-3}}


def assert_rounding(seconds, v, expected_seconds, expected_v) -> None:
    torch.testing.assert_close(seconds, expected_seconds, **ROUNDING["seconds"])
    torch.testing.assert_close(v, expected_v, **ROUNDING["v"])


def parts():
    """A fresh float32 DiT and conditioners of the small fixture (attaching changes them)."""
    folder = open_released(FIXTURES / "small")
    return load_dit(folder).float(), load_conditioners(folder).float()


def attach(files, merge: bool):
    dit, conditioners = parts()
    stack = LoraStack.read(files)
    stack.attach({LORA_PREFIXES["dit"]: dit, LORA_PREFIXES["conditioners"]: conditioners}, merge)
    return dit, conditioners, stack


@pytest.fixture(scope="module")
def forward_reference() -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE / "forward.safetensors"))


def forward(dit, conditioners) -> tuple[torch.Tensor, torch.Tensor]:
    """The seconds token and the DiT velocity on the dit_small inputs, as the reference was made."""
    dit_in = load_file(str(FIXTURES / "reference" / "dit_small.safetensors"))
    cond = load_file(str(FIXTURES / "reference" / "conditioner_small.safetensors"))
    padding = load_file(str(FIXTURES / "small" / "model.safetensors"))[
        "conditioner.conditioners.prompt.padding_embedding"
    ]
    mask, index = cond["prompt.mask"].bool(), cond["prompt.rows_index"]
    prompt = padding.float().expand(mask.shape[0], mask.shape[1], -1).clone()
    prompt[index[:, 0], index[:, 1]] = cond["prompt.rows.fp32"]
    with torch.no_grad():
        seconds = conditioners["seconds_total"](torch.tensor([0.1, 37.5]))  # (2, 1, 768)
        condition = dit.encode_condition(torch.cat([prompt, seconds], dim=1), seconds[:, 0])
        return seconds, dit(dit_in["x"], dit_in["t"], condition, dit_in["local_add_cond"])


def generate(pipeline: Pipeline) -> np.ndarray:
    return pipeline.generate(CALL["prompt"], int(CALL["duration"] * 44_100), steps=CALL["steps"], seed=CALL["seed"])


def official(name: str) -> np.ndarray:
    return load_file(str(REFERENCE / f"generate_{name}.safetensors"))["audio"].numpy()


# ----------------------------------------------------------------------------- each type
def test_the_forward_inputs_rebuild_the_official_base(forward_reference):
    seconds, v = forward(*parts())
    assert_rounding(seconds, v, forward_reference["base.seconds_total.embedding"], forward_reference["base.v"])


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
@pytest.mark.parametrize("kind", list(ADAPTER_TYPES))
def test_each_adapter_type_gives_the_official_forward(kind, merge, forward_reference):
    """Merged weights are the official parametrization's (bit for bit on the fixtures' CPU and 2
    threads; the -xs types' SVD bases and the kernels of another CPU move the last bits), the
    unmerged path to float rounding: within :data:`ROUNDING`."""
    dit, conditioners, _ = attach([(LORA / f"{kind}.safetensors", FORWARD_STRENGTH)], merge)
    seconds, v = forward(dit, conditioners)
    expected_seconds = forward_reference[f"{kind}.seconds_total.embedding"]
    expected_v = forward_reference[f"{kind}.v"]
    assert_rounding(seconds, v, expected_seconds, expected_v)
    base = forward_reference["base.v"]
    assert (v - base).abs().max() > 1.0  # the adapter shows (the reference is far from the base)


@pytest.mark.parametrize("kind", list(ADAPTER_TYPES))
def test_another_strength_misses_the_forward(kind, forward_reference):
    dit, conditioners, _ = attach([(LORA / f"{kind}.safetensors", 1.0)], merge=True)
    _, v = forward(dit, conditioners)
    assert (v - forward_reference[f"{kind}.v"]).abs().max() > 0.05


@pytest.fixture(scope="module")
def base_forward() -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's seconds token and velocity as this machine computes them."""
    return forward(*parts())


def test_strength_zero_is_the_base_model_bit_for_bit(base_forward):
    every = [(LORA / f"{kind}.safetensors", 0.0) for kind in ADAPTER_TYPES]
    for merge in (True, False):
        dit, conditioners, _ = attach(every, merge)
        seconds, v = forward(dit, conditioners)
        assert torch.equal(v, base_forward[1])
        assert torch.equal(seconds, base_forward[0])


def test_merged_equals_unmerged_for_a_stack_of_every_type():
    every = [(LORA / f"{kind}.safetensors", s) for kind, s in zip(ADAPTER_TYPES, (0.7, -0.4, 1.2, 0.9, 1, -1, 2, 0.5))]
    merged = forward(*attach(every, merge=True)[:2])
    unmerged = forward(*attach(every, merge=False)[:2])
    for a, b in zip(merged, unmerged):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_unmerged_strengths_change_per_request_and_come_back(forward_reference, base_forward):
    dit, conditioners, stack = attach([(LORA / "bora.safetensors", 0.3)], merge=False)
    with stack.using([FORWARD_STRENGTH]):
        _, v = forward(dit, conditioners)
        torch.testing.assert_close(v, forward_reference["bora.v"], **ROUNDING["v"])
    with stack.using([0.0]):
        assert torch.equal(forward(dit, conditioners)[1], base_forward[1])
    assert stack.strengths == (0.3,)
    stack.detach()
    assert torch.equal(forward(dit, conditioners)[1], base_forward[1])


# ----------------------------------------------------------------------------- whole calls
@pytest.fixture(scope="module")
def stacked():
    return {
        merge: Pipeline.load(FIXTURES / "small", bf16=False, loras=STACK, merge_loras=merge) for merge in (True, False)
    }


def test_stacked_files_give_the_official_audio(stacked):
    reference = official("stack")
    merged, unmerged = generate(stacked[True]), generate(stacked[False])
    assert_parity(merged, reference)
    assert_parity(unmerged, reference)
    assert np.abs(merged - unmerged).max() < 1e-4  # the same model to float rounding


@pytest.mark.parametrize(
    "strengths", [(0.0, 1.0), (0.7, 0.0), (1.0, 1.0)], ids=["first dropped", "second dropped", "first at 1"]
)
def test_a_wrong_stack_misses_the_official_audio(stacked, strengths):
    with stacked[False].lora_strengths(strengths):
        assert_far(generate(stacked[False]), official("stack"))


def test_the_order_of_the_files_counts():
    reversed_stack = Pipeline.load(FIXTURES / "small", bf16=False, loras=STACK[::-1])
    assert_far(generate(reversed_stack), official("stack"))


def test_strength_zero_generates_the_base_audio_bit_for_bit(stacked):
    base = generate(Pipeline.load(FIXTURES / "small", bf16=False))
    with stacked[False].lora_strengths([0.0, 0.0]):
        assert np.array_equal(generate(stacked[False]), base)
    merged_at_zero = Pipeline.load(FIXTURES / "small", bf16=False, loras=[(p, 0.0) for p, _ in STACK])
    assert np.array_equal(generate(merged_at_zero), base)


def test_the_bf16_dit_copy_carries_the_adapters_and_their_strengths():
    """sa3's default bf16 DiT is a copy made after the adapters are attached; kept apart, the
    per-request strengths reach it (0 gives the bf16 base bit for bit), and so does dropping them."""
    pipeline = Pipeline.load(FIXTURES / "small", bf16=True, loras=STACK, merge_loras=False)
    diff, corr = compare(generate(pipeline), official("stack"))
    assert corr > 0.999 and diff < 0.05, (diff, corr)  # bf16 matmuls: 0.022 max, corr 0.9997 here
    base = generate(Pipeline.load(FIXTURES / "small", bf16=True))
    with pipeline.lora_strengths([0.0, 0.0]):
        assert np.array_equal(generate(pipeline), base)
    pipeline.drop_loras()  # the bf16 copy made with the adapters runs plain again
    assert np.array_equal(generate(pipeline), base)


def test_a_file_sa3_wrote_gives_the_official_audio():
    """The official loader took sa3-written.safetensors (checked tensor for tensor when the fixture
    was made); sa3 reads it back to the same audio."""
    strength = MANIFEST["generate"]["sa3_written"]["sa3-written.safetensors"]
    pipeline = Pipeline.load(FIXTURES / "small", bf16=False, loras=[(LORA / "sa3-written.safetensors", strength)])
    assert_parity(generate(pipeline), official("sa3_written"))


def test_merged_strengths_are_fixed_and_recipes_name_the_files(stacked):
    with pytest.raises(Sa3Error, match="merge_loras=False"):
        with stacked[True].lora_strengths([1.0, 1.0]):
            pass
    with stacked[True].lora_strengths([0.7, 1.0]):  # the merged ones: nothing changes
        pass
    with stacked[False].lora_strengths([0.5, 1.0]):
        loras = stacked[False].recipe("x")["loras"]
    assert [(e["file"], e["adapter_type"], e["strength"]) for e in loras] == [
        ("dora-rows.safetensors", "dora-rows", 0.5),
        ("lora-xs.safetensors", "lora-xs", 1.0),
    ]
    assert loras[0]["sha256"] == read_lora(STACK[0][0]).sha256
    assert "loras" not in Pipeline(stacked[True].backend, stacked[True].settings, stacked[True].family).recipe("x")


# ----------------------------------------------------------------------------- any Conv1d, from the spec
def spec_weight(weight: torch.Tensor, kind: str, strength: float, scaling: float, tensors: dict) -> torch.Tensor:
    """docs/lora.md's table, written out independently of sa3core (float64)."""
    w = weight.reshape(weight.shape[0], -1).double()
    t = {k: v.double() for k, v in tensors.items()}
    if kind.endswith("-xs"):
        u, _, vh = torch.linalg.svd(w, full_matrices=False)
        for j in range(u.shape[1]):  # each U column's largest-magnitude entry positive
            if u[u[:, j].abs().argmax(), j] < 0:
                u[:, j], vh[j] = -u[:, j], -vh[j]
        r = t["M_xs"].shape[0]
        delta = u[:, :r] @ t["M_xs"] @ vh[:r]
    else:
        delta = t["lora_B"] @ t["lora_A"]
    v = w + scaling * strength * delta
    rows = {"dora-rows": "magnitude", "bora": "magnitude_r"}.get(kind.removesuffix("-xs"))
    cols = {"dora-cols": "magnitude", "bora": "magnitude_c"}.get(kind.removesuffix("-xs"))
    if rows:
        v = v / v.norm(dim=1, keepdim=True) * t[rows][:, None]
    if cols:
        v = v / v.norm(dim=0, keepdim=True) * t[cols][None, :]
    return v.reshape(weight.shape).float()


@pytest.mark.parametrize("kind", list(ADAPTER_TYPES))
def test_any_conv1d_follows_the_spec_merged_and_kept_apart(kind, tmp_path):
    """A kernel-3 Conv1d (kept apart: its adapted weight per setting) and a 1x1 one (kept apart:
    the low-rank path), against the formulas of docs/lora.md."""
    gen = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 3, padding=1), torch.nn.Conv1d(6, 5, 1)).eval()
    config = LoraConfig(2, 3.0, kind)
    layers = {}
    for name, module in (("net.0", net[0]), ("net.1", net[1])):
        out_features, in_features = module.weight.shape[0], module.weight[0].numel()
        shapes = {"lora_A": (2, in_features), "lora_B": (out_features, 2), "M_xs": (2, 2),
                  config.kind.row: (out_features,), config.kind.col: (in_features,)}  # fmt: skip
        layers[name] = {p: torch.rand(shapes[p], generator=gen) + 0.5 for p in config.kind.params}
    lora = read_lora(save_lora(tmp_path / "conv.safetensors", layers, config))  # float16 values, as used
    x = torch.randn(2, 4, 9, generator=gen)
    expected = net[1]._conv_forward(
        net[0]._conv_forward(x, spec_weight(net[0].weight, kind, -0.6, 1.5, lora.layers["net.0"]), net[0].bias),
        spec_weight(net[1].weight, kind, -0.6, 1.5, lora.layers["net.1"]),
        net[1].bias,
    )
    plain = net(x)
    for merge in (True, False):
        copy = torch.nn.Sequential(*[torch.nn.Conv1d(4, 6, 3, padding=1), torch.nn.Conv1d(6, 5, 1)])
        copy.load_state_dict(net.state_dict())
        stack = LoraStack.read([(tmp_path / "conv.safetensors", -0.6)])
        stack.attach({"net.": copy}, merge)
        with torch.no_grad():
            # -xs bases come from an SVD whose last bits follow the CPU's LAPACK kernels: up to
            # 1.3e-5 on outputs of about 1 measured on an AMD EPYC
            torch.testing.assert_close(copy(x), expected, rtol=1e-4, atol=5e-5)
            if not merge:
                with stack.using([0.0]):
                    assert torch.equal(copy(x), plain)


# ----------------------------------------------------------------------------- the file
@pytest.mark.parametrize("kind", list(ADAPTER_TYPES))
def test_sa3_writes_what_it_reads(kind, tmp_path):
    lora = read_lora(LORA / f"{kind}.safetensors")
    again = read_lora(save_lora(tmp_path / "again.safetensors", lora.layers, lora.config))
    assert again.config == lora.config
    assert again.layers.keys() == lora.layers.keys()
    for layer, params in lora.layers.items():
        assert all(torch.equal(params[p], again.layers[layer][p]) for p in params)  # float16 values round-trip
    assert load_file(str(LORA / f"{kind}.safetensors")).keys() == load_file(str(tmp_path / "again.safetensors")).keys()


def test_include_ranges_expand_as_the_official_filters():
    config = read_lora(LORA / "dora-cols.safetensors").config
    assert config.include == ("transformer.layers.[0-1].cross_attn", "seconds_total", "postprocess_conv")
    assert config.selects("model.transformer.layers.1.cross_attn.to_kv")
    assert not config.selects("model.transformer.layers.1.self_attn.to_qkv")
    descending = read_lora(LORA / "bora-xs.safetensors").config  # exclude layers.[1-0].self_attn.to_out
    assert not descending.selects("model.transformer.layers.0.self_attn.to_out")


def test_keys_a_file_leaves_out_take_the_official_loaders_values(tmp_path):
    """Legacy files: no rank (from the tensors), no alpha (= rank), type "dora" with 2-D magnitudes
    ((1, in): columns; (out, 1): rows), squeezed to what the current types hold."""
    for source, shape, kind in [
        ("dora-cols", lambda m: m[None], "dora-cols"),
        ("dora-rows", lambda m: m[:, None], "dora-rows"),
    ]:
        tensors = load_file(str(LORA / f"{source}.safetensors"))
        legacy = {k: shape(v) if k.endswith("magnitude") else v for k, v in tensors.items()}
        lora = read_lora(write_lora(tmp_path / f"{source}.safetensors", legacy, {"adapter_type": "dora"}))
        assert (lora.config.adapter_type, lora.config.rank, lora.config.alpha) == (kind, 2, 2)
        original = read_lora(LORA / f"{source}.safetensors")
        assert all(torch.equal(original.layers[n]["magnitude"], lora.layers[n]["magnitude"]) for n in lora.layers)
    assert read_lora(
        write_lora(tmp_path / "plain.safetensors", load_file(str(LORA / "lora.safetensors")), {})
    ).config == (LoraConfig(2, 2, "lora"))


# ----------------------------------------------------------------------------- bad input
def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def write_lora(path: Path, tensors: dict, config: dict | None) -> Path:
    metadata = None if config is None else {"lora_config": json.dumps(config)}
    save_file({k: v.clone() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_not_a_lora_file(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file at all")
    for path, says in [
        (FIXTURES / "small" / "model.safetensors", "not a LoRA file: it holds"),
        (text, r"not a LoRA file \(not safetensors"),
        (write_lora(tmp_path / "bare.safetensors", load_file(str(LORA / "lora.safetensors")), None), "no lora_config"),
        (tmp_path / "missing.safetensors", "no LoRA file"),
    ]:
        with pytest.raises(Sa3Error, match=says) as excinfo:
            read_lora(path)
        one_line(excinfo)


def test_a_lora_for_another_base_names_the_layer(tmp_path):
    medium = open_released(FIXTURES / "medium")
    roots = {"model.": load_dit(medium).float(), "conditioners.": load_conditioners(medium).float()}
    with pytest.raises(
        Sa3Error, match=r"model\.transformer\.layers\.0\.self_attn\.to_qkv\.lora_B has shape"
    ) as excinfo:
        LoraStack.read([LORA / "lora.safetensors"]).attach(roots)
    assert "another base model" in one_line(excinfo)
    tensors = load_file(str(LORA / "lora-xs.safetensors"))
    extra = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items() if "layers.1." in k}
    path = write_lora(
        tmp_path / "deeper.safetensors", tensors | extra, {"rank": 4, "alpha": 4, "adapter_type": "lora-xs"}
    )
    with pytest.raises(
        Sa3Error, match=r"adapts model\.transformer\.layers\.7\.\S+, which this model has not"
    ) as excinfo:
        attach([path], merge=True)
    one_line(excinfo)
    fewer = {k: v for k, v in tensors.items() if "layers.1." not in k}
    path = write_lora(tmp_path / "fewer.safetensors", fewer, {"rank": 4, "alpha": 4, "adapter_type": "lora-xs"})
    with pytest.raises(Sa3Error, match=r"lacks model\.transformer\.layers\.1\.") as excinfo:
        attach([path], merge=True)
    one_line(excinfo)


@pytest.mark.parametrize("strength", [2.5, -2.01, float("nan"), "1", True])
def test_strength_outside_its_range(strength, stacked):
    with pytest.raises(Sa3Error, match="strength") as excinfo:
        LoraStack.read([(LORA / "lora.safetensors", strength)])
    one_line(excinfo)
    with pytest.raises(Sa3Error, match="strength") as excinfo:
        with stacked[False].lora_strengths([strength, 1.0]):
            pass
    one_line(excinfo)


def test_strength_count_and_spec():
    assert parse_spec("style.safetensors:0.7") == (Path("style.safetensors"), 0.7)
    assert parse_spec("C:\\loras\\style.safetensors") == (Path("C:\\loras\\style.safetensors"), 1.0)
    with pytest.raises(Sa3Error, match="outside"):
        parse_spec("style.safetensors:3")
    stack = LoraStack.read(STACK)
    with pytest.raises(Sa3Error, match="3 LoRA strengths given for 2"):
        with stack.using([1, 1, 1]):
            pass


def test_unknown_adapter_type(tmp_path):
    tensors = load_file(str(LORA / "lora.safetensors"))
    path = write_lora(tmp_path / "lokr.safetensors", tensors, {"rank": 2, "alpha": 4, "adapter_type": "lokr"})
    with pytest.raises(Sa3Error, match="adapter type 'lokr' is unknown") as excinfo:
        read_lora(path)
    one_line(excinfo)
    wrong = write_lora(tmp_path / "wrong.safetensors", tensors, {"rank": 2, "alpha": 4, "adapter_type": "dora-rows"})
    with pytest.raises(Sa3Error, match="lacks magnitude, which a dora-rows adapter needs"):
        read_lora(wrong)
    extra = write_lora(tmp_path / "extra.safetensors", tensors, {"rank": 2, "adapter_type": "lora", "lr": 1e-4})
    with pytest.raises(Sa3Error, match="lora_config has 'lr'"):
        read_lora(extra)


class _Trap:
    """Unpickling this creates a file: the proof that nothing was unpickled is that it is absent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["style.ckpt", "style.safetensors"])
def test_a_pickled_lora_is_refused_unopened(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"state_dict": _Trap(marker), "lora_config": {}}, protocol=4))
    with pytest.raises(Sa3Error, match="pickled") as excinfo:
        read_lora(path)
    assert "convert_lora_ckpt_to_safetensors" in one_line(excinfo)
    assert not marker.exists()
    zipped = tmp_path / "style.pt"
    torch.save({"state_dict": {}}, zipped)
    with pytest.raises(Sa3Error, match="pickled"):
        read_lora(zipped)


def test_save_refuses_what_the_official_loader_would_unpickle(tmp_path):
    lora = read_lora(LORA / "lora.safetensors")
    with pytest.raises(Sa3Error, match=r"must end in \.safetensors"):
        save_lora(tmp_path / "style.ckpt", lora.layers, lora.config)
    with pytest.raises(Sa3Error, match="unknown"):
        save_lora(tmp_path / "x.safetensors", lora.layers, LoraConfig(2, 4, "lokr"))


def test_a_family_without_lora_says_so():
    pipeline = Pipeline.random("tiny", seed=0, text_encoder="hash")
    with pytest.raises(Sa3Error, match="takes no LoRA") as excinfo:
        pipeline.use_loras([LORA / "lora.safetensors"])
    one_line(excinfo)
