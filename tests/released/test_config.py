"""model_config.json as typed dataclasses: the released layout parses and is honoured; unknown
keys and types, unsupported values, wrong types and missing keys are one-line errors naming them."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from sa3core.errors import Sa3Error
from sa3core.released import config as released_config
from sa3core.released.config import ReleasedConfig, ReleasedDiTConfig

from .released_folder import autoencoder_config, model_config


def test_a_released_dit_config_is_read_and_honoured():
    config = ReleasedConfig.from_dict(model_config(embed_dim=1536, depth=24, num_heads=24, differential=True))
    assert config.is_dit and config.sample_size == 5292032
    dit = config.model.diffusion.config
    assert (dit.embed_dim, dit.depth, dit.num_heads, dit.head_dim, dit.rotary_dims) == (1536, 24, 24, 64, 32)
    assert dit.attn_kwargs.differential and dit.norm_kwargs.force_fp32 and dit.ff_inner == 6144
    assert (dit.norm_kwargs.eps, dit.attn_kwargs.qk_norm_eps) == (1e-5, 1e-6)  # official defaults, not in the file
    diffusion = config.model.diffusion
    assert diffusion.diffusion_objective == "rf_denoiser" and diffusion.mask_padding_attention
    assert diffusion.cross_attention_cond_ids == ("prompt", "seconds_total")
    assert diffusion.global_cond_ids == ("seconds_total",)
    prompt, seconds = config.model.conditioning.configs
    assert (prompt.config.padding_mode, prompt.config.max_length, prompt.config.subfolder) == (
        "learned",
        256,
        "t5gemma-b-b-ul2",
    )
    assert (seconds.config.min_val, seconds.config.max_val, seconds.output_dim) == (0.0, 384.0, 768)
    assert config.model.pretransform.chunked and config.autoencoder.latent_dim == 256


def test_an_autoencoder_repo_config_is_read():
    config = ReleasedConfig.from_dict(
        {"model_type": "autoencoder", "sample_rate": 44100, "model": autoencoder_config()}
    )
    assert not config.is_dit and config.autoencoder is config.model and config.model.downsampling_ratio == 4096


def edit(path: str, value, delete: bool = False) -> dict:
    """The test config with ``path`` (dots; [i] for list items) set to ``value`` or deleted."""
    data = copy.deepcopy(model_config())
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if delete:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


BAD = [
    ("new_feature", 1, False, "unknown key 'new_feature' in model_config.json"),
    ("model.diffusion.config.attn_kwargs.flash", True, False, "unknown key 'flash' in model_config.json: model.diffusion.config.attn_kwargs"),
    ("model.conditioning.configs.0.type", "clap", False, "model.conditioning.configs[0].type: unknown type 'clap'"),
    ("model.conditioning.configs.1.config.bins", 3, False, "unknown key 'bins'"),
    ("model_type", "diffusion_uncond", False, "unknown model_type 'diffusion_uncond'"),
    ("model.diffusion.type", "unet", False, "model.diffusion.type 'unet' is unknown"),
    ("model.pretransform.type", "vae", False, "model.pretransform.type 'vae' is unknown"),
    ("model.pretransform.config.encoder.config.windowing", 1, False, "unknown key 'windowing'"),
    ("model.diffusion.config.patch_size", 2, False, "model.diffusion.config.patch_size = 2 is not supported"),
    ("model.diffusion.config.norm_type", None, True, "norm_type = 'layer_norm' is not supported"),  # official default
    ("model.diffusion.config.depth", "20", False, "model.diffusion.config.depth must be a whole number, got '20'"),
    ("model.conditioning.cond_dim", None, True, "model.conditioning is missing the key 'cond_dim'"),
    ("model.diffusion.sampling_distribution_shift_options", {"type": "logsnr"}, False, "sampling_distribution_shift_options is not supported"),
    ("model.diffusion.global_cond_ids", ["prompt", "seconds_total"], False, "do not add up to global_cond_dim 768"),
    ("model.diffusion.config.local_add_cond_dim", 64, False, "local_add_cond_dim is 64 but local_add_cond_ids imply 257"),
    ("model.diffusion.diffusion_objective", "v", False, "diffusion_objective 'v' is not supported"),
    ("model.diffusion.cross_attention_cond_ids", ["prompt", "lyrics"], False, "no conditioner 'lyrics'"),
    ("model.conditioning.configs.0.config.padding_mode", "mean", False, "padding_mode 'mean' is unknown"),
    ("model.conditioning.configs.1.config.fourier_features_type", "learned", False, "fourier_features_type 'learned' is not supported"),
    ("sample_rate", 48000, False, "sample_rate 48000 is not supported"),
    ("model.io_channels", 128, False, "io_channels 128 differs"),
]  # fmt: skip


@pytest.mark.parametrize("path, value, delete, message", BAD, ids=[b[0] + ("-" if b[2] else "") for b in BAD])
def test_bad_config_is_one_line_naming_it(path, value, delete, message):
    with pytest.raises(Sa3Error) as err:
        ReleasedConfig.from_dict(edit(path, value, delete))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_not_a_mapping():
    with pytest.raises(Sa3Error, match="model_config.json must be a mapping"):
        ReleasedConfig.from_dict([1, 2])


# ----------------------------------------------------------------------------- the official defaults
# The official constructors' parameters and literal defaults, recorded as data from the official
# code by scripts/released/official_defaults.py (tests/fixtures/released/README.md: provenance).
OFFICIAL_DEFAULTS = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "official_defaults.json"
# Which official constructors each dataclass stands for.
CONSTRUCTORS = {
    released_config.ReleasedDiTConfig: [
        ("dit.py", "DiffusionTransformer"),
        ("transformer.py", "ContinuousTransformer"),
        ("transformer.py", "TransformerBlock"),
    ],
    released_config.AttentionKwargs: [("transformer.py", "Attention")],
    released_config.FeedForwardKwargs: [("transformer.py", "FeedForward")],
    released_config.NormKwargs: [("transformer.py", "RMSNorm")],
    released_config.NumberConditionerConfig: [("conditioners.py", "NumberConditioner")],
    released_config.T5GemmaConditionerConfig: [("conditioners.py", "T5GemmaConditioner")],
}


def official_defaults(file: str, cls: str) -> dict:
    """The official constructor's parameters -> literal defaults (None when it has none)."""
    return json.loads(OFFICIAL_DEFAULTS.read_text())[f"{file}:{cls}"]


def assert_fields_are_official(dataclass, constructors) -> None:
    """Every field of ``dataclass`` is a parameter of its official constructors (later ones win)
    with the official default, where both have one."""
    params: dict = {}
    for file, cls in constructors:
        params.update(official_defaults(file, cls))
    for field in dataclasses.fields(dataclass):
        assert field.name in params, f"{dataclass.__name__}.{field.name} is not an official parameter"
        default = params[field.name]
        if field.default is not dataclasses.MISSING and default is not None:
            default = tuple(default) if isinstance(default, list) else default
            assert field.default == default, f"{dataclass.__name__}.{field.name}"


def test_every_field_is_an_official_parameter_with_its_default():
    for dataclass, constructors in CONSTRUCTORS.items():
        assert_fields_are_official(dataclass, constructors)


def test_the_official_field_check_can_fail():
    @dataclasses.dataclass
    class Renamed:
        num_heads: int = 8
        dim_head: int = 64

    @dataclasses.dataclass
    class OtherDefault:
        dim_heads: int = 63

    for wrong in (Renamed, OtherDefault):
        with pytest.raises(AssertionError):
            assert_fields_are_official(wrong, [("transformer.py", "Attention")])


def test_dit_config_defaults_stay_refusable():
    """A DiT config with nothing in it is the official default DiT, which sa3 does not compute."""
    with pytest.raises(Sa3Error, match="global_cond_type = 'prepend' is not supported"):
        ReleasedDiTConfig.from_dict({"cond_token_dim": 768, "global_cond_dim": 768})
