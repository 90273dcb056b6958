"""The released SAME autoencoder's configuration, as typed dataclasses.

:class:`ReleasedAutoencoderConfig` mirrors the autoencoder dict of a released
``model_config.json``: ``model.pretransform.config`` in the DiT repos, ``model`` itself in the
``stabilityai/SAME-S`` and ``SAME-L`` repos. Field names and defaults are the official
constructors' (Stability-AI/stable-audio-3: ``SAMEEncoder``, ``SAMEDecoder``, their
``TransformerResamplingBlock``, ``PatchedPretransform``, ``SoftNormBottleneck``), so a key a file
leaves out means what it means there. Three kinds of keys:

- honoured: everything that changes what the released models compute;
- accepted with no effect, as in the official code: ``checkpointing``, ``freeze_backbone``,
  ``freeze`` (training only) and ``causal`` (the official blocks never pass it on);
- accepted only at the value every released file uses (``conformer``, ``layer_scale``,
  ``feat_scale``, ``cross_attn`` false; ``dyt``, ``differential`` true; one resampling stage;
  no oversampling, post-filter or noise-augment channels): another value is a one-line
  :class:`Sa3Error` naming it, never a silent change of model.

An unknown key, a wrong type, a missing required key or an unknown ``type`` is a one-line
:class:`Sa3Error` that names it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..errors import Sa3Error
from .strict import build


@dataclass(frozen=True)
class PatchedConfig:
    """``pretransform.config``: audio [B, channels, S] <-> patches [B, channels * patch_size, S/patch_size]."""

    channels: int
    patch_size: int
    oversampling: int = 1
    postfilter_channels: int = 0


@dataclass(frozen=True)
class _SameCoderConfig:
    """Keys shared by the encoder's and decoder's ``config`` (official defaults)."""

    channels: int = 128
    latent_dim: int = 32
    c_mults: tuple[int, ...] = (1, 2, 4, 8)
    strides: tuple[int, ...] = (2, 4, 8, 8)
    transformer_depths: tuple[int, ...] = (3, 3, 3, 3)
    sliding_window: tuple[int, ...] | None = None  # (left, right) in latents; None: chunked units
    chunk_size: int = 128  # patches (encoder) per attention unit before the interleaved tokens
    chunk_midpoint_shift: bool = False
    dim_heads: int = 128
    differential: bool = True
    variable_stride: bool = False
    mask_noise: float = 0.0
    conv_mapping: bool = False
    ff_mult: float = 3.0
    mapping_bias: bool = True
    dyt: bool = True
    conformer: bool = False
    layer_scale: bool = False
    feat_scale: bool = False
    cross_attn: bool = False
    causal: bool = False
    checkpointing: bool = False
    freeze_backbone: bool = False

    @property
    def width(self) -> int:
        """Transformer width D = channels * c_mults[0]."""
        return self.channels * self.c_mults[0]

    def check(self, where: str) -> None:
        for key, wanted in (("conformer", False), ("layer_scale", False), ("feat_scale", False),
                            ("cross_attn", False), ("dyt", True), ("differential", True)):  # fmt: skip
            if getattr(self, key) != wanted:
                raise Sa3Error(
                    f"{where}.{key} = {getattr(self, key)} is not supported (released SAME models use {wanted})"
                )
        if len(self.c_mults) != 1:
            raise Sa3Error(f"{where}.c_mults has {len(self.c_mults)} stages; only one-stage SAME models are supported")
        for key in ("strides", "transformer_depths"):
            if not getattr(self, key) or min(getattr(self, key)) < 1:
                raise Sa3Error(
                    f"{where}.{key} must hold one positive whole number per stage, got {list(getattr(self, key))}"
                )
        heads = min(self.dim_heads, self.width)  # as the official blocks do
        if self.width % heads or heads % 4:
            raise Sa3Error(f"{where}: width {self.width} must be a multiple of dim_heads {heads} (itself of 4)")
        if self.sliding_window is None:
            if self.chunk_size % self.strides[0]:
                raise Sa3Error(
                    f"{where}.chunk_size {self.chunk_size} must be a multiple of the stride {self.strides[0]}"
                )
        elif len(self.sliding_window) != 2 or min(self.sliding_window) < 0:
            raise Sa3Error(f"{where}.sliding_window must be [left, right] latents, got {list(self.sliding_window)}")
        if self.mask_noise < 0:
            raise Sa3Error(f"{where}.mask_noise must be >= 0, got {self.mask_noise}")


@dataclass(frozen=True)
class SameEncoderConfig(_SameCoderConfig):
    """``encoder.config``: in_channels is the patch channel count (2 * 256 in the released files)."""

    in_channels: int = 2


@dataclass(frozen=True)
class SameDecoderConfig(_SameCoderConfig):
    """``decoder.config``; sinusoidal_blocks[0] = n gates the last n-1 blocks with sin(pi * g)."""

    out_channels: int = 2
    sinusoidal_blocks: tuple[int, ...] = (0, 0, 0, 0)


@dataclass(frozen=True)
class SoftNormConfig:
    """``bottleneck.config``: encode ``(x * scale + bias) / running_std``; decode adds noise if noise_regularize."""

    dim: int = 32
    noise_augment_dim: int = 0
    noise_regularize: bool = False
    auto_scale: bool = False
    freeze: bool = False


@dataclass(frozen=True)
class EncoderSpec:
    type: str
    config: SameEncoderConfig


@dataclass(frozen=True)
class DecoderSpec:
    type: str
    config: SameDecoderConfig
    soft_clip: bool = False


@dataclass(frozen=True)
class PretransformSpec:
    type: str
    config: PatchedConfig


@dataclass(frozen=True)
class BottleneckSpec:
    type: str
    config: SoftNormConfig


_TYPES = {"encoder": "same", "decoder": "same", "pretransform": "patched", "bottleneck": "softnorm"}


@dataclass(frozen=True)
class ReleasedAutoencoderConfig:
    """A released SAME autoencoder: ``model.pretransform.config`` (DiT repos) or ``model`` (SAME repos)."""

    encoder: EncoderSpec
    decoder: DecoderSpec
    pretransform: PretransformSpec
    bottleneck: BottleneckSpec
    latent_dim: int
    downsampling_ratio: int
    io_channels: int
    in_channels: int | None = None
    out_channels: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "autoencoder config") -> ReleasedAutoencoderConfig:
        """Build and check the config; any problem is a one-line :class:`Sa3Error` naming the key."""
        config = build(cls, data, where)
        config._check(where)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (lists for tuples); ``from_dict(to_dict())`` gives an equal config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def stride(self) -> int:
        """Patches per latent frame (16 in the released files)."""
        return self.encoder.config.strides[0]

    def _check(self, where: str) -> None:
        for name, wanted in _TYPES.items():
            got = getattr(self, name).type
            if got != wanted:
                raise Sa3Error(f"{where}: unknown {name} type {got!r}; released SAME models use {wanted!r}")
        enc, dec = self.encoder.config, self.decoder.config
        enc.check(f"{where}.encoder.config")
        dec.check(f"{where}.decoder.config")
        patched, soft = self.pretransform.config, self.bottleneck.config
        if patched.oversampling != 1 or patched.postfilter_channels != 0:
            raise Sa3Error(f"{where}.pretransform.config: oversampling and postfilter_channels are not supported")
        if soft.noise_augment_dim != 0:
            raise Sa3Error(f"{where}.bottleneck.config.noise_augment_dim = {soft.noise_augment_dim} is not supported")
        if not dec.sinusoidal_blocks:
            raise Sa3Error(f"{where}.decoder.config.sinusoidal_blocks is empty; it needs one entry per stage")
        patch_channels = patched.channels * patched.patch_size
        agree = [
            ("encoder.config.in_channels", enc.in_channels, patch_channels),
            ("decoder.config.out_channels", dec.out_channels, patch_channels),
            ("io_channels", self.io_channels, patched.channels),
            ("encoder.config.latent_dim", enc.latent_dim, self.latent_dim),
            ("decoder.config.latent_dim", dec.latent_dim, self.latent_dim),
            ("bottleneck.config.dim", soft.dim, self.latent_dim),
            ("decoder.config.strides[0]", dec.strides[0], enc.strides[0]),
            ("downsampling_ratio", self.downsampling_ratio, patched.patch_size * enc.strides[0]),
        ]
        agree += [
            (key, got, patched.channels)
            for key in ("in_channels", "out_channels")
            if (got := getattr(self, key)) is not None
        ]
        for key, got, wanted in agree:
            if got != wanted:
                raise Sa3Error(f"{where}.{key} is {got} but the rest of the config implies {wanted}")
