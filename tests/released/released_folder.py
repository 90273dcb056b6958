"""Small released-layout checkpoints with random weights, for the tests of sa3core.released.

The dicts follow the layout of the published ``model_config.json`` files (released-format notes);
the widths are small so every test runs in well under a second. Every parameter is drawn at
random (none left at the official zero init), so each one visibly moves the DiT's output.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def dit_config(embed_dim: int = 128, depth: int = 2, num_heads: int = 2, differential: bool = False, memory: int = 4):
    """``model.diffusion.config`` as the released files write it (small widths)."""
    attn = {"qk_norm": "rms", "differential": True} if differential else {"qk_norm": "rms"}
    return {
        "io_channels": 256,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "cond_token_dim": 768,
        "global_cond_dim": 768,
        "local_add_cond_dim": 257,
        "global_cond_type": "adaLN",
        "timestep_features_type": "expo",
        "norm_type": "rms_norm",
        "norm_kwargs": {"force_fp32": True},
        "ff_kwargs": {"mult": 4},
        "num_memory_tokens": memory,
        "attn_kwargs": attn,
    }


def autoencoder_config() -> dict:
    """A small SAME-S-like autoencoder dict (the SAME engineer's config checks it)."""
    coder = {"channels": 16, "c_mults": [4], "strides": [16], "transformer_depths": [1], "latent_dim": 256,
             "dim_heads": 64, "chunk_size": 32, "chunk_midpoint_shift": True, "variable_stride": True}  # fmt: skip
    return {
        "encoder": {"type": "same", "config": {**coder, "in_channels": 512}},
        "decoder": {
            "type": "same",
            "config": {**coder, "out_channels": 512, "conv_mapping": True, "sinusoidal_blocks": [0]},
        },
        "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 256}},
        "bottleneck": {"type": "softnorm", "config": {"dim": 256, "noise_regularize": True}},
        "latent_dim": 256,
        "downsampling_ratio": 4096,
        "io_channels": 2,
    }


def model_config(**dit_kwargs) -> dict:
    """A whole ``model_config.json`` of a (small) post-trained DiT repo."""
    return {
        "model_type": "diffusion_cond_inpaint",
        "sample_rate": 44100,
        "sample_size": 5292032,
        "model": {
            "io_channels": 256,
            "conditioning": {
                "cond_dim": 768,
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {
                            "max_length": 256,
                            "padding_mode": "learned",
                            "repo_id": "stabilityai/stable-audio-3-small-music",
                            "subfolder": "t5gemma-b-b-ul2",
                        },
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"},
                    },
                ],
            },  # fmt: skip
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rf_denoiser",
                "config": dit_config(**dit_kwargs),
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "distribution_shift_options": {"min_length": 256, "max_length": 4096},
                "sampling_distribution_shift_options": None,
                "mask_padding_attention": True,
                "use_effective_length_for_schedule": True,
            },
            "pretransform": {"type": "autoencoder", "chunked": True, "config": autoencoder_config()},
        },
    }


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Draw every parameter: weights ~ N(0, 1/fan_in), norms' gammas around 1, vectors N(0, 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return module


def random_parts(config_dict: dict, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random DiT and conditioner state dicts (no prefixes) for ``config_dict``."""
    from sa3core.released.conditioners import build_conditioners
    from sa3core.released.config import ReleasedConfig
    from sa3core.released.dit import ReleasedDiT

    config = ReleasedConfig.from_dict(config_dict)
    dit = randomize(ReleasedDiT(config.model.diffusion.config), seed)
    conditioners = randomize(build_conditioners(config.model.conditioning), seed + 1)
    # A stand-in for the SAME weights: this reader only routes them (the SAME loader checks them).
    autoencoder = {"bottleneck.running_std": torch.ones(1, 256, 1)}
    return {"dit": dit.state_dict(), "conditioners": conditioners.state_dict(), "autoencoder": autoencoder}


def write_folder(path: Path, config_dict: dict | None = None, seed: int = 0, text_encoder: bool = True) -> Path:
    """A released-layout folder: model_config.json, model.safetensors (+ the text-encoder folder's files)."""
    config_dict = copy.deepcopy(config_dict or model_config())
    parts = random_parts(config_dict, seed)
    prefixes = {
        "dit": "model.model.",
        "conditioners": "conditioner.conditioners.",
        "autoencoder": "pretransform.model.",
    }
    tensors = {prefixes[part] + key: t.contiguous() for part, state in parts.items() for key, t in state.items()}
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_config.json").write_text(json.dumps(config_dict, indent=4))
    save_file(tensors, str(path / "model.safetensors"))
    if text_encoder:  # only presence is checked here; sa3core.released.text reads them
        folder = path / "t5gemma-b-b-ul2"
        folder.mkdir(exist_ok=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / name).write_text("{}")
    return path
