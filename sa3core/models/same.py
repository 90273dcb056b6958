"""SAME: the transformer autoencoder between 44.1 kHz stereo audio and 256-channel latents.

Shape of the model (SAME-S style, sizes from :class:`SAMEConfig`):

    audio [B, 2, S] --pad to F*4096--> patches of `patch` samples x 2 channels [B, F*stride, 2*patch]
      --linear--> tokens; each latent frame owns `stride` = 4096/patch patch tokens
    encoder Transformer Resampling Block: after every group of `stride` patch tokens one learned
      *summary* token is interleaved -> [B, F, stride+1, width]; local attention; keep the summaries
      -> [B, F, width] -> linear -> 256 channels -> running-statistics normalisation -> latents [B, 256, F]
    decoder TRB: each latent token (linear to width) is followed by `stride` learned *output*
      tokens -> [B, F, 1+stride, width]; local attention; keep the output tokens -> linear -> patches
      -> audio [B, 2, F*4096]

Attention is local (windows of a few latent frames, shifted by half a window in alternate
layers, see :mod:`sa3core.modules.transformer`), so cost and memory grow linearly with length.
Long inputs are additionally processed in chunks of ``chunk_frames`` with ``receptive_frames``
of context on each side, which gives the same numbers as one pass (tested to 1e-5) while
keeping peak memory flat for 6 min 20 s of audio.

Contract: ``encode(audio float32 [B, 2, S]) -> [B, 256, ceil(S/4096)]`` for any S >= 1 (the
end is zero-padded); ``decode(latents [B, 256, F]) -> [B, 2, F*4096]``; callers crop to the
sample count they want. Both run under ``torch.inference_mode``; ``forward`` is the training
path (gradients, statistics updates).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import MODELS, ModelKind
from ..config import to_dict
from ..errors import Sa3Error
from ..modules.norm import RMSNorm, RunningNorm
from ..modules.transformer import LocalTransformer
from ..timebase import CHANNELS, LATENT_CHANNELS, SAMPLES_PER_FRAME, samples_to_frames


@dataclass
class SAMEConfig:
    """Constructor schema of :class:`SAME` (latent size and hop come from sa3core.timebase)."""

    width: int = 128
    heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 6
    mlp_hidden: int = 384  # SwiGLU inner size
    patch: int = 256  # samples per patch token; 4096 / patch tokens per latent frame
    window_frames: int = 4  # attention window in latent frames (even; odd layers shift it by half)
    chunk_frames: int = 256  # encode/decode longer inputs in chunks of this many frames; 0 = one pass
    latent_momentum: float = 0.01  # EMA momentum of the latent running statistics


SAME_PRESETS: dict[str, SAMEConfig] = {
    # a few M parameters: trains to useful quality on 2 CPU cores in well under an hour
    "tiny": SAMEConfig(),
    # the paper's SAME-S shape (~108M, ~54M decoder): for speed benchmarks and GPU training
    "small": SAMEConfig(width=768, heads=12, encoder_layers=8, decoder_layers=8, mlp_hidden=1920, chunk_frames=128),
}


def same_preset(name: str) -> SAMEConfig:
    """A copy of the named preset; Sa3Error naming the choices for an unknown name."""
    if name not in SAME_PRESETS:
        raise Sa3Error(f"unknown SAME preset {name!r}; choose one of {', '.join(sorted(SAME_PRESETS))}")
    return SAMEConfig(**vars(SAME_PRESETS[name]))


class SAME(nn.Module):
    def __init__(self, config: SAMEConfig) -> None:
        super().__init__()
        if SAMPLES_PER_FRAME % config.patch:
            raise Sa3Error(f"SAME patch {config.patch} must divide the {SAMPLES_PER_FRAME}-sample latent frame")
        if config.chunk_frames and config.chunk_frames % config.window_frames:
            raise Sa3Error(f"SAME chunk_frames {config.chunk_frames} must be a multiple of window_frames")
        self.config = config
        width = config.width
        self.stride = SAMPLES_PER_FRAME // config.patch  # patch tokens per latent frame
        trb = dict(width=width, heads=config.heads, mlp_hidden=config.mlp_hidden, window_frames=config.window_frames)

        self.patch_in = nn.Linear(CHANNELS * config.patch, width)
        self.patch_position = nn.Parameter(torch.randn(self.stride, width) * 0.02)  # where in its frame a patch sits
        self.summary = nn.Parameter(torch.randn(width) * 0.02)  # the encoder's per-frame summary token
        self.encoder = LocalTransformer(layers=config.encoder_layers, tokens_per_frame=self.stride + 1, **trb)
        self.encoder_norm = RMSNorm(width)
        self.to_latent = nn.Linear(width, LATENT_CHANNELS)
        self.latent_norm = RunningNorm(LATENT_CHANNELS, config.latent_momentum)

        self.from_latent = nn.Linear(LATENT_CHANNELS, width)
        self.outputs = nn.Parameter(torch.randn(self.stride, width) * 0.02)  # the decoder's learned output tokens
        self.decoder = LocalTransformer(layers=config.decoder_layers, tokens_per_frame=self.stride + 1, **trb)
        self.decoder_norm = RMSNorm(width)
        self.patch_out = nn.Linear(width, CHANNELS * config.patch)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # residual branches start near zero so every block starts close to identity
        for transformer in (self.encoder, self.decoder):
            for block in transformer.blocks:
                nn.init.normal_(block.attn.out.weight, std=0.02 / (2 * len(transformer.blocks)) ** 0.5)
                nn.init.normal_(block.mlp.down.weight, std=0.02 / (2 * len(transformer.blocks)) ** 0.5)

    # ---- the two halves on whole frames (no padding, no chunking) ----
    def _encode_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, F*4096] -> normalised latents [B, 256, F]."""
        B, _, samples = audio.shape
        frames = samples // SAMPLES_PER_FRAME
        patches = audio.reshape(B, CHANNELS, frames * self.stride, self.config.patch)  # (B, 2, F*stride, patch)
        patches = patches.permute(0, 2, 1, 3).reshape(B, frames, self.stride, CHANNELS * self.config.patch)
        tokens = self.patch_in(patches) + self.patch_position  # (B, F, stride, width)
        summary = self.summary.to(tokens.dtype).expand(B, frames, 1, -1)  # (B, F, 1, width)
        sequence = self.encoder(torch.cat([tokens, summary], dim=2))  # (B, F, stride+1, width)
        latents = self.to_latent(self.encoder_norm(sequence[:, :, -1]))  # (B, F, 256)
        return self.latent_norm(latents.transpose(1, 2).float())  # (B, 256, F)

    def decoder_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 256, F] -> the decoder TRB's input [B, F, 1+stride, width] (shared with the export graphs).

        Each output token also carries its frame's latent directly: reached through attention
        alone, the latent was diluted over the window and the decoder learned to ignore it
        (decode(z1) - decode(z2) fell to 0.7 % of the signal after 500 training steps).
        """
        heads = self.from_latent(latents.transpose(1, 2))[:, :, None]  # (B, F, 1, width)
        outputs = self.outputs.to(heads.dtype) + heads  # (B, F, stride, width)
        return torch.cat([heads, outputs], dim=2)

    def _decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 256, F] -> audio [B, 2, F*4096]."""
        B, _, frames = latents.shape
        sequence = self.decoder(self.decoder_tokens(latents))  # (B, F, 1+stride, width)
        patches = self.patch_out(self.decoder_norm(sequence[:, :, 1:]))  # (B, F, stride, 2*patch)
        patches = patches.float().reshape(B, frames * self.stride, CHANNELS, self.config.patch)
        return patches.permute(0, 2, 1, 3).reshape(B, CHANNELS, frames * SAMPLES_PER_FRAME)  # (B, 2, F*4096)

    # ---- training path ----
    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training/eval pass with gradients: audio [B, 2, S] -> (latents [B, 256, F], reconstruction [B, 2, S])."""
        samples = audio.shape[-1]
        latents = self._encode_frames(pad_to_frames(audio))
        return latents, self._decode_frames(latents)[..., :samples]

    # ---- inference path ----
    @torch.inference_mode()
    def encode(self, audio: torch.Tensor, chunk_frames: int | None = None, bf16: bool = False) -> torch.Tensor:
        """audio float32 [B, 2, S], S >= 1 -> latents float32 [B, 256, ceil(S/4096)] (deterministic)."""
        if audio.ndim != 3 or audio.shape[1] != CHANNELS or audio.shape[2] < 1:
            raise Sa3Error(f"SAME.encode takes audio [batch, {CHANNELS}, samples >= 1], got {tuple(audio.shape)}")
        padded = pad_to_frames(audio.float())
        with torch.autocast(audio.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self._chunked(
                self._encode_frames, padded, padded.shape[-1] // SAMPLES_PER_FRAME, SAMPLES_PER_FRAME, 1, chunk_frames
            ).float()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, chunk_frames: int | None = None, bf16: bool = False) -> torch.Tensor:
        """latents [B, 256, F], F >= 1 -> audio float32 [B, 2, F*4096] (crop to the samples you need)."""
        if latents.ndim != 3 or latents.shape[1] != LATENT_CHANNELS or latents.shape[2] < 1:
            raise Sa3Error(
                f"SAME.decode takes latents [batch, {LATENT_CHANNELS}, frames >= 1], got {tuple(latents.shape)}"
            )
        with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self._chunked(
                self._decode_frames, latents.float(), latents.shape[-1], 1, SAMPLES_PER_FRAME, chunk_frames
            ).float()

    @property
    def receptive_frames(self) -> int:
        """Context (in latent frames, per side) that makes chunked processing exact."""
        return max(self.encoder.receptive_frames, self.decoder.receptive_frames)

    def _chunked(self, run, x: torch.Tensor, frames: int, in_per_frame: int, out_per_frame: int, chunk_frames):
        """Apply ``run`` to slices of ``x`` (last axis, ``in_per_frame`` units per frame) and join.

        Chunks start on window borders and carry ``receptive_frames`` of context on each side,
        which is cropped off again, so the joined result equals ``run(x)``.
        """
        chunk = self.config.chunk_frames if chunk_frames is None else chunk_frames
        if chunk and chunk % self.config.window_frames:
            raise Sa3Error(f"chunk_frames {chunk} must be a multiple of window_frames {self.config.window_frames}")
        if not chunk or frames <= chunk:
            return run(x)
        context = self.receptive_frames
        pieces = []
        for start in range(0, frames, chunk):
            end = min(frames, start + chunk)
            lo, hi = max(0, start - context), min(frames, end + context)
            out = run(x[..., lo * in_per_frame : hi * in_per_frame])
            pieces.append(out[..., (start - lo) * out_per_frame : (end - lo) * out_per_frame])
        return torch.cat(pieces, dim=-1)


def pad_to_frames(audio: torch.Tensor) -> torch.Tensor:
    """Zero-pad the end of audio [..., S] to a whole number of latent frames."""
    samples = audio.shape[-1]
    return F.pad(audio, (0, samples_to_frames(samples) * SAMPLES_PER_FRAME - samples))


def model_identity(model: SAME) -> str:
    """A short hash of the model's config and weights: latents are only meaningful to the same model."""
    digest = hashlib.sha256(json.dumps(to_dict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


MODELS.register("same")(ModelKind(SAMEConfig, SAME))
