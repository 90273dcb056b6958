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
import dataclasses
import functools
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
from ..timebase import CHANNELS, LATENT_CHANNELS, SAMPLE_RATE, SAMPLES_PER_FRAME, samples_to_frames

SPECTRAL_PATCHES = 4  # the front end's and the head's window spans 4 patches (hop = 1 patch)
POWER_SCALE = 1e8  # the front end's floor on |X|^2 is 1 / POWER_SCALE (-80 dB re |X| = 1)
LOG_POWER_SCALE = 18.420680743952367  # log(POWER_SCALE)
MAX_LOG_MAGNITUDE = 8.0  # the head's log magnitudes are clamped here (|X| = 2981, far above full scale)


def _dft_cos_sin(size: int, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi k n / size, float32 [bins, size], from one period indexed by k n mod
    size: exact, and ``size`` trigonometric evaluations instead of ``bins * size`` (a 4096-point
    basis the direct way took 0.4 s of a cold ``sa3 generate``)."""
    index = (torch.arange(bins)[:, None] * torch.arange(size)[None, :]) % size
    period = 2.0 * torch.pi * torch.arange(size, dtype=torch.float64) / size
    return period.cos().float()[index], period.sin().float()[index]


def dft_forward(size: int, bins: int | None = None) -> torch.Tensor:
    """float32 [size, 2*bins]: x @ forward = [re, im] of rfft (bins = size/2+1, or the first ``bins``)."""
    cos, sin = _dft_cos_sin(size, size // 2 + 1 if bins is None else bins)
    return torch.cat([cos, -sin], dim=0).T


def dft_inverse(size: int, bins: int | None = None) -> torch.Tensor:
    """float32 [2*bins, size]: [re, im] @ inverse = irfft (with fewer ``bins``, the partial sum over them)."""
    full = size // 2 + 1
    bins = full if bins is None else bins
    cos, sin = _dft_cos_sin(size, bins)
    weight = torch.full((bins, 1), 2.0)
    weight[0] = 1.0  # DC and Nyquist appear once in the full spectrum
    if bins == full:
        weight[-1] = 1.0
    return torch.cat([weight * cos, -weight * sin], dim=0) / size


def dft_bases(size: int, bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-DFT bases for ``size`` samples: (:func:`dft_forward`, :func:`dft_inverse`)."""
    return dft_forward(size, bins), dft_inverse(size, bins)


def phase_advance(tokens: int, bins: int, span: int = SPECTRAL_PATCHES) -> torch.Tensor:
    """[tokens, bins] float32: the phase (mod 2 pi) that a sinusoid at bin k's centre has reached
    in frame n, relative to frame 0, for a window of ``span`` patches (hop = 1 patch): that is
    2 pi k n / span, periodic in n with period ``span``, so a chunk that starts on a latent frame
    (16 patches, a multiple of ``span``) sees the same pattern."""
    n = torch.arange(tokens, dtype=torch.float64)[:, None] % span
    k = torch.arange(bins, dtype=torch.float64)[None, :]
    return torch.remainder(2.0 * torch.pi * k * n / span, 2.0 * torch.pi).float()


def peak_offsets(log_magnitude: torch.Tensor, softness: float = 0.05) -> torch.Tensor:
    """Per bin, where the spectral peak it belongs to lies, in bins from the bin's centre, [-1, 1].

    The vertex of the parabola through the log magnitudes of bins k-1, k, k+1 (a Hann window's
    main lobe is close to a parabola in log magnitude, so any three of its bins point at the
    same vertex). A smooth function of the magnitudes, so an exported graph's rounding never
    flips a bin between branches: the vertex formula is written as ``0.5 (l - r) c / (c^2 + e)``
    and faded out where the curve is not concave (a valley, or flat noise). The edge bins use
    their own magnitude as the missing neighbour. Detached: it steers the phases only.
    """
    # (no detach without gradients: an exported graph would hold it as an alias node, which
    # Core ML's converter refuses)
    magnitude = log_magnitude.detach() if log_magnitude.requires_grad else log_magnitude
    left = torch.cat([magnitude[..., :1], magnitude[..., :-1]], dim=-1)
    right = torch.cat([magnitude[..., 1:], magnitude[..., -1:]], dim=-1)
    curvature = left - 2.0 * magnitude + right
    vertex = 0.5 * (left - right) * curvature / (curvature.square() + softness**2)
    return vertex.clamp(-1.0, 1.0) * torch.sigmoid(-curvature / softness)


def spectral_frames(patches: torch.Tensor, span: int = SPECTRAL_PATCHES) -> torch.Tensor:
    """patches [..., N, P] -> frames [..., N, span*P]: frame n spans patches n - span/2 .. n + span/2 - 1
    (zeros past the ends)."""
    half = span // 2
    padded = F.pad(patches, (0, 0, half, half - 1))  # (..., N+span-1, P)
    N = patches.shape[-2]
    return torch.cat([padded[..., j : j + N, :] for j in range(span)], dim=-1)


def overlap_add(frames: torch.Tensor, span: int = SPECTRAL_PATCHES) -> torch.Tensor:
    """frames [..., N, span*P] (frame n spans patches n - span/2 .. n + span/2 - 1) -> audio [..., N*P];
    the inverse layout of :func:`spectral_frames`, summing the ``span`` frames that cover each patch."""
    *lead, N, width = frames.shape
    P, half = width // span, span // 2
    blocks = F.pad(frames.reshape(*lead, N, span, P), (0, 0, 0, 0, half - 1, half))  # (..., N+span-1, span, P)
    # patch b receives block j of frame b + span/2 - j, which sits at padded row b + span - 1 - j
    out = sum(blocks[..., span - 1 - j : span - 1 - j + N, j, :] for j in range(span))  # (..., N, P)
    return out.reshape(*lead, N * P)


def overlap_add_eager(frames: torch.Tensor, span: int = SPECTRAL_PATCHES) -> torch.Tensor:
    """:func:`overlap_add` for eager torch: the same sum, accumulated in place into one buffer
    instead of padding the frames and adding ``span`` shifted copies (a third fewer passes over
    memory in :meth:`SAME.refine_phase`; in-place slice writes have no place in export graphs)."""
    *lead, N, width = frames.shape
    P, half = width // span, span // 2
    blocks = frames.reshape(*lead, N, span, P)
    out = frames.new_zeros(*lead, N + span - 1, P)  # row r holds patch r - span/2; the ends fall off
    for j in range(span):  # block j of frame n is patch n - half + j: row n + j of the buffer
        out[..., j : j + N, :] += blocks[..., j, :]
    return out[..., half : half + N, :].reshape(*lead, N * P)


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


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
    # The head's window in patches (hop = 1 patch): 4 = 1024 samples, bins 43 Hz apart. 8 = 2048
    # samples, 21.5 Hz: rendering real clips' own magnitudes through the head's phase model, the
    # key estimator (which reads 55-1000 Hz) found 21/40 keys with 4 and 31/40, as on the clips
    # themselves, with 8 (docs/notes/2026-12-02-autoencoder-pitch.md). The encoder's front end
    # keeps 4 patches, so the head can change without touching the latents.
    head_patches: int = SPECTRAL_PATCHES
    # A second, longer log magnitude spectrum in each encoder token's input (0 = none; 8 = 2048
    # samples, bins 21.5 Hz apart). Why: with the 4-patch spectrum alone (43 Hz bins, which
    # resolve semitones only above ~730 Hz) the tiny encoder kept no pitch at all: a probe from
    # the shipped model's latents to frame chroma did no better than the mean (MSE 0.094 against
    # 0.095), while loudness was read with R^2 0.71 (ridge probe).
    pitch_patches: int = 0
    # The last `pitch_channels` latent channels are not learned but measured: the log energy of
    # each semitone from A1 (55 Hz) up, in the frame's own 4096 samples (:func:`semitone_filters`),
    # then normalised with the rest. Why: the tiny encoder would not learn pitch (the chroma head
    # at weight 5, with the 8-patch spectrum to read, left the probe at MSE 0.094 after 200 steps),
    # so neither the decoder nor the DiT could place a note. Measured channels give both a pitch
    # input from the first step, and give the DiT's key conditioning a direct target.
    pitch_channels: int = 0
    # With pitch_channels: the head adds to each token's magnitudes the spectrum the semitone
    # channels describe (interpolated between frame centres, each bin's gain learned from 1), so
    # the decoder renders the notes its latent names from the first step and learns the rest.
    pitch_skip: bool = False
    # A wider transformer after the decoder (0 layers = none), reading its tokens and adding its
    # own head's log magnitudes and phases to the decoder's (that head starts at zero, so adding a
    # refiner to a trained model changes nothing until it trains: :func:`add_refiner`). Why: on
    # the test split the decoded magnitudes, not the phases, held the codec back: with the clips'
    # own magnitudes and the head's phases log-mel L1 was 0.14 (0.11 with the phase refinement),
    # with the decoded magnitudes and the clips' own phases 0.26, and the 128-wide decoder's
    # losses had stopped falling (scripts/diag/codec_split.py). It reads the decoder's outputs only, so
    # the latents (and a DiT trained on them) stay valid.
    refiner_layers: int = 0
    refiner_width: int = 256
    refiner_heads: int = 8
    refiner_mlp_hidden: int = 768


# Phase refinement keeps its phases below this and the head's own above. Measured with 8
# iterations on the corpus's test split (37 clips, 10 s): log-mel L1 0.3151 unrefined, 0.3212
# refined everywhere (loops and pieces better, one-shots 0.380 -> 0.408 and effects 0.467 -> 0.485
# worse), 0.3125 / 0.3121 / 0.3122 / 0.3149 refined below 500 / 700 / 1000 / 1500 Hz; keys 13/18
# in every refined case against 10/18 (on 43 labelled train clips: 21 unrefined, 29 refined
# everywhere, 29 below 1 kHz). runs/diag/gl5.py.
REFINED_BELOW_HZ = 1000.0
PITCH_LOW_NOTE = 33  # A1, 55 Hz: the lowest semitone channel (MIDI note number)
PITCH_BINS = 180  # bins of the 4096-sample DFT the semitone channels read (0 - 1938 Hz)


def semitone_filters(notes: int) -> torch.Tensor:
    """[PITCH_BINS, notes] float32 weights: note m (MIDI PITCH_LOW_NOTE + m) reads the bins of a
    4096-sample DFT within a semitone of its centre (or within one bin, 10.8 Hz, where a semitone
    is narrower), by a triangle; each column sums to 1."""
    hz = torch.arange(PITCH_BINS, dtype=torch.float64) * (SAMPLE_RATE / SAMPLES_PER_FRAME)
    centre = 440.0 * 2.0 ** ((torch.arange(notes, dtype=torch.float64) + PITCH_LOW_NOTE - 69) / 12.0)
    if float(centre[-1]) * 2 ** (1 / 12) >= float(hz[-1]):
        raise Sa3Error(f"{notes} semitone channels reach past the {PITCH_BINS} bins they read; use fewer")
    width = torch.maximum(centre * (2.0 ** (1 / 12) - 1.0), torch.tensor(SAMPLE_RATE / SAMPLES_PER_FRAME))
    weights = (1.0 - (hz[:, None] - centre[None, :]).abs() / width[None, :]).clamp_min(0.0)
    return (weights / weights.sum(dim=0, keepdim=True)).float()


HEAD_SPANS = (4, 8, 16)  # head windows whose phase pattern repeats within a latent frame (16 patches)


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
        if config.pitch_patches and config.pitch_patches not in HEAD_SPANS:
            raise Sa3Error(
                f"SAME pitch_patches {config.pitch_patches} is not 0 or one of {', '.join(map(str, HEAD_SPANS))}"
            )
        if not 0 <= config.pitch_channels < LATENT_CHANNELS:
            raise Sa3Error(f"SAME pitch_channels {config.pitch_channels} must be in 0..{LATENT_CHANNELS - 1}")
        if config.pitch_skip and not config.pitch_channels:
            raise Sa3Error("SAME pitch_skip renders the semitone channels; it needs pitch_channels > 0")
        if config.head_patches not in HEAD_SPANS:
            raise Sa3Error(f"SAME head_patches {config.head_patches} is not one of {', '.join(map(str, HEAD_SPANS))}")
        self.config = config
        width = config.width
        self.stride = SAMPLES_PER_FRAME // config.patch  # patch tokens per latent frame
        trb = dict(width=width, heads=config.heads, mlp_hidden=config.mlp_hidden, window_frames=config.window_frames)

        window = SPECTRAL_PATCHES * config.patch
        self.bins = window // 2 + 1
        forward_basis = dft_forward(window)
        self.register_buffer("window", torch.hann_window(window, periodic=True), persistent=False)
        self.register_buffer("dft_forward", forward_basis, persistent=False)
        head_window = config.head_patches * config.patch
        self.head_bins = head_window // 2 + 1
        self.register_buffer("head_window", torch.hann_window(head_window, periodic=True), persistent=False)
        self.register_buffer("head_inverse", dft_inverse(head_window), persistent=False)
        self.register_buffer(
            "phase_advance", phase_advance(self.stride, self.head_bins, config.head_patches), persistent=False
        )

        self.pitch_bins = config.pitch_patches * config.patch // 2 + 1 if config.pitch_patches else 0
        if config.pitch_patches:
            pitch_window = config.pitch_patches * config.patch
            self.register_buffer("pitch_window", torch.hann_window(pitch_window, periodic=True), persistent=False)
            self.register_buffer("pitch_forward", dft_forward(pitch_window), persistent=False)

        if config.pitch_channels:
            frame_window = torch.hann_window(SAMPLES_PER_FRAME, periodic=True)[:, None]
            frame_forward = frame_window * dft_forward(SAMPLES_PER_FRAME, PITCH_BINS)  # (4096, 2 * PITCH_BINS)
            self.register_buffer("frame_forward", frame_forward, persistent=False)
            self.register_buffer("semitones", semitone_filters(config.pitch_channels), persistent=False)

        # a token's input: its raw stereo patch and the log magnitude spectra of both channels
        self.features = config.patch + self.bins + self.pitch_bins  # per channel
        self.patch_in = nn.Linear(CHANNELS * self.features, width)
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
        self.patch_out = nn.Linear(width, CHANNELS * 2 * self.head_bins)  # per channel: log magnitude, phase
        if config.pitch_skip:
            render, inside = semitone_render(config.pitch_channels, self.head_bins, head_window)
            self.register_buffer("pitch_render", render, persistent=False)
            self.register_buffer("pitch_inside", inside, persistent=False)
            self.pitch_gain = nn.Parameter(torch.zeros(self.head_bins))  # log gain of the rendered notes per bin
        self.refiner = None
        if config.refiner_layers:
            wide = config.refiner_width
            self.refiner_in = nn.Linear(width, wide)
            self.refiner = LocalTransformer(
                width=wide,
                heads=config.refiner_heads,
                layers=config.refiner_layers,
                mlp_hidden=config.refiner_mlp_hidden,
                window_frames=config.window_frames,
                tokens_per_frame=self.stride + 1,
            )
            self.refiner_norm = RMSNorm(wide)
            self.refiner_out = nn.Linear(wide, CHANNELS * 2 * self.head_bins)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # residual branches start near zero so every block starts close to identity
        for transformer in (self.encoder, self.decoder, self.refiner):
            for block in transformer.blocks if transformer is not None else ():
                nn.init.normal_(block.attn.out.weight, std=0.02 / (2 * len(transformer.blocks)) ** 0.5)
                nn.init.normal_(block.mlp.down.weight, std=0.02 / (2 * len(transformer.blocks)) ** 0.5)
        if self.refiner is not None:  # its head starts silent: the decoder's output is unchanged
            nn.init.zeros_(self.refiner_out.weight)

    # ---- the two halves on whole frames (no padding, no chunking) ----
    def encoder_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, F*4096] -> the encoder TRB's input [B, F, stride+1, width] (shared with the export graphs)."""
        B, _, samples = audio.shape
        frames, P = samples // SAMPLES_PER_FRAME, self.config.patch
        patches = audio.float().reshape(B, CHANNELS, frames * self.stride, P)  # (B, 2, N, P), N = F*stride
        with float32_region(audio):
            log_magnitudes = [self._log_magnitude(patches, SPECTRAL_PATCHES, self.window, self.dft_forward)]
            if self.config.pitch_patches:
                span = self.config.pitch_patches
                log_magnitudes.append(self._log_magnitude(patches, span, self.pitch_window, self.pitch_forward))
        features = torch.cat([patches, *log_magnitudes], dim=-1)  # (B, 2, N, P + bins [+ pitch bins])
        features = features.permute(0, 2, 1, 3).reshape(B, frames, self.stride, CHANNELS * self.features)
        tokens = self.patch_in(features) + self.patch_position  # (B, F, stride, width)
        summary = self.summary.to(tokens.dtype).expand(B, frames, 1, -1)  # (B, F, 1, width)
        return torch.cat([tokens, summary], dim=2)

    @staticmethod
    def _log_magnitude(patches: torch.Tensor, span: int, window: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """patches [B, 2, N, P] -> 0.125 log(|X|^2 + 1e-8) [B, 2, N, bins] of ``span``-patch Hann windows.

        Written as log(1e8 |X|^2 + 1) - log(1e8), the same number: the ONNX exporter's optimiser
        drops "+ 1e-8" as an add of zero, which turns silent bins into -inf."""
        spectra = (spectral_frames(patches, span) * window) @ basis  # (B, 2, N, 2*bins): re, im
        bins = spectra.shape[-1] // 2
        power = spectra[..., :bins].square() + spectra[..., bins:].square()
        return 0.125 * (torch.log(power * POWER_SCALE + 1.0) - LOG_POWER_SCALE)

    def semitone_energies(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, F*4096] -> [B, pitch_channels, F]: 0.125 log(E + 1e-8) of each semitone's
        mean power in each latent frame's Hann-windowed 4096 samples (mono mix)."""
        B, _, samples = audio.shape
        with float32_region(audio):
            frames = audio.float().mean(dim=1).reshape(B, samples // SAMPLES_PER_FRAME, SAMPLES_PER_FRAME)
            spectra = frames @ self.frame_forward  # (B, F, 2 * PITCH_BINS): re, im
            power = spectra[..., :PITCH_BINS].square() + spectra[..., PITCH_BINS:].square()
            energy = (power * (1.0 / SAMPLES_PER_FRAME)) @ self.semitones  # (B, F, notes)
            return (0.125 * (torch.log(energy * POWER_SCALE + 1.0) - LOG_POWER_SCALE)).transpose(1, 2)

    def _encode_frames(self, audio: torch.Tensor, run_transformer=None) -> torch.Tensor:
        """audio [B, 2, F*4096] -> normalised latents [B, 256, F].

        ``run_transformer(module, tokens)`` runs a :class:`LocalTransformer` (default: its own
        forward); the export graphs pass their branch-free twin, so they compute exactly this."""
        run = run_transformer or _call
        sequence = run(self.encoder, self.encoder_tokens(audio))  # (B, F, stride+1, width)
        latents = self.to_latent(self.encoder_norm(sequence[:, :, -1])).transpose(1, 2).float()  # (B, 256, F)
        if self.config.pitch_channels:  # the last channels are measured, not learned
            learned = LATENT_CHANNELS - self.config.pitch_channels
            latents = torch.cat([latents[:, :learned], self.semitone_energies(audio)], dim=1)
        return self.latent_norm(latents)  # (B, 256, F)

    def pitch_log_magnitude(
        self, latents: torch.Tensor, stride: int, frame_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """latents [B, 256, F] -> [B, F, stride, 1, head_bins]: the log magnitudes of the notes the
        semitone channels describe, per output token (linear between frame centres; the last
        frame, or the last valid one, holds its value to its end)."""
        C, norm = self.config.pitch_channels, self.latent_norm
        raw = latents[:, -C:].float() * torch.sqrt(norm.var[-C:] + norm.eps)[:, None] + norm.mean[-C:, None]
        previous = torch.cat([raw[..., :1], raw[..., :-1]], dim=-1)
        following = torch.cat([raw[..., 1:], raw[..., -1:]], dim=-1)
        if frame_valid is not None:  # padding frames (Core ML) are no neighbours
            next_valid = torch.cat([frame_valid[:, 1:], frame_valid[:, -1:]], dim=1).float()[:, None, :]  # (B, 1, F)
            following = following * next_valid + raw * (1.0 - next_valid)
        u = (torch.arange(stride, device=latents.device, dtype=torch.float32) + 0.5) / stride - 0.5  # (stride,)
        tokens = (
            raw[..., None] * (1.0 - u.abs())
            + previous[..., None] * (-u).clamp_min(0.0)
            + following[..., None] * u.clamp_min(0.0)
        )  # (B, C, F, stride)
        values = tokens.permute(0, 2, 3, 1) @ self.pitch_render  # (B, F, stride, bins)
        log_magnitude = (PITCH_LOG_SCALE * values + PITCH_LOG_OFFSET + self.pitch_gain) * self.pitch_inside
        return (log_magnitude + PITCH_FLOOR * (1.0 - self.pitch_inside))[:, :, :, None, :]

    def tokens_to_audio(
        self,
        outputs: torch.Tensor,
        frame_valid: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        phase_iterations: int = 0,
    ) -> torch.Tensor:
        """The decoder's output tokens [B, F, stride, width (+ refiner_width)] -> audio float32 [B, 2, F*4096]
        (shared with export).

        Each token predicts, per channel, the log magnitude and the phase of a ``head_patches``-patch spectrum;
        the inverse DFT, a Hann synthesis window and overlap-add at hop ``patch`` (normalised by
        the summed window, so every sample gets unit gain) give the waveform. ``frame_valid``
        (float [B, F], 1 = real frame) lets a graph padded to whole windows (Core ML) leave its
        padding frames out of the overlap-add, so the real samples equal an unpadded decode.
        ``latents`` [B, 256, F]: needed with ``pitch_skip`` (the notes they name join the magnitudes).
        ``phase_iterations`` > 0 refines the predicted phases first (:meth:`refine_phase`; torch only).
        """
        log_magnitude, phase = self.head_spectra(outputs, frame_valid, latents)
        return self.spectra_to_audio(log_magnitude, phase, frame_valid, phase_iterations)

    def spectra_to_audio(
        self,
        log_magnitude: torch.Tensor,
        phase: torch.Tensor,
        frame_valid: torch.Tensor | None = None,
        phase_iterations: int = 0,
    ) -> torch.Tensor:
        """The head's (log magnitude, phase) [B, 2, N, head_bins] -> audio float32 [B, 2, N*P]
        (the rendering half of :meth:`tokens_to_audio`)."""
        with float32_region(log_magnitude):
            magnitude = torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE))
            if phase_iterations:
                if frame_valid is not None:
                    raise Sa3Error("phase refinement runs on whole, unpadded frames (no frame_valid)")
                return self.refine_phase(magnitude, phase, phase_iterations)
            spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
            frames_out = (spectrum @ self.head_inverse) * self.head_window  # (B, 2, N, span*P)
            window = self.head_window.expand(log_magnitude.shape[2], -1)  # (N, span*P)
            if frame_valid is not None:
                valid = frame_valid.float().repeat_interleave(self.stride, dim=1)[:, None, :, None]  # (B, 1, N, 1)
                frames_out, window = frames_out * valid, window * valid
            gain = overlap_add(window, self.config.head_patches)  # (N*P,) or (B, 1, N*P): the summed window
            return overlap_add(frames_out, self.config.head_patches) / gain.clamp_min(1e-3)

    def head_spectra(
        self, outputs: torch.Tensor, frame_valid: torch.Tensor | None = None, latents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's output tokens [B, F, stride, width (+ refiner_width)] -> (log magnitude, phase),
        each float32 [B, 2, N, head_bins] (N = F * stride): the spectra :meth:`tokens_to_audio` renders."""
        B, frames, stride, _ = outputs.shape
        N = frames * stride
        if self.refiner is None:
            spectra = self.patch_out(self.decoder_norm(outputs)).float()  # (B, F, stride, 2 * 2 * bins)
        else:  # a whole-width slice would export as an alias node, which Core ML's converter refuses
            width = self.config.width
            spectra = self.patch_out(self.decoder_norm(outputs[..., :width])).float()
            spectra = spectra + self.refiner_out(self.refiner_norm(outputs[..., width:])).float()
        span, bins = self.config.head_patches, self.head_bins
        spectra = spectra.reshape(B, frames, stride, CHANNELS * 2, bins)  # rank 5 at most: Core ML
        log_magnitude, phase = spectra[:, :, :, 0::2], spectra[:, :, :, 1::2]  # (B, F, stride, 2, bins)
        if self.config.pitch_skip:  # log(exp(a) + exp(b)), written with ops every exporter has
            if latents is None:
                raise Sa3Error("this autoencoder's head renders its semitone channels: pass the latents")
            notes = self.pitch_log_magnitude(latents, stride, frame_valid)
            top = torch.maximum(log_magnitude, notes)
            log_magnitude = top + torch.log1p(torch.exp(-(log_magnitude - notes).abs()))
        if self.config.phase_prior:  # the same pattern in every latent frame: stride is a multiple of 4
            phase = phase + self.phase_advance[:, None, :]
            if self.config.peak_frequency:  # (2 pi / span) * offset per hop, accumulated within each latent frame
                phase = phase + torch.cumsum(
                    peak_offsets(log_magnitude) * (2.0 * torch.pi / span), dim=2
                )  # float32 already
        log_magnitude = log_magnitude.reshape(B, N, CHANNELS, bins).transpose(1, 2)  # (B, 2, N, bins)
        phase = phase.reshape(B, N, CHANNELS, bins).transpose(1, 2)
        return log_magnitude, phase

    def head_target(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 2, N*P] -> its natural-log magnitudes [B, 2, N, head_bins] in the frames, window
        and scale of :meth:`head_spectra` (what the head should predict: rendering them with the
        audio's own phases gives the audio back). Floored at 1e-12."""
        window = self.head_window
        with float32_region(audio):
            # the synthesis divides by the summed window, the analysis window adds its square
            scale = window.sum() / window.pow(2).sum()
            return torch.log((self.head_analysis(audio.float()).abs() * scale).clamp_min(1e-12))

    def head_analysis(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [..., N*P] -> its complex spectra [..., N, head_bins] in the head's frames (frame n
        spans patches n - span/2 .. n + span/2 - 1) under the head's window (FFTs: torch only)."""
        return head_analysis(audio, self.config.head_patches, self.config.patch, self.head_window)

    def refine_phase(self, magnitude: torch.Tensor, phase: torch.Tensor, iterations: int, momentum: float = 0.99):
        """:func:`refine_phase` with this model's head window."""
        return refine_phase(magnitude, phase, iterations, self.config.head_patches, self.config.patch, momentum)

    def decoder_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 256, F] -> the decoder TRB's input [B, F, 1+stride, width] (shared with the export graphs).

        Each output token also carries its frame's latent directly: reached through attention
        alone, the latent was diluted over the window and the decoder learned to ignore it
        (decode(z1) - decode(z2) fell to 0.7 % of the signal after 500 training steps).
        """
        heads = self.from_latent(latents.transpose(1, 2))[:, :, None]  # (B, F, 1, width)
        outputs = self.outputs.to(heads.dtype) + heads  # (B, F, stride, width)
        return torch.cat([heads, outputs], dim=2)

    def refined_tokens(self, sequence: torch.Tensor, refined: torch.Tensor | None) -> torch.Tensor:
        """The decoder's output sequence [B, F, 1+stride, width] and the refiner's [B, F, 1+stride,
        refiner_width] (None without one) -> the head's input tokens [B, F, stride, width (+ refiner_width)]."""
        outputs = sequence[:, :, 1:]
        return outputs if refined is None else torch.cat([outputs, refined[:, :, 1:].to(outputs.dtype)], dim=-1)

    def decoder_outputs(self, latents: torch.Tensor, run_transformer=None) -> torch.Tensor:
        """latents [B, 256, F] -> the head's input tokens [B, F, stride, width (+ refiner_width)]
        (``run_transformer`` as in :meth:`_encode_frames`)."""
        run = run_transformer or _call
        sequence = run(self.decoder, self.decoder_tokens(latents))  # (B, F, 1+stride, width)
        refined = run(self.refiner, self.refiner_in(sequence)) if self.refiner is not None else None
        return self.refined_tokens(sequence, refined)

    def _decode_frames(self, latents: torch.Tensor, phase_iterations: int = 0) -> torch.Tensor:
        """latents [B, 256, F] -> audio [B, 2, F*4096]."""
        outputs = self.decoder_outputs(latents)
        return self.tokens_to_audio(outputs, latents=latents, phase_iterations=phase_iterations)

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
    def decode(
        self, latents: torch.Tensor, chunk_frames: int | None = None, bf16: bool = False, phase_iterations: int = 0
    ) -> torch.Tensor:
        """latents [B, 256, F], F >= 1 -> audio float32 [B, 2, F*4096] (crop to the samples you need).

        ``phase_iterations`` > 0: refine the head's phases with that many Griffin-Lim iterations
        (:meth:`refine_phase`); chunks then carry enough context for the refinement's reach too,
        so chunked decoding still equals one pass."""
        if latents.ndim != 3 or latents.shape[1] != LATENT_CHANNELS or latents.shape[2] < 1:
            raise Sa3Error(
                f"SAME.decode takes latents [batch, {LATENT_CHANNELS}, frames >= 1], got {tuple(latents.shape)}"
            )
        if phase_iterations < 0:
            raise Sa3Error(f"phase_iterations must be 0 or more, got {phase_iterations}")
        run = functools.partial(self._decode_frames, phase_iterations=phase_iterations)
        c = self.config
        context = refined_decode_context(
            self.receptive_frames, c.window_frames, c.head_patches, c.patch, phase_iterations
        )
        with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self._chunked(
                run, latents.float(), latents.shape[-1], 1, SAMPLES_PER_FRAME, chunk_frames, context
            ).float()

    @property
    def receptive_frames(self) -> int:
        """Context (in latent frames, per side) that makes chunked processing exact."""
        # + 1: the spectral windows reach up to 8 patches (half a frame) into the neighbouring frames; rounded up to
        # whole attention windows so that a chunk with this context still starts on the window grid
        decoder = self.decoder.receptive_frames + (self.refiner.receptive_frames if self.refiner is not None else 0)
        reach = max(self.encoder.receptive_frames, decoder) + 1
        return -(-reach // self.config.window_frames) * self.config.window_frames

    def _chunked(
        self,
        run,
        x: torch.Tensor,
        frames: int,
        in_per_frame: int,
        out_per_frame: int,
        chunk_frames,
        context: int | None = None,
    ):
        """Apply ``run`` to slices of ``x`` (last axis, ``in_per_frame`` units per frame) and join.

        Chunks start on window borders and carry ``context`` (default ``receptive_frames``) of
        context on each side, which is cropped off again, so the joined result equals ``run(x)``.
        """
        chunk = self.config.chunk_frames if chunk_frames is None else chunk_frames
        if chunk and chunk % self.config.window_frames:
            raise Sa3Error(f"chunk_frames {chunk} must be a multiple of window_frames {self.config.window_frames}")
        if not chunk or frames <= chunk:
            return run(x)
        context = self.receptive_frames if context is None else context
        pieces = []
        for start in range(0, frames, chunk):
            end = min(frames, start + chunk)
            lo, hi = max(0, start - context), min(frames, end + context)
            out = run(x[..., lo * in_per_frame : hi * in_per_frame])
            pieces.append(out[..., (start - lo) * out_per_frame : (end - lo) * out_per_frame])
        return torch.cat(pieces, dim=-1)


def head_analysis(audio: torch.Tensor, span: int, patch: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """audio [..., N*P] -> its complex spectra [..., N, bins] in a ``span``-patch head's frames (frame n
    spans patches n - span/2 .. n + span/2 - 1) under a periodic Hann window (FFTs: torch only)."""
    window = torch.hann_window(span * patch, periodic=True, device=audio.device) if window is None else window
    padded = F.pad(audio, ((span // 2) * patch, (span // 2 - 1) * patch))
    return torch.fft.rfft(padded.unfold(-1, window.shape[0], patch) * window)


def refine_phase(
    magnitude: torch.Tensor, phase: torch.Tensor, iterations: int, span: int, patch: int, momentum: float = 0.99
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013) from the predicted phases: magnitudes and
    phases [B, 2, N, bins] of a ``span``-patch head -> audio float32 [B, 2, N*patch] with the same
    magnitudes. The torch and the ONNX backends both render through it.

    Why: the head's phases do not agree between overlapping frames, and the overlap-add
    smears each partial over neighbouring pitches. On 40 labelled corpus clips (10 s) the
    key estimator found the right key in 34 clips, 20 of their reconstructions, 31 with the
    decoded magnitudes and the clips' own phases, 21 the other way round. On 60 clips, 2, 4
    and 8 iterations of this (at all frequencies) brought the reconstructions from 30 right to
    35, 38 and 41 (the clips: 51), 16 and 32 no further (runs/diag/phase.py, gl2.py). Each iteration is
    one FFT analysis and one synthesis of the head's frames (FFTs, not the export graphs'
    DFT matrices), so it runs eagerly, after the decoder graph.

    The refined phases are kept below :data:`REFINED_BELOW_HZ` only; above it the head's own
    phases stay, which keep transients and noise as the decoder learned them (see there).
    """
    size = span * patch
    window = torch.hann_window(size, periodic=True, device=magnitude.device)
    inverse_gain = 1.0 / overlap_add(window.expand(magnitude.shape[2], -1), span).clamp_min(1e-3)
    scale = magnitude[..., None]  # multiplies (re, im) pairs: no complex copy of the magnitudes

    # Written for speed (8 s of stereo, 8 iterations: 0.40 s against 0.57 s written plainly, medians
    # of three alternating runs on 2 AVX2 cores; the same samples to 3e-7 RMS): real-valued scaling,
    # in-place window and overlap-add, one lerp for the momentum step and sgn for the unit phasors.
    def synthesize(unit: torch.Tensor) -> torch.Tensor:
        spectrum = torch.view_as_complex(torch.view_as_real(unit) * scale)
        frames = torch.fft.irfft(spectrum, n=size).mul_(window)
        return overlap_add_eager(frames, span).mul_(inverse_gain)

    predicted = torch.polar(torch.ones_like(magnitude), phase)
    unit, previous = predicted, None
    for _ in range(iterations):
        projected = head_analysis(synthesize(unit), span, patch, window)
        # fast Griffin-Lim's step: projected + momentum * (projected - previous)
        estimate = projected if previous is None else torch.lerp(previous, projected, 1.0 + momentum)
        previous = projected
        unit = torch.sgn(estimate)  # estimate / |estimate|, 0 where it is 0
    below = torch.arange(magnitude.shape[-1], device=magnitude.device) * (SAMPLE_RATE / size) < REFINED_BELOW_HZ
    return synthesize(torch.where(below, unit, predicted))


def refined_decode_context(receptive_frames: int, window_frames: int, span: int, patch: int, iterations: int) -> int:
    """Context frames per side that keep chunked decoding with ``iterations`` of phase
    refinement equal to one pass: each iteration lets a frame feel the frames one head window
    further away, so the context covers that reach too (rounded up to whole attention windows)."""
    if not iterations:
        return receptive_frames
    reach = -(-iterations * span * patch // SAMPLES_PER_FRAME) + 1
    return max(receptive_frames, -(-reach // window_frames) * window_frames)


def semitone_render(notes: int, bins: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(render [notes, bins], inside [bins]): each head bin's value as a linear interpolation of the
    semitone channels at its frequency (in semitones), and 1 where the bin lies in their range."""
    hz = torch.arange(bins, dtype=torch.float64) * (SAMPLE_RATE / window)
    position = 12.0 * torch.log2(hz.clamp_min(1.0) / 440.0) + 69 - PITCH_LOW_NOTE  # in notes from the lowest
    inside = (position >= 0) & (position <= notes - 1)
    low = position.floor().clamp(0, notes - 1).long()
    high = (low + 1).clamp_max(notes - 1)
    frac = (position - low).clamp(0, 1)
    render = torch.zeros(notes, bins, dtype=torch.float64)
    columns = torch.arange(bins)
    render[low, columns] += 1.0 - frac
    render[high, columns] += frac
    return (render * inside).float(), inside.float()


# A sinusoid of amplitude A reads about 256 A^2 in its semitone channel's mean power (4096-sample
# Hann DFT, / 4096) and needs a magnitude of 1024 A from the 2048-sample head: log magnitude
# = 0.5 log E + log(64), and log E = 8 x the channel's raw value (0.125 log E, see semitone_energies).
PITCH_LOG_SCALE, PITCH_LOG_OFFSET, PITCH_FLOOR = 4.0, 4.16, -30.0


def _with_config(model: SAME, drop: str = "", **changes) -> SAME:
    """A copy of ``model`` with ``changes`` to its config, on its device and in its train/eval mode,
    holding every weight of ``model`` whose name does not start with ``drop`` (new ones as built)."""
    copy = SAME(dataclasses.replace(model.config, **changes)).to(model.from_latent.weight.device)
    copy.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not (drop and k.startswith(drop))}, strict=False
    )
    return copy.train(model.training)


def add_pitch_channels(model: SAME, channels: int, audio: torch.Tensor | None = None) -> SAME:
    """A copy of ``model`` whose last ``channels`` latent channels are measured semitone energies.

    Every weight is kept, except that the decoder's input weights from those channels start at
    zero (what they carried before is gone). ``audio [B, 2, S]`` (a few seconds of real clips)
    sets those channels' running statistics, so they start near zero mean and unit variance."""
    if model.config.pitch_channels:
        raise Sa3Error(f"the autoencoder already has {model.config.pitch_channels} semitone channels")
    measured = _with_config(model, pitch_channels=channels)
    with torch.no_grad():
        measured.from_latent.weight[:, LATENT_CHANNELS - channels :] = 0.0
        if audio is not None:
            energies = measured.semitone_energies(pad_to_frames(audio.float()))  # (B, channels, F)
            flat = energies.transpose(0, 1).reshape(channels, -1)
            measured.latent_norm.mean[LATENT_CHANNELS - channels :] = flat.mean(dim=1)
            measured.latent_norm.var[LATENT_CHANNELS - channels :] = flat.var(dim=1, unbiased=False)
    return measured


def add_pitch_skip(model: SAME) -> SAME:
    """A copy of ``model`` (which has semitone channels) whose head also renders them, every weight kept."""
    if not model.config.pitch_channels:
        raise Sa3Error("the pitch skip renders the semitone channels; this autoencoder has none (set pitch_channels)")
    return _with_config(model, pitch_skip=True)


def add_pitch_front_end(model: SAME, pitch_patches: int) -> SAME:
    """A copy of ``model`` whose encoder also reads a ``pitch_patches``-patch spectrum, every weight
    kept: the input layer's new columns start at zero, so the copy encodes exactly as ``model``
    until training gives them weight."""
    if model.config.pitch_patches:
        raise Sa3Error(f"the autoencoder already reads a {model.config.pitch_patches}-patch pitch spectrum")
    widened = _with_config(model, drop="patch_in.weight", pitch_patches=pitch_patches)
    old = model.patch_in.weight.detach().reshape(-1, CHANNELS, model.features)
    new = torch.zeros(old.shape[0], CHANNELS, widened.features)
    new[..., : model.features] = old
    with torch.no_grad():
        widened.patch_in.weight.copy_(new.reshape(old.shape[0], -1))
    return widened


def add_refiner(model: SAME, layers: int, width: int | None = None) -> SAME:
    """A copy of ``model`` with a ``layers``-layer refiner after its decoder (width ``width``, heads
    of 32, SwiGLU 3x), every weight kept; the refiner's head starts at zero, so the copy decodes
    exactly as ``model`` until it trains. The encoder, and so the latents, are untouched."""
    if model.config.refiner_layers:
        raise Sa3Error(f"the autoencoder already has a {model.config.refiner_layers}-layer refiner")
    if layers < 1:
        raise Sa3Error(f"a refiner needs 1 or more layers, got {layers}")
    width = width or model.config.refiner_width
    if width % 32:
        raise Sa3Error(f"refiner width {width} must be a multiple of 32 (heads of 32)")
    return _with_config(
        model, refiner_layers=layers, refiner_width=width, refiner_heads=width // 32, refiner_mlp_hidden=3 * width
    )


def resize_head(model: SAME, head_patches: int) -> SAME:
    """A copy of ``model`` whose head renders ``head_patches``-patch spectra, every other weight kept.

    The new head starts where the old one was: each new bin's log magnitude is the old head's at
    the same frequency (its output rows interpolated between the two nearest old bins), plus
    log(span ratio), since a sinusoid's peak magnitude grows with the window; the phase rows start
    at zero, i.e. at the phase prior. The encoder, and so the latents, are untouched.
    """
    if model.config.refiner_layers:
        raise Sa3Error("resize the head before adding a refiner: the refiner's head renders the old spectra")
    resized = _with_config(model, drop="patch_out.", head_patches=head_patches)
    old_bins, new_bins = model.head_bins, resized.head_bins
    ratio = (new_bins - 1) / (old_bins - 1)
    position = torch.arange(new_bins, dtype=torch.float64) / ratio  # each new bin's frequency in old bins
    low = position.floor().long().clamp_max(old_bins - 1)
    high = (low + 1).clamp_max(old_bins - 1)
    frac = (position - low).float()[:, None]
    weight = model.patch_out.weight.detach().reshape(CHANNELS, 2, old_bins, -1)
    bias = model.patch_out.bias.detach().reshape(CHANNELS, 2, old_bins)
    new_weight = torch.zeros(CHANNELS, 2, new_bins, weight.shape[-1])
    new_bias = torch.zeros(CHANNELS, 2, new_bins)
    new_weight[:, 0] = weight[:, 0, low] * (1 - frac) + weight[:, 0, high] * frac
    new_bias[:, 0] = (
        bias[:, 0, low] * (1 - frac[:, 0]) + bias[:, 0, high] * frac[:, 0] + float(torch.tensor(ratio).log())
    )
    with torch.no_grad():
        resized.patch_out.weight.copy_(new_weight.reshape(-1, weight.shape[-1]))
        resized.patch_out.bias.copy_(new_bias.reshape(-1))
    return resized


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
