"""The official reference fixtures (tests/fixtures/released/) are what their README says they are.

Sanity only: the folders have the released layout, every reference file says how it was made, the
README and the manifest agree on the official commit, and the references can tell right from
wrong (padding semantics, prompts). The parity tests of each part live beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
REFERENCE = FIXTURES / "reference"
DIT_FOLDERS = ("small", "small-base", "medium", "medium-base")
PREFIXES = ("model.model.", "conditioner.conditioners.", "pretransform.model.")
TOLERANCE_MAX, TOLERANCE_CORR = 2e-3, 0.9999


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE / f"{name}.safetensors"))


def reference_meta(name: str) -> dict:
    with safe_open(str(REFERENCE / f"{name}.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["fixture"])


def cross_attention_input(name: str, which: str = "fp32") -> torch.Tensor:
    """The DiT context ``[B, 257, 768]`` of conditioner_<name>: padding embedding everywhere, the
    text encoder's real rows put back, the seconds token appended (as the README describes)."""
    cond = reference(f"conditioner_{name}")
    with safe_open(str(FIXTURES / name / "model.safetensors"), framework="pt") as handle:
        padding = handle.get_tensor("conditioner.conditioners.prompt.padding_embedding").float()
    mask, index = cond["prompt.mask"].bool(), cond["prompt.rows_index"]
    prompt = padding.expand(mask.shape[0], mask.shape[1], -1).clone()
    prompt[index[:, 0], index[:, 1]] = cond[f"prompt.rows.{which}"]
    return torch.cat([prompt, cond["seconds_total.embedding"]], dim=1)


def far_apart(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A parity test at the tolerance (max 2e-3 and correlation 0.9999) tells a from b with room."""
    a, b = a.flatten().double(), b.flatten().double()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    return (a - b).abs().max().item() > 10 * TOLERANCE_MAX or corr < 1 - 10 * (1 - TOLERANCE_CORR)


def test_manifest_and_readme_name_the_same_official_commit():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    commit = manifest["official"]["commit"]
    assert len(commit) == 40
    readme = (FIXTURES / "README.md").read_text()
    assert commit in readme
    assert manifest["versions"]["transformers"] in readme and manifest["versions"]["torch"] in readme


def test_fixture_set_stays_small():
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 6_000_000, f"fixtures are {size / 1e6:.1f} MB; keep them to a few MB"


@pytest.mark.parametrize("folder", DIT_FOLDERS)
def test_checkpoint_folders_have_the_released_layout(folder):
    root = FIXTURES / folder
    config = json.loads((root / "model_config.json").read_text())
    assert config["model_type"] == "diffusion_cond_inpaint"
    prompt = next(c for c in config["model"]["conditioning"]["configs"] if c["id"] == "prompt")
    text = root / prompt["config"]["subfolder"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        assert (text / name).is_file(), f"{folder}: {name} missing (symlinks must resolve)"
    with safe_open(str(root / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith(PREFIXES) for k in keys)
    assert {p for p in PREFIXES if any(k.startswith(p) for k in keys)} == set(PREFIXES)
    objective = config["model"]["diffusion"]["diffusion_objective"]
    assert objective == ("rectified_flow" if folder.endswith("-base") else "rf_denoiser")


def test_text_encoder_file_holds_encoder_and_decoder_in_bf16():
    with safe_open(str(FIXTURES / "small" / "t5gemma-b-b-ul2" / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        dtypes = {handle.get_slice(k).get_dtype() for k in keys}
    assert any(k.startswith("model.encoder.") for k in keys) and any(k.startswith("model.decoder.") for k in keys)
    assert dtypes == {"BF16"}


def test_every_reference_says_how_it_was_made():
    files = sorted(REFERENCE.glob("*.safetensors"))
    assert len(files) >= 15
    for path in files:
        assert reference_meta(path.stem), path.name


def test_tokenizer_reference_pins_padding_sides():
    ids = reference("tokenizer")
    main, right = ids["main.attention_mask"], ids["right.attention_mask"]
    assert torch.equal(main.sum(1), right.sum(1))
    assert main[0, -1] == 1 and main[0, 0] == 0, "main (no padding_side): left padding"
    assert right[0, 0] == 1 and right[0, -1] == 0, "tokenizer-right: right padding"
    assert (ids["right.input_ids"][:, 0] == 2).all(), "every prompt starts with <bos>"
    assert main[3].all(), "the long prompt fills all 256 positions"


def test_padding_semantics_references_differ():
    for name in ("dit_small", "dit_medium"):
        dit = reference(name)
        valid = slice(0, 9)
        assert far_apart(dit["v.local.padding.cpu"][1, :, valid], dit["v.local.padding.trained"][1, :, valid])
        # without padded frames both semantics agree, so item 0 (no padding) matches v.local
        torch.testing.assert_close(dit["v.local.padding.trained"][0], dit["v.local"][0], rtol=1e-5, atol=1e-5)
    batch = reference("generate_small_batch_padding")
    assert (batch["audio.cpu"][0] - batch["audio.trained"][0]).abs().max() > 10 * TOLERANCE_MAX


def test_references_tell_prompts_apart():
    dit = reference("dit_small")
    assert far_apart(dit["v.local_zero"], dit["v.local_zero.no_conditioning"])
    assert far_apart(reference("generate_small_pingpong")["audio"], reference("generate_medium_pingpong")["audio"])


def test_cross_attention_input_rebuilds_the_conditioner_output():
    context = cross_attention_input("small")
    cond = reference("conditioner_small")
    assert context.shape == (2, 257, 768)
    torch.testing.assert_close(context[:, -1], cond["global_cond"])  # the seconds token is also the global condition
    assert not torch.equal(context, cross_attention_input("small", "official"))
