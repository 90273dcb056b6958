"""The released SAME autoencoders (SAME-S, SAME-L) between 44.1 kHz stereo and 256-channel latents.

Computes what the official implementation (Stability-AI/stable-audio-3, MIT) computes, including
its random draws, so a ``torch.Generator`` seeded like the official ``torch.manual_seed`` gives
the official audio (fp32 on CPU). Layers live in :mod:`sa3core.released.modules`, the config in
:mod:`sa3core.released.same_config`. Shape of the model (S = SAME-S, L = SAME-L, D = width):

    audio [B, 2, S] --zero-pad to a multiple of 4096--> patches [B, 512, P]  (channel = c*256 + t)
    encoder (layers.0): zero-pad P to a multiple of 32 patches (S: one attention unit) or 16 (L);
      1x1 weight-normed mapping 512 -> D; after each group of 16 patches one learned token
      (+ noise * mask_noise) -> groups of 17 tokens; the blocks; keep each group's last token
      -> [B, D, F]; layers.2: Linear D -> 256
    bottleneck: z = (x * scaling_factor + bias) / running_std                   -> latents [B, 256, F]
    decode: x = z * running_std + noise * running_std * 1e-3   (noise also at inference)
    decoder: layers.1: Linear 256 -> D; (S: zero-pad to an even F); each latent followed by 16
      learned tokens (+ noise * mask_noise); the blocks; keep the 16 new tokens of each group
      -> [B, D, 16F]; layers.3.mapping: weight-normed conv D -> 512 (S: kernel 3, "same")
    patches [B, 512, 16F] -> audio [B, 2, 4096F]

Attention units: SAME-S attends within chunks of 34 tokens (two groups of 17), RoPE restarting
in each; the second half of the blocks sees the sequence extended by its first and last 17
tokens, chunked again (so each chunk straddles two of the first half's) and trimmed back.
SAME-L attends over the whole window with a band of +-17 tokens (one group each side).

Long inputs (``chunked=True``, as the released DiT configs ask) go in windows of 128 latents
overlapping by 32, the last window anchored to the end; each window keeps its centre (all but 16
latents on a side that faces a neighbour) and later windows overwrite earlier ones there. SAME-S's
encoder and decoder run only on the frames of each window that survive the join, plus 1 or 2
frames of context a side (:func:`span_context`): the same output bit for bit, 20-40 % less work.

Random draws, in this order, from ``generator`` (or torch's default generator when None), all
float32 on the generator's device: encode, per window, the encoder's token noise (only when its
mask_noise > 0: SAME-L); decode, per window, the bottleneck noise [B, 256, F_w] then the decoder's
token noise [B * groups, 16, D]. The official code draws in the model's dtype on its device, so
fp16/CUDA runs match it only statistically.

Where sa3 differs in shape only: ``encode`` returns ceil(S / 4096) frames and ``decode`` F * 4096
samples; the official code also returns the frames/samples made from its padding (SAME-S, odd F).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import Sa3Error
from .modules import SameBlock, WeightNormConv1d, scaled_randn
from .same_config import ReleasedAutoencoderConfig, _SameCoderConfig

__all__ = [
    "ReleasedAutoencoder",
    "ReleasedAutoencoderConfig",
    "kept_frames",
    "load_released_state_dict",
    "span_context",
    "window_span",
    "window_starts",
]

WINDOW_LATENTS = 128  # the official chunk_size of encode_audio / decode_audio
OVERLAP_LATENTS = 32

# Keys the official model holds that carry nothing in the released configs: noise_augment_dim 0
# leaves a [1, 0, 1] parameter. A file may hold it (it must be empty) or not.
OPTIONAL_EMPTY_KEYS = ("bottleneck.noise_scaling_factor",)


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws shaped like ``x``, float32 on the generator's device, then cast to ``x``.

    Drawn into a tensor with ``x``'s memory layout, as the official ``randn_like`` does: the same
    numbers land on other elements when ``x`` is, say, a transposed view (an expanded tensor
    draws contiguously). So a decode's noise depends on the latents' strides, as released.
    """
    device = generator.device if generator is not None else x.device
    noise = torch.empty_like(x, dtype=torch.float32, device=device)
    return noise.normal_(generator=generator).to(x)


def _pad_to_multiple(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` at the end of ``dim`` to a multiple of ``multiple``."""
    extra = -x.shape[dim] % multiple
    if not extra:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


class ResamplingBlock(nn.Module):
    """One resampling stage: ``layers.0`` of the encoder or ``layers.3`` of the decoder.

    encoder: patches [B, C_in, P] -> summaries [B, D, ceil(P/pad)*pad/stride]
    decoder: latents-as-width [B, D, F] -> patches [B, C_out, ceil(F/pad)*pad*stride]
    Params: ``mapping`` (weight-normed conv, absent when C == D), ``new_tokens`` [1, 1 or k, D],
    ``transformers.j`` (:class:`SameBlock`).
    """

    def __init__(self, cfg: _SameCoderConfig, role: str, in_channels: int, out_channels: int, sinusoidal: int) -> None:
        super().__init__()
        self.role, self.stride, self.mask_noise = role, cfg.strides[0], cfg.mask_noise
        width = out_channels if role == "encoder" else in_channels
        self.in_group, self.out_group = (self.stride, 1) if role == "encoder" else (1, self.stride)
        self.mapping = None
        if in_channels != out_channels:
            kernel = 3 if cfg.conv_mapping else 1
            self.mapping = WeightNormConv1d(in_channels, out_channels, kernel, cfg.mapping_bias)
        tokens = 1 if cfg.variable_stride else self.out_group
        self.new_tokens = nn.Parameter(scaled_randn((1, tokens, width), 1e-5))
        depth = cfg.transformer_depths[0]
        self.transformers = nn.ModuleList(
            SameBlock(width, min(cfg.dim_heads, width), cfg.ff_mult, sinusoidal=(depth - i) < sinusoidal)
            for i in range(depth)
        )
        group = self.stride + 1  # tokens per latent frame
        if cfg.sliding_window is not None:
            self.window = tuple(w * group for w in cfg.sliding_window)  # (left, right) tokens
            self.unit = None
            self.pad = self.in_group  # whole groups
        else:
            self.window = None
            self.unit = cfg.chunk_size + cfg.chunk_size // self.stride  # tokens per attention unit
            self.pad = cfg.chunk_size if role == "encoder" else cfg.chunk_size // self.stride
        self.shift_second_half = cfg.sliding_window is None and cfg.chunk_midpoint_shift
        self.cfg = cfg

    def span_context(self) -> int | None:
        """See :func:`span_context`."""
        return span_context(self.cfg)

    def unit_frames(self) -> int:
        """Latent frames per padding unit of a window: whole attention units (SAME-S: 2 frames),
        whole groups (SAME-L: 1 frame)."""
        return self.pad // self.in_group if self.role == "decoder" else self.pad // self.stride

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``span``: run on groups (latent frames) [start, stop) of the padded window alone, mapping
        included, after drawing the token noise of every group (so the generator moves as for the
        whole); see :meth:`ReleasedAutoencoder.decode_window` for when that changes nothing."""
        B = x.shape[0]
        # encoder: patches [B, C, P] (the zeros go through the mapping, as released); decoder: [B, D, F]
        x = _pad_to_multiple(x, self.pad, dim=-1)  # whole attention units
        groups = x.shape[-1] // self.in_group
        start, stop = span if span is not None else (0, groups)
        x = x[..., start * self.in_group : stop * self.in_group]
        if self.role == "encoder" and self.mapping is not None:
            x = self.mapping(x)
        x = x.transpose(1, 2)  # (B, T, D)
        D = x.shape[-1]
        tokens = self.new_tokens.expand(B * groups, self.out_group, D)
        if self.mask_noise > 0:
            tokens = tokens + _noise_like(tokens, generator) * self.mask_noise
        if span is not None:
            tokens = tokens.reshape(B, groups, self.out_group, D)[:, start:stop].reshape(-1, self.out_group, D)
            groups = stop - start
        x = x.reshape(B * groups, self.in_group, D)
        x = torch.cat([x, tokens], dim=1).reshape(B, groups * (self.in_group + self.out_group), D)  # (B, N, D)
        x = self._blocks(x)
        x = x.reshape(B * groups, self.in_group + self.out_group, D)[:, -self.out_group :]  # the new tokens
        x = x.reshape(B, groups * self.out_group, D).transpose(1, 2)  # (B, D, T_out)
        if self.role == "decoder" and self.mapping is not None:
            x = self.mapping(x)
        return x

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Run the transformers over their attention units; x [B, N, D] -> [B, N, D]."""
        if self.window is not None:
            for block in self.transformers:
                x = block(x, self.window)
            return x
        B, N, D = x.shape
        split = len(self.transformers) // 2 if self.shift_second_half else len(self.transformers)
        x = x.reshape(-1, self.unit, D)  # (B * units, unit, D)
        for block in self.transformers[:split]:
            x = block(x)
        x = x.reshape(B, N, D)
        if not self.shift_second_half:
            return x
        half = self.unit // 2  # a whole number of groups, so groups stay in order
        x = torch.cat([x[:, :half], x, x[:, -half:]], dim=1).reshape(-1, self.unit, D)  # (B * (units+1), unit, D)
        for block in self.transformers[split:]:
            x = block(x)
        return x.reshape(B, N + 2 * half, D)[:, half:-half]


class SameEncoder(nn.Module):
    """patches [B, 512, P] -> pre-bottleneck latents [B, 256, F] (F of the span, when given).
    Params: layers.0 (block), layers.2 (Linear)."""

    def __init__(self, config: ReleasedAutoencoderConfig) -> None:
        super().__init__()
        cfg = config.encoder.config
        block = ResamplingBlock(cfg, "encoder", cfg.in_channels, cfg.width, sinusoidal=0)
        self.layers = nn.ModuleList([block, nn.Identity(), nn.Linear(cfg.width, cfg.latent_dim), nn.Identity()])

    def forward(
        self, patches: torch.Tensor, generator: torch.Generator | None, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        x = self.layers[0](patches, generator, span)  # (B, D, F)
        return self.layers[2](x.transpose(1, 2)).transpose(1, 2)  # (B, 256, F)


class SameDecoder(nn.Module):
    """latents [B, 256, F] -> patches [B, 512, 16F'] (F' = F padded). Params: layers.1 (Linear), layers.3."""

    def __init__(self, config: ReleasedAutoencoderConfig) -> None:
        super().__init__()
        cfg = config.decoder.config
        block = ResamplingBlock(cfg, "decoder", cfg.width, cfg.out_channels, sinusoidal=cfg.sinusoidal_blocks[0])
        self.layers = nn.ModuleList([nn.Identity(), nn.Linear(cfg.latent_dim, cfg.width), nn.Identity(), block])

    def forward(
        self, latents: torch.Tensor, generator: torch.Generator | None, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        x = self.layers[1](latents.transpose(1, 2)).transpose(1, 2)  # (B, D, F)
        return self.layers[3](x, generator, span)  # (B, 512, 16 * groups in span)


class SoftNormBottleneck(nn.Module):
    """Params: scaling_factor, bias [1, 256, 1]; running_std [1] (when auto_scale)."""

    def __init__(self, dim: int, auto_scale: bool, noise_regularize: bool) -> None:
        super().__init__()
        self.noise_regularize = noise_regularize
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.running_std = nn.Parameter(torch.ones(1), requires_grad=False) if auto_scale else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scaling_factor + self.bias
        return x / self.running_std if self.running_std is not None else x

    def decode(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The released decode only undoes running_std (not scaling_factor/bias), then adds noise."""
        if self.running_std is not None:
            z = z * self.running_std
        if self.noise_regularize:
            scale = self.running_std if self.running_std is not None else z.std(dim=-1, keepdim=True)
            z = z + _noise_like(z, generator) * scale * 1e-3
        return z


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """Start frames of the long-input windows: hop window-overlap, the last anchored to the end."""
    starts = list(range(0, total - window + 1, window - overlap))
    if starts[-1] != total - window:
        starts.append(total - window)
    return starts


def kept_frames(starts: list[int], window: int, overlap: int) -> list[tuple[int, int]]:
    """Frames [a, b) of each window (window coordinates) that end up in the joined output.

    The official join writes window i's frames [overlap/2, window - overlap/2) (from 0 for the
    first, to the end for the last) in order, each window overwriting the one before; what
    survives of window i stops where window i+1 starts writing."""
    half = overlap // 2
    kept = []
    for i, start in enumerate(starts):
        a = 0 if i == 0 else half
        b = window if i == len(starts) - 1 else min(window - half, starts[i + 1] + half - start)
        kept.append((a, b))
    return kept


def span_context(cfg: _SameCoderConfig) -> int | None:
    """Frames on each side of a span that a SAME encoder or decoder run on the span alone gets
    wrong, or None when that grows with depth (band attention: SAME-L).

    A span starts and stops on attention-unit boundaries (``chunk_size / stride`` frames), so the
    first half of the blocks sees exactly the units of the whole window. The shifted second half
    pairs the span's first and last half-units with copies of themselves instead of their
    neighbours: half a unit. A kernel-3 mapping (SAME-S's decoder), run on the span too, carries
    that one patch into the next frame: one frame more. Whatever the depth: SAME-S's encoder 1,
    its decoder 2."""
    if cfg.sliding_window is not None:
        return None
    stride = cfg.strides[0]
    half_unit = cfg.chunk_size // stride // 2 if cfg.chunk_midpoint_shift else 0
    reach = (3 if cfg.conv_mapping else 1) // 2  # patches; a frame makes ``stride`` of them
    return half_unit + -(-reach // stride)


def window_span(frames: int, keep: tuple[int, int], unit: int, context: int | None) -> tuple[int, int]:
    """The frames [start, stop) of a window of ``frames`` that an encoder or decoder runs to make
    the latents or audio of frames ``keep = (a, b)`` exactly as the whole window makes them: [a, b)
    widened by ``context`` (:func:`span_context`) to ``unit`` boundaries, within the window padded
    to whole units; the whole padded window when ``context`` is None."""
    a, b = keep
    padded = -(-frames // unit) * unit
    if context is None:
        return 0, padded
    return max(0, a - context) // unit * unit, min(padded, -(-(b + context) // unit) * unit)


class ReleasedAutoencoder(nn.Module):
    """SAME-S or SAME-L as released. Keys: ``encoder.*``, ``decoder.*``, ``bottleneck.*``."""

    def __init__(self, config: ReleasedAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        soft = config.bottleneck.config
        self.encoder = SameEncoder(config)
        self.decoder = SameDecoder(config)
        self.bottleneck = SoftNormBottleneck(soft.dim, soft.auto_scale, soft.noise_regularize)
        self.channels = config.pretransform.config.channels
        self.patch = config.pretransform.config.patch_size
        self.hop = config.downsampling_ratio  # samples per latent frame (4096)
        self.soft_clip = config.decoder.soft_clip

    @classmethod
    def from_state_dict(
        cls,
        config: ReleasedAutoencoderConfig,
        tensors: dict[str, torch.Tensor],
        dtype: torch.dtype | None = torch.float32,
    ) -> ReleasedAutoencoder:
        """Build on the meta device and take ``tensors`` as the weights (strict, see below).

        Tensors already in ``dtype`` (the released files are float32) are used as they are, so
        memory-mapped weights stay the only copy; others are converted (a copy), except the RoPE
        ``inv_freq`` buffers, kept in float32. ``dtype=None`` keeps every tensor as given.
        """
        if dtype is not None:
            tensors = {k: t if t.dtype == dtype or k.endswith("inv_freq") else t.to(dtype) for k, t in tensors.items()}
        with torch.device("meta"):
            model = cls(config)
        load_released_state_dict(model, tensors)
        return model.eval().requires_grad_(False)

    # --- audio <-> patches -------------------------------------------------------------------
    def patchify(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, C, S] (S a multiple of patch) -> [B, C*patch, S/patch]; channel = c*patch + t."""
        B, C, S = audio.shape
        x = audio.reshape(B, C, S // self.patch, self.patch)  # (B, C, P, patch)
        return x.permute(0, 1, 3, 2).reshape(B, C * self.patch, S // self.patch)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, C*patch, P] -> [B, C, P*patch]."""
        B, _, P = patches.shape
        x = patches.reshape(B, self.channels, self.patch, P).permute(0, 1, 3, 2)  # (B, C, P, patch)
        return x.reshape(B, self.channels, P * self.patch)

    # --- one window --------------------------------------------------------------------------
    def encode_window(
        self, audio: torch.Tensor, generator: torch.Generator | None = None, keep: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """audio [B, 2, S] (S a multiple of 4096) -> latents [B, 256, S/4096] in one pass; with
        ``keep = (a, b)`` only the latents of frames [a, b) (see :meth:`decode_window`)."""
        frames = audio.shape[-1] // self.hop
        (a, b), span = self._span(self.encoder.layers[0], frames, keep)
        x = self.encoder(self.patchify(audio).to(self.coder_dtype()), generator, span)
        start = span[0] if span is not None else 0
        return self.bottleneck.encode(x.to(audio.dtype))[..., a - start : b - start]

    def decode_window(
        self, latents: torch.Tensor, generator: torch.Generator | None = None, keep: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """latents [B, 256, F] -> audio [B, 2, F*4096] in one pass; with ``keep = (a, b)`` only
        the audio of frames [a, b), [B, 2, (b-a)*4096].

        ``keep`` makes the same numbers with less work where the decoder's receptive field is
        bounded (:meth:`ResamplingBlock.span_context`: SAME-S): the random draws are those of the
        whole window, and the blocks run on [a, b) widened by that context to unit boundaries.
        SAME-L (band attention, a field growing with depth) decodes the whole window and crops.
        """
        (a, b), span = self._span(self.decoder.layers[3], latents.shape[-1], keep)
        z = self.bottleneck.decode(latents, generator)
        x = self.decoder(z.to(self.coder_dtype()), generator, span).to(latents.dtype)
        start = span[0] if span is not None else 0
        audio = self.unpatchify(x)[..., (a - start) * self.hop : (b - start) * self.hop]
        return torch.tanh(audio) if self.soft_clip else audio

    @staticmethod
    def _span(block: ResamplingBlock, frames: int, keep: tuple[int, int] | None):
        """-> (the frames to return, the span of frames ``block`` runs on or None for all)."""
        a, b = keep if keep is not None else (0, frames)
        if not 0 <= a < b <= frames:
            raise Sa3Error(f"SAME: frames [{a}, {b}) are not inside a window of {frames}")
        if keep is None or block.span_context() is None:
            return (a, b), None
        return (a, b), window_span(frames, keep, block.unit_frames(), block.span_context())

    # --- precision ---------------------------------------------------------------------------
    def coders_to(self, dtype: torch.dtype) -> ReleasedAutoencoder:
        """Run the encoder's and decoder's blocks in ``dtype`` (bf16: sa3's default precision on
        a CPU that multiplies bf16 natively); returns self.

        What stays float32: the bottleneck (so the decoder's 1e-3 noise is added to float32
        latents, where bf16 would round it away), the audio and latents at the boundaries, the
        RoPE frequencies and angles, attention (:class:`DifferentialSelfAttention` runs it in
        float32 whatever the weights) and the weight norm of the mappings. The tolerance against
        float32 is measured by ``python -m bench.precision``; ``--fp32`` keeps float32 coders.
        """
        self.encoder.to(dtype)
        self.decoder.to(dtype)
        return self

    def coder_dtype(self) -> torch.dtype:
        return self.decoder.layers[1].weight.dtype

    # --- public ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        audio: torch.Tensor,
        generator: torch.Generator | None = None,
        chunked: bool = True,
        window: int = WINDOW_LATENTS,
        overlap: int = OVERLAP_LATENTS,
    ) -> torch.Tensor:
        """audio float [B, 2, S] at 44.1 kHz -> latents [B, 256, ceil(S/4096)].

        The end is zero-padded to whole frames. ``chunked``: windows of ``window`` latents
        overlapping by ``overlap`` (the released DiTs' setting) once S reaches ``window`` frames.
        """
        audio = self._check_input(audio, self.channels, "audio", window, overlap)
        audio = _pad_to_multiple(audio.to(self._dtype()), self.hop, dim=-1)
        total = audio.shape[-1] // self.hop
        if not chunked or total < window:
            return self.encode_window(audio, generator)
        starts = window_starts(total, window, overlap)
        out = audio.new_zeros(audio.shape[0], self.config.latent_dim, total)
        for start, (a, b) in zip(starts, kept_frames(starts, window, overlap)):
            # only the frames the join keeps: the same latents as encoding whole windows (see decode_window)
            piece = audio[..., start * self.hop : (start + window) * self.hop]
            out[..., start + a : start + b] = self.encode_window(piece, generator, keep=(a, b))
        return out

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        chunked: bool = True,
        window: int = WINDOW_LATENTS,
        overlap: int = OVERLAP_LATENTS,
    ) -> torch.Tensor:
        """latents [B, 256, F] -> audio float [B, 2, F*4096] (not clipped; callers crop)."""
        latents = self._check_input(latents, self.config.latent_dim, "latents", window, overlap).to(self._dtype())
        total = latents.shape[-1]
        if not chunked or total < window:
            return self.decode_window(latents, generator)
        starts = window_starts(total, window, overlap)
        out = latents.new_zeros(latents.shape[0], self.channels, total * self.hop)
        for start, (a, b) in zip(starts, kept_frames(starts, window, overlap)):
            # only the frames the join keeps: the same audio as decoding whole windows (see decode_window)
            piece = self.decode_window(latents[..., start : start + window], generator, keep=(a, b))
            out[..., (start + a) * self.hop : (start + b) * self.hop] = piece
        return out

    def _dtype(self) -> torch.dtype:
        return self.bottleneck.scaling_factor.dtype

    def _check_input(self, x: torch.Tensor, channels: int, name: str, window: int, overlap: int) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != channels or x.shape[-1] == 0:
            raise Sa3Error(f"SAME {name} must be [batch, {channels}, length>0], got {list(x.shape)}")
        if not 0 <= overlap < window or overlap % 2:
            raise Sa3Error(f"SAME window {window} and overlap {overlap}: the overlap must be even and below the window")
        return x


def load_released_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Take the released tensors (keys without the ``pretransform.model.`` prefix) as the weights.

    Strict: a missing, unexpected or wrongly shaped key is a one-line :class:`Sa3Error` naming it
    (the only exception: :data:`OPTIONAL_EMPTY_KEYS`, which must be empty if present). Tensors
    are assigned, not copied, so memory-mapped safetensors stay the only copy; their dtype is
    kept (convert the model afterwards if wanted).
    """
    expected = model.state_dict()
    tensors = dict(tensors)
    for key in OPTIONAL_EMPTY_KEYS:
        if key in tensors and key not in expected:
            if tensors[key].numel():
                raise Sa3Error(f"SAME checkpoint key {key!r} holds {tensors[key].numel()} values; expected none")
            del tensors[key]
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    for problem, keys in (("is missing the key", missing), ("has the unexpected key", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise Sa3Error(
                f"SAME checkpoint {problem} {keys[0]!r}{more}; does its model_config.json match the weights?"
            )
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            raise Sa3Error(
                f"SAME checkpoint key {key!r} has shape {list(got.shape)}, the config implies {list(want.shape)}"
            )
        if not got.is_floating_point():
            raise Sa3Error(f"SAME checkpoint key {key!r} is {got.dtype}, expected floating point")
    model.load_state_dict(tensors, strict=True, assign=True)
