"""SAME: the transformer autoencoder between 44.1 kHz stereo audio and 256-channel latents.

Shape of the model (SAME-S style, sizes from :class:`SAMEConfig`):

    audio [B, 2, S] --pad to F*4096--> patch tokens of `patch` samples; each latent frame owns
      `stride` = 4096/patch of them. A token's input is its raw stereo patch plus the log
      magnitude spectrum (both channels) of a Hann window 4 patches long around it
      (:func:`spectral_frames`): loudness and pitch are then linear in the input, which the
      raw waveform alone is not, and the encoder no longer collapses to a near-constant latent.
    encoder Transformer Resampling Block: after every group of `stride` patch tokens one learned
      *summary* token is interleaved -> [B, F, stride+1, width]; local attention; keep the summaries
      -> [B, F, width] -> linear -> 256 channels -> running-statistics normalisation -> latents [B, 256, F]
    decoder TRB: each latent token (linear to width) is followed by `stride` learned *output*
      tokens -> [B, F, 1+stride, width]; local attention; keep the output tokens; each predicts a
      short-time spectrum per channel (log magnitude and phase of the same 4-patch window), which
      an inverse DFT and windowed overlap-add at hop `patch` turn into audio [B, 2, F*4096]
      (:meth:`SAME.tokens_to_audio`, a Vocos-style head: smooth joins between tokens and a
      magnitude the loss reaches directly).

The DFTs are matrix products with fixed bases, so the export graphs (ONNX, Core ML) run
exactly the eager code and need no FFT operator.

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

import contextlib
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

SPECTRAL_PATCHES = 4  # the front end's and the head's window spans 4 patches (hop = 1 patch)
POWER_SCALE = 1e8  # the front end's floor on |X|^2 is 1 / POWER_SCALE (-80 dB re |X| = 1)
LOG_POWER_SCALE = 18.420680743952367  # log(POWER_SCALE)
MAX_LOG_MAGNITUDE = 8.0  # the head's log magnitudes are clamped here (|X| = 2981, far above full scale)


def dft_bases(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-DFT bases for ``size`` samples, float32: ``forward [size, 2*bins]`` (x @ forward =
    [re, im] of rfft) and ``inverse [2*bins, size]`` ([re, im] @ inverse = irfft), bins = size/2+1."""
    bins = size // 2 + 1
    angle = 2.0 * torch.pi * torch.arange(bins, dtype=torch.float64)[:, None] * torch.arange(size)[None, :] / size
    forward = torch.cat([angle.cos(), -angle.sin()], dim=0).T  # (size, 2*bins)
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once in the full spectrum
    inverse = torch.cat([weight * angle.cos(), -weight * angle.sin()], dim=0) / size  # (2*bins, size)
    return forward.float(), inverse.float()


def phase_advance(tokens: int, bins: int) -> torch.Tensor:
    """[tokens, bins] float32: the phase (mod 2 pi) that a sinusoid at bin k's centre has reached
    in frame n, relative to frame 0. A 4-patch window makes that (pi/2) k n: periodic in n with
    period 4, so a chunk that starts on a latent frame (16 patches) sees the same pattern."""
    n = torch.arange(tokens, dtype=torch.float64)[:, None] % SPECTRAL_PATCHES
    k = torch.arange(bins, dtype=torch.float64)[None, :]
    return torch.remainder(2.0 * torch.pi * k * n / SPECTRAL_PATCHES, 2.0 * torch.pi).float()


def peak_offsets(log_magnitude: torch.Tensor, softness: float = 0.05) -> torch.Tensor:
    """Per bin, where the spectral peak it belongs to lies, in bins from the bin's centre, [-1, 1].

    The vertex of the parabola through the log magnitudes of bins k-1, k, k+1 (a Hann window's
    main lobe is close to a parabola in log magnitude, so any three of its bins point at the
    same vertex). A smooth function of the magnitudes, so an exported graph's rounding never
    flips a bin between branches: the vertex formula is written as ``0.5 (l - r) c / (c^2 + e)``
    and faded out where the curve is not concave (a valley, or flat noise). The edge bins use
    their own magnitude as the missing neighbour. Detached: it steers the phases only.
    """
    magnitude = log_magnitude.detach()
    left = torch.cat([magnitude[..., :1], magnitude[..., :-1]], dim=-1)
    right = torch.cat([magnitude[..., 1:], magnitude[..., -1:]], dim=-1)
    curvature = left - 2.0 * magnitude + right
    vertex = 0.5 * (left - right) * curvature / (curvature.square() + softness**2)
    return vertex.clamp(-1.0, 1.0) * torch.sigmoid(-curvature / softness)


def spectral_frames(patches: torch.Tensor) -> torch.Tensor:
    """patches [..., N, P] -> frames [..., N, 4P]: frame n spans patches n-2 .. n+1 (zeros past the ends)."""
    padded = F.pad(patches, (0, 0, 2, 1))  # (..., N+3, P)
    N = patches.shape[-2]
    return torch.cat([padded[..., j : j + N, :] for j in range(SPECTRAL_PATCHES)], dim=-1)


def overlap_add(frames: torch.Tensor) -> torch.Tensor:
    """frames [..., N, 4P] (frame n spans patches n-2 .. n+1) -> audio [..., N*P]; the inverse
    layout of :func:`spectral_frames`, summing the 4 frames that cover each patch."""
    *lead, N, span = frames.shape
    P = span // SPECTRAL_PATCHES
    blocks = F.pad(frames.reshape(*lead, N, SPECTRAL_PATCHES, P), (0, 0, 0, 0, 1, 2))  # (..., N+3, 4, P)
    # patch b receives block j of frame b + 2 - j, which sits at padded row b + 3 - j
    out = sum(blocks[..., 3 - j : 3 - j + N, j, :] for j in range(SPECTRAL_PATCHES))  # (..., N, P)
    return out.reshape(*lead, N * P)


def float32_region(tensor: torch.Tensor):
    """A context with autocast off where it is on (the DFTs need float32: bf16 keeps ~3 digits of
    a spectrum whose bins span 80 dB); a no-op otherwise, so the export graphs hold no autocast."""
    device = tensor.device.type
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else contextlib.nullcontext()


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
    # The head's phases advance by pi*k/2 per hop in bin k (a stationary sinusoid at the bin's
    # centre), so the network predicts only the deviation. False = free phases (the first
    # shipped default): predicted as near-constant, they made every output periodic in the hop,
    # a buzz at 44100/256 = 172 Hz and its harmonics that outweighed the music (every held-out
    # reconstruction's key came out F major, the key of that harmonic series).
    phase_prior: bool = False
    # With the prior: bins near a spectral peak advance at the peak's frequency, read off the
    # predicted log magnitudes by parabolic interpolation (:func:`peak_offsets`) and summed over
    # the tokens of each latent frame. Without it every sinusoid is rendered at a bin centre,
    # 43 Hz apart: a note between bins came out as two beating tones and any flat spectrum
    # as a 43 Hz comb (the harmonics of F1, again an F major chroma).
    peak_frequency: bool = False


SAME_PRESETS: dict[str, SAMEConfig] = {
    # a few M parameters: trains to useful quality on 2 CPU cores in well under an hour
    "tiny": SAMEConfig(phase_prior=True, peak_frequency=True),
    # the paper's SAME-S shape (~108M, ~54M decoder): for speed benchmarks and GPU training
    "small": SAMEConfig(
        width=768,
        heads=12,
        encoder_layers=8,
        decoder_layers=8,
        mlp_hidden=1920,
        chunk_frames=128,
        phase_prior=True,
        peak_frequency=True,
    ),
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

        window = SPECTRAL_PATCHES * config.patch
        self.bins = window // 2 + 1
        forward_basis, inverse_basis = dft_bases(window)
        self.register_buffer("window", torch.hann_window(window, periodic=True), persistent=False)
        self.register_buffer("dft_forward", forward_basis, persistent=False)
        self.register_buffer("dft_inverse", inverse_basis, persistent=False)
        self.register_buffer("phase_advance", phase_advance(self.stride, self.bins), persistent=False)

        # a token's input: its raw stereo patch and the log magnitude spectrum of both channels
        self.patch_in = nn.Linear(CHANNELS * (config.patch + self.bins), width)
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
        self.patch_out = nn.Linear(width, CHANNELS * 2 * self.bins)  # per channel: log magnitude, phase
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
    def encoder_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, F*4096] -> the encoder TRB's input [B, F, stride+1, width] (shared with the export graphs)."""
        B, _, samples = audio.shape
        frames, P = samples // SAMPLES_PER_FRAME, self.config.patch
        patches = audio.float().reshape(B, CHANNELS, frames * self.stride, P)  # (B, 2, N, P), N = F*stride
        with float32_region(audio):
            spectra = (spectral_frames(patches) * self.window) @ self.dft_forward  # (B, 2, N, 2*bins): re, im
            power = spectra[..., : self.bins].square() + spectra[..., self.bins :].square()
            # 0.125 log(|X|^2 + 1e-8), scaled to about unit size. Written as log(1e8 |X|^2 + 1) - log(1e8),
            # the same number: the ONNX exporter's optimiser drops "+ 1e-8" as an add of zero,
            # which turns silent bins into -inf.
            log_magnitude = 0.125 * (torch.log(power * POWER_SCALE + 1.0) - LOG_POWER_SCALE)
        features = torch.cat([patches, log_magnitude], dim=-1)  # (B, 2, N, P + bins)
        features = features.permute(0, 2, 1, 3).reshape(B, frames, self.stride, CHANNELS * (P + self.bins))
        tokens = self.patch_in(features) + self.patch_position  # (B, F, stride, width)
        summary = self.summary.to(tokens.dtype).expand(B, frames, 1, -1)  # (B, F, 1, width)
        return torch.cat([tokens, summary], dim=2)

    def _encode_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, F*4096] -> normalised latents [B, 256, F]."""
        sequence = self.encoder(self.encoder_tokens(audio))  # (B, F, stride+1, width)
        latents = self.to_latent(self.encoder_norm(sequence[:, :, -1]))  # (B, F, 256)
        return self.latent_norm(latents.transpose(1, 2).float())  # (B, 256, F)

    def tokens_to_audio(self, outputs: torch.Tensor, frame_valid: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's output tokens [B, F, stride, width] -> audio float32 [B, 2, F*4096] (shared with export).

        Each token predicts, per channel, the log magnitude and the phase of a 4-patch spectrum;
        the inverse DFT, a Hann synthesis window and overlap-add at hop ``patch`` (normalised by
        the summed window, so every sample gets unit gain) give the waveform. ``frame_valid``
        (float [B, F], 1 = real frame) lets a graph padded to whole windows (Core ML) leave its
        padding frames out of the overlap-add, so the real samples equal an unpadded decode.
        """
        B, frames, stride, _ = outputs.shape
        N = frames * stride
        spectra = self.patch_out(self.decoder_norm(outputs)).float()  # (B, F, stride, 2 * 2 * bins)
        spectra = spectra.reshape(B, frames, stride, CHANNELS * 2, self.bins)  # rank 5 at most: Core ML
        log_magnitude, phase = spectra[:, :, :, 0::2], spectra[:, :, :, 1::2]  # (B, F, stride, 2, bins)
        if self.config.phase_prior:  # the same pattern in every latent frame: stride is a multiple of 4
            phase = phase + self.phase_advance[:, None, :]
            if self.config.peak_frequency:  # (pi/2) * offset per hop, accumulated within each latent frame
                phase = phase + torch.cumsum(peak_offsets(log_magnitude.float()) * (torch.pi / 2), dim=2)
        log_magnitude = log_magnitude.reshape(B, N, CHANNELS, self.bins).transpose(1, 2)  # (B, 2, N, bins)
        phase = phase.reshape(B, N, CHANNELS, self.bins).transpose(1, 2)
        with float32_region(outputs):
            magnitude = torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE))
            spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
            frames_out = (spectrum @ self.dft_inverse) * self.window  # (B, 2, N, 4P)
            window = self.window.expand(N, -1)  # (N, 4P)
            if frame_valid is not None:
                valid = frame_valid.float().repeat_interleave(stride, dim=1)[:, None, :, None]  # (B, 1, N, 1)
                frames_out, window = frames_out * valid, window * valid
            gain = overlap_add(window)  # (N*P,) or (B, 1, N*P): the summed window at every sample
            return overlap_add(frames_out) / gain.clamp_min(1e-3)

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
        sequence = self.decoder(self.decoder_tokens(latents))  # (B, F, 1+stride, width)
        return self.tokens_to_audio(sequence[:, :, 1:])  # (B, 2, F*4096)

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
        # + 1: the spectral windows reach 2 patches into the neighbouring frames; rounded up to
        # whole attention windows so that a chunk with this context still starts on the window grid
        reach = max(self.encoder.receptive_frames, self.decoder.receptive_frames) + 1
        return -(-reach // self.config.window_frames) * self.config.window_frames

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
