"""Export-friendly views of a released Stable Audio 3 model's parts (sa3core.released).

Each wrapper holds the float32 torch modules (no weight copies) and computes what the eager
call computes, with plain tensors in and out so that ``torch.export`` can trace it with
dynamic batch and length. What differs from the eager call, and why:

- **Random draws are inputs.** The SAME decoder's bottleneck noise and token noise (and SAME-L's
  encoder token noise) are drawn by the caller from its generator, in the order
  ``sa3core.released.same`` draws them, so an exported model gives the torch backend's audio
  for the same seed.
- **Lengths come in whole attention units.** The eager SAME pads each window with Python
  arithmetic on its length (``-F % 2`` frames for SAME-S) and draws token noise for the padded
  frames too. Here the caller pads (latents, noises) to whole units and passes ``frame_valid``;
  the graph zeroes the padded frames exactly where the eager model pads zeros (after the
  decoder's input projection), so real frames get the eager numbers and every reshape is a
  product of the unit count (which ``torch.export`` proves without guards).
- **The timestep's Fourier frequencies are constants.** ``ExpoFourierFeatures`` makes them with
  ``exp(linspace(...))`` on each call; the exporter folds that into constants its own way, one
  ulp off, and angles up to 6e4 radians turn one ulp into 1e-2 in the features.
  :class:`TimestepFeatures` holds torch's own values as a buffer (bit-identical features).
- **SAME-L's band attention** branches on the sequence length in Python; :func:`exporting`
  swaps in one masked softmax over the window (the same numbers; a window holds at most
  128 latents, so the square mask stays bounded).
- **The DiT's attention is onnxruntime's flash attention.** Exported as MatMul-Softmax-MatMul,
  every attention materialises its [B, H, N, N] float32 scores (several buffers at once: the
  step's memory grew by ~0.9 GiB from 10 s to 120 s). :func:`onnxruntime_attention` emits
  ``com.microsoft.MultiHeadAttention`` instead, whose CPU kernel streams the scores through
  L2-sized blocks, but only without a key-padding mask or attention bias (given a key-padding
  mask it materialises the scores once). So the key mask travels inside q and k: one more
  column, 1 in every query, 0 in a real key and -1e9 in a padded one, which adds exactly 0 to
  real scores and sends padded ones to exp(-1.25e8) = 0, the masked softmax's numbers.

Tensor names and shapes are the manifest's (``export/released_export.py``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from sa3core.released import modules as released_modules
from sa3core.released.dit import Attention, ReleasedCondition, ReleasedDiT
from sa3core.released.same import ReleasedAutoencoder, ResamplingBlock
from sa3core.released.text import T5GemmaEncoder


def _band_attention_masked(q, k, v, left: int, right: int, block: int = 256):
    """``band_attention`` as one masked softmax (query i sees keys i-left .. i+right)."""
    position = torch.arange(q.shape[2], device=q.device)
    delta = position[None, :] - position[:, None]  # (N queries, N keys)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(delta >= -left) & (delta <= right))


@contextlib.contextmanager
def exporting():
    """Within this block SAME-L's band attention has no Python branch on the length."""
    original = released_modules.band_attention
    released_modules.band_attention = _band_attention_masked
    try:
        yield
    finally:
        released_modules.band_attention = original


MASKED_KEY = -1e9  # a padded key's extra column: its score, times 1/8 (64-wide heads), exps to exactly 0


def multi_head_attention(q, k, v, key_mask) -> torch.Tensor:
    """Softmax attention as onnxruntime's ``com.microsoft.MultiHeadAttention`` without a mask input.

    q [B, H, Nq, hd], k and v [B, H, Nk, hd], key_mask bool [B, 1, 1, Nk] (True = real) or None
    -> [B, Nq, H * hd]; scale 1/sqrt(hd), as ``F.scaled_dot_product_attention``. With a mask, q
    and k get one more column (q: 1; k: 0 real, :data:`MASKED_KEY` padded) and the scale stays
    that of hd. Under ``torch.onnx.export`` the op is emitted as one node (q, k, v as [B, N, H*d]);
    in eager mode the same augmented tensors go through ``F.scaled_dot_product_attention``.
    Every query needs a real key (the DiT's memory tokens are always real).
    """
    B, H, Nq, hd = q.shape
    Nk, scale = k.shape[2], hd**-0.5
    if key_mask is not None:
        bias = torch.where(key_mask[:, :, 0, :, None], 0.0, MASKED_KEY).to(k.dtype)  # (B, 1, Nk, 1)
        q = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)  # (B, H, Nq, hd + 1)
        k = torch.cat([k, bias.expand(B, H, Nk, 1)], dim=-1)  # (B, H, Nk, hd + 1)
    if not torch.onnx.is_in_onnx_export():
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, H, Nq, hd)
        return out.transpose(1, 2).reshape(B, Nq, H * hd)
    dq = q.shape[-1]
    return torch.onnx.ops.symbolic(
        "com.microsoft::MultiHeadAttention",
        (
            q.transpose(1, 2).reshape(B, Nq, H * dq),  # (B, Nq, H * dq)
            k.transpose(1, 2).reshape(B, Nk, H * dq),  # (B, Nk, H * dq)
            v.transpose(1, 2).reshape(B, Nk, H * hd),  # (B, Nk, H * hd)
        ),
        {"num_heads": H, "scale": scale},
        dtype=q.dtype,
        shape=(B, Nq, H * hd),
        version=1,
    )


def _attend_onnxruntime(self: Attention, q, k, v, key_mask) -> torch.Tensor:
    """``Attention._attend`` (q [B, splits, H, Nq, hd], k [B, splits, H, Nk, hd], v [B, H, Nk, hd]
    -> [B, Nq, E]) through :func:`multi_head_attention`; differential: the two attentions subtracted."""
    out = multi_head_attention(q[:, 0], k[:, 0], v, key_mask)  # (B, Nq, E)
    if self.splits == 2:
        out = out - multi_head_attention(q[:, 1], k[:, 1], v, key_mask)
    return self.to_out(out)


@contextlib.contextmanager
def onnxruntime_attention():
    """Within this block the released DiT's attention exports as onnxruntime's flash attention
    (see the module docstring); onnxruntime only: Core ML has no such op."""
    original = Attention._attend
    Attention._attend = _attend_onnxruntime
    try:
        yield
    finally:
        Attention._attend = original


def resample(block: ResamplingBlock, x: torch.Tensor, token_noise: torch.Tensor | None, groups) -> torch.Tensor:
    """``ResamplingBlock.forward`` on an input already padded to whole units, its token noise given.

    encoder: patches [B, C_in, Fp * stride] -> [B, D, Fp]; decoder: [B, Fp, D] (padded frames
    already zero, see :class:`SameDecoderWindowGraph`) -> patches [B, C_out, Fp * stride].
    token_noise [B, Fp, out_group, D] (drawn as [B * Fp, out_group, D]) or None (no noise);
    ``groups`` = Fp, from an input's shape: explicit sizes, so no reshape infers a length by
    floor division (coremltools types symbolic floor-divided sizes as floats)."""
    if block.role == "encoder":
        if block.mapping is not None:
            x = block.mapping(x)
        x = x.transpose(1, 2)  # (B, T, D)
    B, _, D = x.shape
    x = x.reshape(B, groups, block.in_group, D)  # (B, groups, in_group, D)
    # zeros shaped (B, groups, 1, D) from x (select, not a full slice: Core ML refuses aten.alias)
    tokens = block.new_tokens.reshape(1, 1, -1, D) + x.select(2, 0).unsqueeze(2) * 0.0  # (B, groups, k, D)
    tokens = tokens.expand(-1, -1, block.out_group, -1)  # (B, groups, out_group, D)
    if token_noise is not None:
        tokens = tokens + token_noise * block.mask_noise
    span = block.in_group + block.out_group
    x = torch.cat([x, tokens], dim=2).reshape(B, groups * span, D)  # (B, N, D)
    x = block._blocks(x)
    x = x.reshape(B, groups, span, D)[:, :, -block.out_group :]  # the new tokens
    x = x.reshape(B, groups * block.out_group, D).transpose(1, 2)  # (B, D, groups * out_group)
    if block.role == "decoder" and block.mapping is not None:
        x = block.mapping(x)
    return x


class SameEncoderWindowGraph(nn.Module):
    """One encode window: audio [B, 2, Fp * 4096] (zero-padded to whole units) and, for SAME-L,
    token_noise [B, Fp, 1, D] -> latents [B, C, Fp] (crop to the real frames)."""

    def __init__(self, same: ReleasedAutoencoder) -> None:
        super().__init__()
        self.same = same

    def forward(self, audio: torch.Tensor, token_noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(audio, token_noise, audio.shape[-1] // self.same.hop)

    def encode(self, audio: torch.Tensor, token_noise: torch.Tensor | None, frames) -> torch.Tensor:
        """``forward`` with the frame count given (Core ML: a product of the unit count, not a division)."""
        s = self.same
        B, C, _ = audio.shape
        count = frames * (s.hop // s.patch)  # s.patchify, with explicit sizes
        patches = audio.reshape(B, C, count, s.patch).permute(0, 1, 3, 2).reshape(B, C * s.patch, count)
        x = resample(s.encoder.layers[0], patches, token_noise, frames)  # (B, D, Fp)
        x = s.encoder.layers[2](x.transpose(1, 2)).transpose(1, 2)  # (B, C, Fp)
        return s.bottleneck.encode(x)


class SameDecoderWindowGraph(nn.Module):
    """One decode window: latents and bottleneck_noise [B, C, Fp] (zero past the real frames),
    token_noise [B, Fp, 16, D], frame_valid float [Fp] (1 = real) -> audio [B, 2, Fp * 4096]
    (crop to the real frames)."""

    def __init__(self, same: ReleasedAutoencoder) -> None:
        super().__init__()
        self.same = same

    def forward(self, latents, bottleneck_noise, token_noise, frame_valid) -> torch.Tensor:
        s, bottleneck = self.same, self.same.bottleneck
        z = latents * bottleneck.running_std + bottleneck_noise * bottleneck.running_std * 1e-3
        x = s.decoder.layers[1](z.transpose(1, 2))  # (B, Fp, D)
        x = x * frame_valid[None, :, None]  # the eager decoder pads with zeros after this projection
        audio = s.unpatchify(resample(s.decoder.layers[3], x, token_noise, latents.shape[-1]))  # (B, 2, Fp * 4096)
        return torch.tanh(audio) if s.soft_clip else audio


class ReleasedConditionGraph(nn.Module):
    """Once per request: context [B, S, cond_token_dim], global [B, global_cond_dim] ->
    global_embed [B, E], keys [depth, B, splits, H, S, hd], values [depth, B, H, S, hd]."""

    def __init__(self, dit: ReleasedDiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, context: torch.Tensor, global_cond: torch.Tensor):
        cond = self.dit.encode_condition(context, global_cond)
        return cond.global_embed, torch.stack(cond.keys), torch.stack(cond.values)


class TimestepFeatures(nn.Module):
    """``ExpoFourierFeatures`` with its frequencies computed once, by torch, as a buffer."""

    def __init__(self, features) -> None:
        super().__init__()
        ramp = torch.linspace(0, 1, features.dim // 2, dtype=torch.float32)
        log_min, log_max = math.log(features.min_freq), math.log(features.max_freq)
        self.register_buffer("freqs", torch.exp(ramp * (log_max - log_min) + log_min), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = t.dtype
        angles = t.float().reshape(-1, 1) * self.freqs * 2 * math.pi  # (B, dim/2), the eager order of products
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)


class ReleasedStepGraph(nn.Module):
    """One sampler step: x [B, C, T], t [B], the stacked condition, local [B, C + 1, T]
    (concat(mask, mask * latents); zeros for plain generation), frame_mask bool [B, T] -> v [B, C, T]."""

    def __init__(self, dit: ReleasedDiT) -> None:
        super().__init__()
        self.dit = dit
        self.features = TimestepFeatures(dit.timestep_features)

    def forward(self, x, t, global_embed, keys, values, local, frame_mask):
        cond = ReleasedCondition(global_embed, list(keys.unbind(0)), list(values.unbind(0)))
        return self.run(x, t, cond, local, frame_mask)

    def run(self, x, t, cond: ReleasedCondition, local, frame_mask) -> torch.Tensor:
        """The DiT's forward with :class:`TimestepFeatures` in place of its own."""
        eager = self.dit.timestep_features
        self.dit.timestep_features = self.features  # the same numbers, frequencies as constants
        try:
            return self.dit(x, t, cond, local, frame_mask)
        finally:
            self.dit.timestep_features = eager


class T5GemmaGraph(nn.Module):
    """input_ids int64 [B, L], attention_mask bool [B, L] -> last hidden state float32 [B, L, 768]."""

    def __init__(self, encoder: T5GemmaEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask).float()
