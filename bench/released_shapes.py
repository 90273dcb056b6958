"""Random-weight checkpoints of the released shapes, in the released layout, for benchmarks.

``python -m bench.released_shapes small|medium FOLDER`` writes ``model_config.json``,
``model.safetensors`` (float32, as released) and ``t5gemma-b-b-ul2/`` with the shapes of the
released Stable Audio 3 small (DiT 1024 wide, 20 blocks, 16 heads + SAME-S) or medium (1536,
24, 24 heads, differential attention + SAME-L), and a text encoder of the real T5Gemma b-b
shapes (12 layers, width 768, vocabulary 256,000). Nothing is downloaded: the structure of the
config is the parity fixture's (tests/fixtures/released/), its sizes are set to the released
values of ../shared/released-format.md, and the tokenizer files are the fixture's (their ids
all lie inside the large vocabulary).

The weights are random (seeded), scaled so activations stay finite and of ordinary size; they
make no sound worth hearing, but every matmul, attention and memory map has the released shape,
which is what speed and memory depend on. Both sa3 and the official implementation load these
folders (bench/versus_official.py runs one against the other on the same folder).

A folder already holding a complete checkpoint of the same size is reused (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import common

FIXTURES = common.REPO / "tests" / "fixtures" / "released"
TEXT_FOLDER = "t5gemma-b-b-ul2"
MARKER = "sa3-random-shapes.json"
LATENT = 256

# The released DiT sizes (released-format.md: "DiT config").
DIT = {
    "small": {"embed_dim": 1024, "depth": 20, "num_heads": 16},
    "medium": {"embed_dim": 1536, "depth": 24, "num_heads": 24},
}
# The released autoencoders: channels x c_mults[0] = width; blocks.
SAME = {
    "small": {"channels": 128, "depth": 6, "sinusoidal_blocks": None},  # SAME-S: width 768
    "medium": {"channels": 256, "depth": 12, "sinusoidal_blocks": [8]},  # SAME-L: width 1536
}
# T5Gemma b-b-ul2, encoder and decoder as the released text folder stores them.
T5GEMMA = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "query_pre_attn_scalar": 64,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": 256000,
    "max_position_embeddings": 8192,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "model_type": "t5_gemma_module",
}


def released_config(size: str) -> dict:
    """The fixture's model_config.json of that size with the released sizes put in."""
    fixture = "medium" if size == "medium" else "small"
    config = json.loads((FIXTURES / fixture / "model_config.json").read_text())
    model = config["model"]
    model["io_channels"] = LATENT
    dit = model["diffusion"]["config"]
    dit.update(DIT[size], io_channels=LATENT, local_add_cond_dim=LATENT + 1, ff_kwargs={"mult": 4})
    auto = model["pretransform"]["config"]
    auto["latent_dim"] = LATENT
    auto["bottleneck"]["config"]["dim"] = LATENT
    same = SAME[size]
    for part in ("encoder", "decoder"):
        coder = auto[part]["config"]
        coder.update(channels=same["channels"], c_mults=[6], latent_dim=LATENT, transformer_depths=[same["depth"]])
        coder["dim_heads"] = 64
    if same["sinusoidal_blocks"] is not None:
        auto["decoder"]["config"]["sinusoidal_blocks"] = same["sinusoidal_blocks"]
    return config


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded values for every parameter and buffer: matrices ~ N(0, 1/fan_in), scales ~ 1,
    offsets and learned tokens ~ N(0, 0.02); RoPE frequencies and running statistics as built."""
    state = {}
    for key, value in module.state_dict().items():
        name = key.rsplit(".", 1)[-1]
        if name in ("inv_freq", "running_std") or value.numel() == 0:
            state[key] = value.detach().clone().float()
        elif value.ndim >= 2 and name not in ("memory_tokens", "new_tokens", "scaling_factor", "bias"):
            fan_in = math.prod(value.shape[1:])
            state[key] = torch.randn(value.shape, generator=generator) / math.sqrt(fan_in)
        elif name in ("gamma", "weight", "alpha", "weight_g", "scaling_factor"):
            state[key] = 1.0 + 0.02 * torch.randn(value.shape, generator=generator)
        else:
            state[key] = 0.02 * torch.randn(value.shape, generator=generator)
    return state


def build_text_encoder(folder: Path, seed: int = 0) -> None:
    """Random bf16 T5Gemma of the real shapes, keys as the released file (model.encoder/decoder.*)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = FIXTURES / "small" / TEXT_FOLDER
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        shutil.copy(source / name, folder / name)
    config = json.loads((source / "config.json").read_text())
    config["encoder"] = dict(T5GEMMA)
    config["decoder"] = {**T5GEMMA, "is_decoder": True, "cross_attention_hidden_size": 768}
    config["vocab_size"] = T5GEMMA["vocab_size"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(seed)
    width, inner, heads = T5GEMMA["hidden_size"], T5GEMMA["intermediate_size"], T5GEMMA["num_attention_heads"] * 64
    state = {}

    def add(name: str, *shape: int) -> None:
        std = 0.02 if len(shape) == 1 or name.endswith("embed_tokens.weight") else 1 / math.sqrt(shape[-1])
        state[name] = (torch.randn(shape, generator=generator) * std).to(torch.bfloat16)

    for half in ("encoder", "decoder"):
        add(f"model.{half}.embed_tokens.weight", T5GEMMA["vocab_size"], width)
        add(f"model.{half}.norm.weight", width)
        for i in range(T5GEMMA["num_hidden_layers"]):
            p = f"model.{half}.layers.{i}."
            for attn in ("self_attn", "cross_attn") if half == "decoder" else ("self_attn",):
                for proj, shape in (("q", (heads, width)), ("k", (heads, width)), ("v", (heads, width))):
                    add(p + f"{attn}.{proj}_proj.weight", *shape)
                add(p + f"{attn}.o_proj.weight", width, heads)
            add(p + "mlp.gate_proj.weight", inner, width)
            add(p + "mlp.up_proj.weight", inner, width)
            add(p + "mlp.down_proj.weight", width, inner)
            norms = ["pre_self_attn", "post_self_attn", "pre_feedforward", "post_feedforward"]
            if half == "decoder":
                norms += ["pre_cross_attn", "post_cross_attn"]
            for norm in norms:
                add(p + f"{norm}_layernorm.weight", width)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def build(size: str, folder: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write (or reuse) a random checkpoint of the released ``size`` at ``folder``; returns it."""
    from sa3core.released.conditioners import build_conditioners
    from sa3core.released.config import ReleasedConfig
    from sa3core.released.dit import ReleasedDiT
    from sa3core.released.same import ReleasedAutoencoder

    if size not in DIT:
        raise SystemExit(f"size {size!r}: use one of {', '.join(DIT)}")
    folder = Path(folder)
    spec = {"size": size, "seed": seed, "format": 1}
    marker = folder / MARKER
    if not force and marker.is_file() and json.loads(marker.read_text()) == spec:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config_data = released_config(size)
    config = ReleasedConfig.from_dict(config_data, where=f"{size} (released shapes)")
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    parts = (
        ("model.model.", lambda: ReleasedDiT(config.model.diffusion.config)),
        ("conditioner.conditioners.", lambda: build_conditioners(config.model.conditioning)),
        ("pretransform.model.", lambda: ReleasedAutoencoder(config.autoencoder)),
    )
    for prefix, make in parts:
        module = make()  # on the CPU, so buffers computed at construction (RoPE) are real
        state.update({prefix + k: v.contiguous() for k, v in _randomise(module, generator).items()})
        del module
    bottleneck = "pretransform.model.bottleneck."
    state[bottleneck + "noise_scaling_factor"] = torch.zeros(1, 0, 1)  # the official state_dict has it, empty
    (folder / "model_config.json").write_text(json.dumps(config_data, indent=2))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    build_text_encoder(folder / TEXT_FOLDER, seed=seed + 1)
    marker.write_text(json.dumps(spec))
    return folder


def base_variant(folder: str | Path) -> Path:
    """The ``-base`` form of a checkpoint :func:`build` wrote: a sibling folder whose config says
    ``rectified_flow`` (the pre-trained objective, what LoRA training starts from) and whose weights
    and text encoder are links to the original's, as the fixtures' ``small-base`` does."""
    folder = Path(folder)
    base = folder.with_name(folder.name + "-base")
    config = json.loads((folder / "model_config.json").read_text())
    config["model"]["diffusion"]["diffusion_objective"] = "rectified_flow"
    base.mkdir(exist_ok=True)
    (base / "model_config.json").write_text(json.dumps(config, indent=2))
    for name in ("model.safetensors", TEXT_FOLDER):
        link = base / name
        if not link.is_symlink():
            link.symlink_to(Path("..") / folder.name / name)
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.released_shapes", description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=sorted(DIT))
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder holds this checkpoint")
    args = parser.parse_args(argv)
    folder = build(args.size, args.folder, args.seed, args.force)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: released {args.size} shapes, random weights, {size / 2**30:.2f} GiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
