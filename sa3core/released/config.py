"""A released Stable Audio 3 ``model_config.json`` as typed dataclasses.

Field names and defaults are the official constructors' (Stability-AI/stable-audio-3:
``DiffusionTransformer``, ``ContinuousTransformer``, ``TransformerBlock``, ``Attention``,
``FeedForward``, ``RMSNorm``, the conditioners and ``create_diffusion_cond_from_config``), so a
key a file leaves out means what it means to the official code. Three kinds of keys:

- honoured: everything that changes what the released models compute;
- accepted with no effect, as in the official code: ``zero_init_branch_outputs`` (initialisation
  only), ``timestep_embed_dim`` (overridden when the timestep is a global condition),
  ``abs_pos_emb_max_length`` and ``conv_kernel_size`` (unused at the values we accept),
  ``enable_grad`` and ``distribution_shift_options`` (training only, kept verbatim);
- accepted only at the values the released files use; any other value is a one-line
  :class:`Sa3Error` naming the key, never a silent change of model.

An unknown key, a missing required key, a wrong type or an unknown ``type`` is a one-line
:class:`Sa3Error` naming it. The autoencoder's dataclass lives in
:mod:`sa3core.released.same_config` (``ReleasedAutoencoderConfig.from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .. import timebase
from ..errors import Sa3Error
from ..registry import Registry
from .strict import build

WHERE = "model_config.json"
DIT_MODEL_TYPES = ("diffusion_cond", "diffusion_cond_inpaint")
AUTOENCODER_MODEL_TYPE = "autoencoder"
T5GEMMA_WIDTHS = {"google/t5gemma-b-b-ul2": 768}  # the only text model the official code knows
INPAINT_IDS = ("inpaint_mask", "inpaint_masked_input")  # filled by the inference code, not a conditioner


# ----------------------------------------------------------------------------- DiT
@dataclass(frozen=True)
class NormKwargs:
    """``norm_kwargs`` of every block norm (RMSNorm with a ``gamma`` weight)."""

    eps: float = 1e-5
    force_fp32: bool = False  # compute the norm in float32 whatever the weights' dtype
    fix_scale: bool = False


@dataclass(frozen=True)
class AttentionKwargs:
    """``attn_kwargs``: shared by self- and cross-attention."""

    qk_norm: str = "none"
    qk_norm_eps: float = 1e-6
    differential: bool = False
    feat_scale: bool = False


@dataclass(frozen=True)
class FeedForwardKwargs:
    """``ff_kwargs``: a GLU feed-forward of inner width ``int(embed_dim * mult)``."""

    mult: float = 4.0
    no_bias: bool = False
    glu: bool = True
    use_conv: bool = False
    conv_kernel_size: int = 3
    sinusoidal: bool = False
    dim_out: int | None = None


@dataclass(frozen=True)
class ReleasedDiTConfig:
    """``model.diffusion.config``: the released DiT's constructor arguments (official defaults)."""

    io_channels: int = 32
    patch_size: int = 1
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 8
    cond_token_dim: int = 0
    project_cond_tokens: bool = True
    global_cond_dim: int = 0
    project_global_cond: bool = True
    input_concat_dim: int = 0
    prepend_cond_dim: int = 0
    transformer_type: str = "continuous_transformer"
    global_cond_type: str = "prepend"
    timestep_cond_type: str = "global"
    timestep_embed_dim: int | None = None
    timestep_features_type: str = "learned"
    timestep_features_dim: int = 256
    timestep_features_logsnr: bool = False
    local_add_cond_dim: int | None = None
    num_memory_tokens: int = 0
    rotary_pos_emb: bool = True
    cross_attn_rotary_pos_emb: bool = False
    final_cross_attn_ix: int = -1
    causal: bool = False
    zero_init_branch_outputs: bool = True
    conformer: bool = False
    use_sinusoidal_emb: bool = False
    use_abs_pos_emb: bool = False
    abs_pos_emb_max_length: int = 10_000
    sliding_window: tuple[int, ...] | None = None
    add_rope: bool = False
    layer_scale: bool = False
    norm_type: str = "layer_norm"
    norm_kwargs: NormKwargs = field(default_factory=NormKwargs)
    attn_kwargs: AttentionKwargs = field(default_factory=AttentionKwargs)
    ff_kwargs: FeedForwardKwargs = field(default_factory=FeedForwardKwargs)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rotary_dims(self) -> int:
        """Rotated dims of each head's query/key: half the head, at least 32 (official rule)."""
        return max(self.head_dim // 2, 32)

    @property
    def ff_inner(self) -> int:
        return int(self.embed_dim * self.ff_kwargs.mult)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = f"{WHERE}: model.diffusion.config") -> ReleasedDiTConfig:
        config = build(cls, data, where)
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """Refuse what sa3 does not compute (none of it is used by a released checkpoint)."""
        only = {
            "patch_size": 1,
            "project_cond_tokens": True,
            "project_global_cond": True,
            "input_concat_dim": 0,
            "prepend_cond_dim": 0,
            "transformer_type": "continuous_transformer",
            "global_cond_type": "adaLN",
            "timestep_cond_type": "global",
            "timestep_features_type": "expo",
            "rotary_pos_emb": True,
            "cross_attn_rotary_pos_emb": False,
            "causal": False,
            "conformer": False,
            "use_sinusoidal_emb": False,
            "use_abs_pos_emb": False,
            "sliding_window": None,
            "add_rope": False,
            "layer_scale": False,
            "norm_type": "rms_norm",
            "norm_kwargs.fix_scale": False,
            "attn_kwargs.qk_norm": "rms",
            "attn_kwargs.feat_scale": False,
            "ff_kwargs.glu": True,
            "ff_kwargs.use_conv": False,
            "ff_kwargs.sinusoidal": False,
            "ff_kwargs.dim_out": None,
        }
        for key, wanted in only.items():
            got = self
            for part in key.split("."):
                got = getattr(got, part)
            if got != wanted:
                raise Sa3Error(f"{where}.{key} = {got!r} is not supported (released DiTs use {wanted!r})")
        if self.final_cross_attn_ix != -1 and self.final_cross_attn_ix < self.depth - 1:
            raise Sa3Error(f"{where}.final_cross_attn_ix = {self.final_cross_attn_ix} is not supported (released: -1)")
        positive = ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim")
        for key in positive:
            if getattr(self, key) <= 0:
                raise Sa3Error(f"{where}.{key} must be positive, got {getattr(self, key)}")
        if self.embed_dim % self.num_heads:
            raise Sa3Error(f"{where}: embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.head_dim < 32 or self.head_dim % 2:
            raise Sa3Error(f"{where}: head size {self.head_dim} must be even and at least 32 (rotary dims are 32)")
        if self.timestep_features_dim <= 0 or self.timestep_features_dim % 2:
            raise Sa3Error(f"{where}.timestep_features_dim must be positive and even, got {self.timestep_features_dim}")
        if self.num_memory_tokens < 0:
            raise Sa3Error(f"{where}.num_memory_tokens must be >= 0, got {self.num_memory_tokens}")
        if self.local_add_cond_dim is not None and self.local_add_cond_dim <= 0:
            raise Sa3Error(f"{where}.local_add_cond_dim must be positive or null, got {self.local_add_cond_dim}")
        if self.ff_inner <= 0:
            raise Sa3Error(f"{where}.ff_kwargs.mult = {self.ff_kwargs.mult} leaves no feed-forward width")


# ----------------------------------------------------------------------------- conditioners
@dataclass(frozen=True)
class T5GemmaConditionerConfig:
    """``type: t5gemma``: the prompt. The encoder is :mod:`sa3core.released.text`; here its padding."""

    model_name: str = "google/t5gemma-b-b-ul2"
    max_length: int = 128
    enable_grad: bool = False
    project_out: bool = False
    padding_mode: str = "zero"  # none | zero | learned (a `padding_embedding` parameter)
    model_path: str | None = None
    repo_id: str | None = None
    subfolder: str | None = None
    output_dim: int | None = None  # None: conditioning.cond_dim

    def check(self, where: str, output_dim: int) -> None:
        if self.model_name not in T5GEMMA_WIDTHS:
            raise Sa3Error(
                f"{where}.model_name {self.model_name!r} is unknown; released models use google/t5gemma-b-b-ul2"
            )
        if self.padding_mode not in ("none", "zero", "learned"):
            raise Sa3Error(f"{where}.padding_mode {self.padding_mode!r} is unknown; use none, zero or learned")
        if self.project_out or output_dim != T5GEMMA_WIDTHS[self.model_name]:
            raise Sa3Error(
                f"{where}: a projected prompt ({output_dim} wide, project_out {self.project_out}) is not supported"
            )
        if self.max_length <= 0:
            raise Sa3Error(f"{where}.max_length must be positive, got {self.max_length}")


@dataclass(frozen=True)
class NumberConditionerConfig:
    """``type: number``: a number clamped to [min_val, max_val], scaled to [0, 1], then embedded."""

    min_val: float = 0.0
    max_val: float = 1.0
    fourier_features_type: str = "learned"
    output_dim: int | None = None  # None: conditioning.cond_dim

    def check(self, where: str, output_dim: int) -> None:
        if self.fourier_features_type != "expo":
            raise Sa3Error(
                f"{where}.fourier_features_type {self.fourier_features_type!r} is not supported (released: 'expo')"
            )
        if not self.max_val > self.min_val:
            raise Sa3Error(f"{where}: max_val {self.max_val} must be above min_val {self.min_val}")


CONDITIONER_CONFIGS: Registry[type] = Registry("released conditioner type")
CONDITIONER_CONFIGS.register("t5gemma")(T5GemmaConditionerConfig)
CONDITIONER_CONFIGS.register("number")(NumberConditionerConfig)


@dataclass(frozen=True)
class ConditionerSpec:
    """One entry of ``conditioning.configs``; ``output_dim`` is the width it produces."""

    id: str
    type: str
    config: T5GemmaConditionerConfig | NumberConditionerConfig
    output_dim: int


@dataclass(frozen=True)
class ConditioningConfig:
    """``model.conditioning``."""

    cond_dim: int
    configs: tuple[ConditionerSpec, ...]
    default_keys: dict[str, str] = field(default_factory=dict)
    pre_encoded_keys: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: str = f"{WHERE}: model.conditioning") -> ConditioningConfig:
        raw = build(_RawConditioning, data, where)
        specs = []
        for i, entry in enumerate(raw.configs):
            at = f"{where}.configs[{i}]"
            entry = build(_RawConditioner, entry, at)
            kind = _registered(CONDITIONER_CONFIGS, entry.type, f"{at}.type")
            config = build(kind, entry.config, f"{at}.config")
            output_dim = config.output_dim if config.output_dim is not None else raw.cond_dim
            config.check(f"{at}.config", output_dim)
            specs.append(ConditionerSpec(entry.id, entry.type, config, output_dim))
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            raise Sa3Error(f"{where}.configs: conditioner ids repeat: {ids}")
        if raw.default_keys or raw.pre_encoded_keys:
            key = "default_keys" if raw.default_keys else "pre_encoded_keys"
            raise Sa3Error(f"{where}.{key} is not supported (released models leave it empty)")
        return cls(raw.cond_dim, tuple(specs), raw.default_keys, raw.pre_encoded_keys)

    def get(self, conditioner_id: str) -> ConditionerSpec:
        for spec in self.configs:
            if spec.id == conditioner_id:
                return spec
        raise Sa3Error(f"{WHERE}: no conditioner {conditioner_id!r}; it has {', '.join(s.id for s in self.configs)}")


@dataclass(frozen=True)
class _RawConditioning:
    cond_dim: int
    configs: tuple[dict, ...]
    default_keys: dict[str, str] = field(default_factory=dict)
    pre_encoded_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class _RawConditioner:
    id: str
    type: str
    config: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- diffusion, pretransform, model
@dataclass(frozen=True)
class ReleasedDiffusionConfig:
    """``model.diffusion``: the DiT and which conditions feed it where."""

    type: str
    config: ReleasedDiTConfig
    diffusion_objective: str = "v"
    cross_attention_cond_ids: tuple[str, ...] = ()
    global_cond_ids: tuple[str, ...] = ()
    input_concat_ids: tuple[str, ...] = ()
    local_add_cond_ids: tuple[str, ...] = ()
    prepend_cond_ids: tuple[str, ...] = ()
    modular_local_cond_configs: tuple[dict, ...] = ()
    distribution_shift_options: dict | None = None  # training only, kept verbatim
    sampling_distribution_shift_options: dict | None = None
    mask_padding_attention: bool = False
    use_effective_length_for_schedule: bool = False

    def check(self, where: str, conditioning: ConditioningConfig) -> None:
        if self.type != "dit":
            raise Sa3Error(f"{where}.type {self.type!r} is unknown; released models use 'dit'")
        if self.diffusion_objective not in ("rectified_flow", "rf_denoiser"):
            raise Sa3Error(
                f"{where}.diffusion_objective {self.diffusion_objective!r} is not supported (rectified_flow, rf_denoiser)"
            )
        for key in ("input_concat_ids", "prepend_cond_ids", "modular_local_cond_configs"):
            if getattr(self, key):
                raise Sa3Error(f"{where}.{key} is not supported (released models leave it empty)")
        if self.sampling_distribution_shift_options is not None:
            raise Sa3Error(f"{where}.sampling_distribution_shift_options is not supported (released models set null)")
        dit = self.config
        cross = [conditioning.get(i) for i in self.cross_attention_cond_ids]
        glob = [conditioning.get(i) for i in self.global_cond_ids]
        if not cross or any(s.output_dim != dit.cond_token_dim for s in cross):
            raise Sa3Error(
                f"{where}.cross_attention_cond_ids {list(self.cross_attention_cond_ids)} must give {dit.cond_token_dim}-wide tokens"
            )
        if sum(s.output_dim for s in glob) != dit.global_cond_dim:
            raise Sa3Error(
                f"{where}.global_cond_ids {list(self.global_cond_ids)} do not add up to global_cond_dim {dit.global_cond_dim}"
            )
        local = tuple(self.local_add_cond_ids)
        if local not in ((), INPAINT_IDS):
            raise Sa3Error(f"{where}.local_add_cond_ids {list(local)} is not supported (released: {list(INPAINT_IDS)})")
        wanted = dit.io_channels + 1 if local else None
        if dit.local_add_cond_dim != wanted:
            raise Sa3Error(
                f"{where}.config.local_add_cond_dim is {dit.local_add_cond_dim} but local_add_cond_ids imply {wanted}"
            )


@dataclass(frozen=True)
class ReleasedPretransformConfig:
    """``model.pretransform``: the SAME autoencoder wrapper."""

    type: str
    config: Any  # ReleasedAutoencoderConfig (a dict until checked)
    chunked: bool = False
    iterate_batch: bool = False


@dataclass(frozen=True)
class ReleasedModelConfig:
    """``model`` of a DiT repo."""

    io_channels: int
    conditioning: ConditioningConfig
    diffusion: ReleasedDiffusionConfig
    pretransform: ReleasedPretransformConfig


@dataclass(frozen=True)
class ReleasedConfig:
    """A whole ``model_config.json``. ``model`` is a :class:`ReleasedModelConfig` for the DiT repos
    and a ``ReleasedAutoencoderConfig`` for the SAME repos (``model_type`` autoencoder)."""

    model_type: str
    sample_rate: int
    model: Any
    sample_size: int | None = None
    audio_channels: int | None = None
    svd_bases_path: str | None = None  # LoRA "-xs" bases, read by the official LoRA loader

    @property
    def is_dit(self) -> bool:
        return self.model_type in DIT_MODEL_TYPES

    @property
    def autoencoder(self) -> Any:
        """The ReleasedAutoencoderConfig, whichever kind of repo this is."""
        return self.model.pretransform.config if self.is_dit else self.model

    @classmethod
    def from_dict(cls, data: Any, where: str = WHERE) -> ReleasedConfig:
        raw = build(_RawTop, data, where)
        if raw.sample_rate != timebase.SAMPLE_RATE:
            raise Sa3Error(
                f"{where}: sample_rate {raw.sample_rate} is not supported (released models use {timebase.SAMPLE_RATE})"
            )
        if raw.audio_channels not in (None, 2):
            raise Sa3Error(
                f"{where}: audio_channels {raw.audio_channels} is not supported (released models are stereo)"
            )
        if raw.sample_size is not None and raw.sample_size <= 0:
            raise Sa3Error(f"{where}: sample_size must be positive, got {raw.sample_size}")
        if raw.model_type == AUTOENCODER_MODEL_TYPE:
            model = _autoencoder_config(raw.model, f"{where}: model")
        elif raw.model_type in DIT_MODEL_TYPES:
            model = _model_config(raw.model, f"{where}: model")
        else:
            known = ", ".join((*DIT_MODEL_TYPES, AUTOENCODER_MODEL_TYPE))
            raise Sa3Error(f"{where}: unknown model_type {raw.model_type!r}; this sa3 reads {known}")
        if raw.model_type in DIT_MODEL_TYPES and raw.sample_size is None:
            raise Sa3Error(f"{where} is missing the key 'sample_size'")
        return cls(raw.model_type, raw.sample_rate, model, raw.sample_size, raw.audio_channels, raw.svd_bases_path)


@dataclass(frozen=True)
class _RawTop:
    model_type: str
    sample_rate: int
    model: dict
    sample_size: int | None = None
    audio_channels: int | None = None
    svd_bases_path: str | None = None


@dataclass(frozen=True)
class _RawModel:
    io_channels: int
    conditioning: dict
    diffusion: dict
    pretransform: dict


def _model_config(data: Any, where: str) -> ReleasedModelConfig:
    raw = build(_RawModel, data, where)
    conditioning = ConditioningConfig.from_dict(raw.conditioning, f"{where}.conditioning")
    diffusion = build(ReleasedDiffusionConfig, raw.diffusion, f"{where}.diffusion")
    dit = diffusion.config
    dit.check(f"{where}.diffusion.config")
    diffusion.check(f"{where}.diffusion", conditioning)
    if raw.io_channels != dit.io_channels:
        raise Sa3Error(
            f"{where}.io_channels {raw.io_channels} differs from diffusion.config.io_channels {dit.io_channels}"
        )
    pre = build(ReleasedPretransformConfig, raw.pretransform, f"{where}.pretransform")
    if pre.type != "autoencoder":
        raise Sa3Error(f"{where}.pretransform.type {pre.type!r} is unknown; released models use 'autoencoder'")
    autoencoder = _autoencoder_config(pre.config, f"{where}.pretransform.config")
    if getattr(autoencoder, "latent_dim", dit.io_channels) != dit.io_channels:
        raise Sa3Error(
            f"{where}: the autoencoder's latent_dim {autoencoder.latent_dim} differs from the DiT's {dit.io_channels}"
        )
    pretransform = dataclasses.replace(pre, config=autoencoder)
    return ReleasedModelConfig(raw.io_channels, conditioning, diffusion, pretransform)


def _autoencoder_config(data: Any, where: str) -> Any:
    from .same_config import ReleasedAutoencoderConfig  # written beside the SAME model

    return ReleasedAutoencoderConfig.from_dict(data, where)


def _registered(registry: Registry[type], name: Any, where: str) -> type:
    if not isinstance(name, str) or name not in registry:
        raise Sa3Error(f"{where}: unknown type {name!r}; this sa3 reads {', '.join(registry.names())}")
    return registry.get(name)
