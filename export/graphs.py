"""Export-friendly views of the model parts: plain tensors in, plain tensors out.

Exporters (ONNX, CoreML) trace a ``forward`` with tensors only, so each part gets a small
wrapper module here. They hold the real model's weights (no copies) and compute the same
numbers; the parity tests in tests/export/ tie each wrapper to the eager model.

Two places in the eager models branch on values or on lengths in Python, which an exporter
would freeze at the example's length:
- ``sa3core.modules.attention._key_mask`` skips the mask when every key is real
  (``bool(mask.all())`` reads data). :func:`exporting` swaps it for the always-masked form,
  which gives the same numbers (a True mask adds zeros to the scores).
- ``LocalTransformer.forward`` (SAME) picks "no padding, no mask" when the length fills
  whole windows. :func:`local_transformer` is its twin that always pads (by zero frames when
  none are needed) and always masks, with every length kept symbolic.

Tensor names and shapes are the manifest's (``export/manifest.py``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from sa3core.models.dit import Condition, DiT
from sa3core.models.same import SAME
from sa3core.modules import attention
from sa3core.modules.transformer import LocalTransformer


def _always_masked(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S)


@contextlib.contextmanager
def exporting():
    """Within this block the attention layers never branch on mask values."""
    original = attention._key_mask
    attention._key_mask = _always_masked
    try:
        yield
    finally:
        attention._key_mask = original


def local_transformer(module: LocalTransformer, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for x [B, frames, T, width] with no length-dependent Python branch."""
    B, frames, T, width = x.shape
    W = module.window_frames
    span = W * T  # tokens per window
    for index, block in enumerate(module.blocks):
        shift = 0 if index % 2 == 0 else W // 2  # odd layers move the window grid by half a window
        back = (-(shift + frames)) % W
        total = shift + frames + back
        windows = total // W
        padded = F.pad(x, (0, 0, 0, 0, shift, back))  # (B, total, T, width)
        position = torch.arange(total, device=x.device)
        valid = (position >= shift) & (position < shift + frames)  # (total,) real frames
        mask = valid.view(windows, W, 1).expand(windows, W, T).reshape(1, windows, span)  # (1, windows, W*T)
        row_mask = mask.expand(B, windows, span).reshape(B * windows, 1, 1, span)
        rows = padded.reshape(B * windows, span, width)  # (B * windows, W * T, width)
        out = block(rows, module.cos, module.sin, row_mask).view(B, total, T, width)
        x = out[:, shift : shift + frames]  # (B, frames, T, width)
    return x


class SAMEEncoderGraph(nn.Module):
    """audio float32 [B, 2, frames * 4096] -> latents float32 [B, 256, frames] (no chunking)."""

    def __init__(self, same: SAME) -> None:
        super().__init__()
        self.same = same

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.same._encode_frames(audio, local_transformer)  # (B, 256, F)


class SAMEDecoderGraph(nn.Module):
    """latents float32 [B, 256, frames] -> audio float32 [B, 2, frames * 4096] rendered with the
    head's own phases, and the head's spectra (log magnitude, phase), each [B, 2, frames * stride,
    head_bins], from which a backend refines the phases eagerly (``sa3core.models.same.refine_phase``,
    FFTs, which the graphs do not hold). No chunking."""

    def __init__(self, same: SAME) -> None:
        super().__init__()
        self.same = same

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.same
        outputs = s.decoder_outputs(latents, local_transformer)  # (B, F, stride, width)
        log_magnitude, phase = s.head_spectra(outputs, latents=latents)  # (B, 2, F*stride, head_bins) each
        return s.spectra_to_audio(log_magnitude, phase), log_magnitude, phase


class DiTConditionGraph(nn.Module):
    """Once per request: text tokens [B, L, D], text_mask bool [B, L], seconds [B] ->
    duration [B, width], context_mask bool [B, 2+L], keys [depth, B, H, splits, 2+L, qk_dim],
    values [depth, B, H, 2+L, head_dim] (every block's cross-attention keys/values, stacked).
    A DiT with music conditioning also takes music [B, 27] (sa3core.musical)."""

    def __init__(self, dit: DiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, text_tokens, text_mask, seconds, music=None):
        cond = self.dit.encode_condition(text_tokens, text_mask, seconds, music)
        return cond.duration, cond.mask, torch.stack(cond.keys), torch.stack(cond.values)


class DiTStepGraph(nn.Module):
    """One sampler step: the velocity [B, 256, T] from x, t and a stacked condition (and, with
    music conditioning, the music rows: their beat columns set the per-frame beat phases)."""

    def __init__(self, dit: DiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self, x, t, duration, context_mask, keys, values, inpaint_latents, inpaint_mask, frame_mask, music=None
    ):
        cond = Condition(duration, context_mask, list(keys.unbind(0)), list(values.unbind(0)), music)
        return self.dit(x, t, cond, inpaint_latents, inpaint_mask, frame_mask)


def stack_condition(cond: Condition) -> tuple[torch.Tensor, ...]:
    """A torch :class:`Condition` as the step graph's four condition inputs."""
    return cond.duration, cond.mask, torch.stack(cond.keys), torch.stack(cond.values)


class MiniLMGraph(nn.Module):
    """input_ids int64 [B, L], mask bool [B, L] -> per-token hidden float32 [B, L, 384] (zeros at padding)."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder
        # Hold the weights as buffers so the exporter stores them as initializers, not constants it folds.
        for index, (_name, weight) in enumerate(sorted(encoder.weights.items())):
            self.register_buffer(f"w{index}", weight, persistent=False)
        self._names = [name for name, _ in sorted(encoder.weights.items())]

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        original = self.encoder.weights
        self.encoder.weights = {name: getattr(self, f"w{i}") for i, name in enumerate(self._names)}
        try:
            return self.encoder._bert(input_ids, mask) * mask[..., None]
        finally:
            self.encoder.weights = original
