"""Backends run the four model parts; the pipeline never knows which one it talks to.

A backend implements :class:`Backend`: text encoding, the DiT condition and velocity step,
and the autoencoder's encoder and decoder. ``torch`` is built in; ``onnx`` registers itself
from :mod:`export` when onnxruntime is installed.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch
from torch import nn

from .errors import Sa3Error
from .registry import Registry
from .scale_lock import SemitoneLayout, layout_of


class Backend(Protocol):
    name: str

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens float32 [B, L, D], mask bool [B, L])"""

    def condition(
        self, tokens: torch.Tensor, mask: torch.Tensor, seconds: torch.Tensor, music: torch.Tensor | None = None
    ) -> Any:
        """Everything that stays fixed across sampler steps (cross-attention keys/values);
        ``music`` [B, 27] rows of :mod:`sa3core.musical` (ignored by a DiT without them)."""

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Any,
        inpaint_latents: torch.Tensor,
        inpaint_mask: torch.Tensor,
        frame_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One DiT evaluation: velocity [B, 256, T]."""

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, 2, samples] -> latents [B, 256, ceil(samples / 4096)]"""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 256, frames] -> audio [B, 2, frames * 4096]"""

    def semitone_layout(self) -> SemitoneLayout | None:
        """Where the latents hold measured semitone energies (the scale lock's handle); None if they do not."""


# Backends living outside sa3core register themselves when their module is imported; this
# table imports them the first time their name is asked for (onnxruntime stays optional).
LAZY_BACKEND_MODULES = {"onnx": "sa3core.onnx_backend"}


class _BackendRegistry(Registry):
    def check(self, name: str) -> str:
        """``name`` if it names a backend, built in or lazy, without importing it; else an
        Sa3Error that lists them all (what ``--backend`` checks before any model loads)."""
        if name not in self and name not in LAZY_BACKEND_MODULES:
            raise Sa3Error(f"unknown backend {name!r}; choose one of {', '.join(self.names())}")
        return name

    def get(self, name: str):
        self.check(name)
        if name not in self:
            import importlib

            try:
                importlib.import_module(LAZY_BACKEND_MODULES[name])
            except ModuleNotFoundError as err:
                raise Sa3Error(
                    f"backend {name!r} needs {err.name!r}; install it with `pip install sa3[export]`"
                ) from None
        return super().get(name)

    def names(self) -> list[str]:
        return sorted(set(super().names()) | set(LAZY_BACKEND_MODULES))


BACKENDS: Registry = _BackendRegistry("backend")


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX-512 bf16 or AMX): there bf16 matmuls run
    about twice as fast as fp32 (measured in bench/efficiency.py); elsewhere they are emulated
    and slower, so bf16 stays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and bool(torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` weights and biases are bf16; everything else
    (norm weights, learned tokens, offsets) is copied as it is.

    Under bf16 autocast a float32 weight is cast to bf16 on every call: for the small DiT that
    is 1.7 GB read and 0.9 GB written per sampler step. A bf16 copy skips that work (and
    autocast leaves bf16 weights alone). The float32 model stays untouched for saving and export.
    """
    memo = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for param in module.parameters(recurse=False):
                memo[id(param)] = nn.Parameter(param.detach().to(torch.bfloat16), requires_grad=False)
    return copy.deepcopy(model, memo).eval()


# Decode long latents in chunks of at least this many frames. Every chunk carries
# ``receptive_frames`` of context on each side (32 for SAME-S), so with the training-time chunk
# of 128 frames the decoder does 1.5x the work of one pass; 512 frames brings that to 1.125x,
# and the chunk's activations (tens of MB for SAME-S in bf16) still bound the peak memory.
DECODE_CHUNK_FRAMES = 512


def inference_chunk_frames(config) -> int:
    """The chunk (frames) the torch backend encodes and decodes with for a SAME ``config``:
    at least DECODE_CHUNK_FRAMES, on window borders; 0 (one pass) stays 0."""
    if not config.chunk_frames:
        return 0
    window = config.window_frames  # chunks must start on window borders
    return max(config.chunk_frames, -(-DECODE_CHUNK_FRAMES // window) * window)


@BACKENDS.register("torch")
class TorchBackend:
    """Eager PyTorch on the CPU (or a CUDA device).

    ``bf16``: matmuls in bf16 under autocast, with bf16 copies of the linear weights (norms,
    RoPE angles and differential-attention softmaxes stay float32 inside the layers). ``None``
    (the default) turns it on where the CPU multiplies bf16 natively (:func:`cpu_has_bf16`):
    velocities then match float32 to about 1e-2 relative RMS for random weights
    (bench/efficiency.py reports the figure of each run); pass ``bf16=False`` for float32.
    ``self.dit`` / ``self.autoencoder`` stay float32 whatever ``bf16`` says.
    ``phase_iterations``: Griffin-Lim iterations on the decoder's phases (model.json's setting).
    """

    name = "torch"

    def __init__(
        self,
        autoencoder,
        dit,
        text_encoder,
        device: str = "cpu",
        bf16: bool | None = None,
        phase_iterations: int = 0,
    ) -> None:
        if phase_iterations < 0:
            raise Sa3Error(f"phase_iterations must be 0 or more, got {phase_iterations}")
        self.phase_iterations = int(phase_iterations)
        self.autoencoder = autoencoder.to(device).eval()
        self.dit = dit.to(device).eval()
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.bf16 = (self.device.type == "cpu" and cpu_has_bf16()) if bf16 is None else bool(bf16)
        self._dit_run = bf16_inference_copy(self.dit) if self.bf16 else self.dit
        self._autoencoder_run = bf16_inference_copy(self.autoencoder) if self.bf16 else self.autoencoder
        self._semitones = layout_of(self.autoencoder)

    @property
    def precision(self) -> str:
        """What the matmuls run as: "bf16" or "float32"."""
        return "bf16" if self.bf16 else "float32"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def encode_text(self, prompts):
        tokens, mask = self.text_encoder.encode(prompts)
        return tokens.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def condition(self, tokens, mask, seconds, music=None):
        music = None if music is None else music.to(self.device)
        with self._autocast():
            return self._dit_run.encode_condition(tokens, mask, seconds.to(self.device), music)

    @torch.inference_mode()
    def velocity(self, x, t, cond, inpaint_latents, inpaint_mask, frame_mask):
        with self._autocast():
            v = self._dit_run(x, t, cond, inpaint_latents, inpaint_mask, frame_mask)
        return v.float()

    def _chunk_frames(self) -> int:
        return inference_chunk_frames(self.autoencoder.config)

    def semitone_layout(self) -> SemitoneLayout | None:
        return self._semitones

    @torch.inference_mode()
    def encode_audio(self, audio):
        # Encoding stays float32: its latents are what inpainting keeps, and it is not on the
        # text-to-audio path.
        return self.autoencoder.encode(audio.to(self.device), chunk_frames=self._chunk_frames()).float()

    @torch.inference_mode()
    def decode_latents(self, latents):
        audio = self._autoencoder_run.decode(
            latents.to(self.device),
            chunk_frames=self._chunk_frames(),
            bf16=self.bf16,
            phase_iterations=self.phase_iterations,
        )
        return audio.float()
