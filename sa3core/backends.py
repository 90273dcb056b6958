"""Backends run the four model parts; the pipeline never knows which one it talks to.

A backend implements :class:`Backend`: text encoding, the DiT condition and velocity step,
and the autoencoder's encoder and decoder. ``torch`` is built in; ``onnx`` registers itself
from :mod:`export` when onnxruntime is installed.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from .errors import Sa3Error
from .registry import Registry


class Backend(Protocol):
    name: str

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens float32 [B, L, D], mask bool [B, L])"""

    def condition(self, tokens: torch.Tensor, mask: torch.Tensor, seconds: torch.Tensor) -> Any:
        """Everything that stays fixed across sampler steps (cross-attention keys/values)."""

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


# Backends living outside sa3core register themselves when their module is imported; this
# table imports them the first time their name is asked for (onnxruntime stays optional).
LAZY_BACKEND_MODULES = {"onnx": "export.onnx_backend"}


class _BackendRegistry(Registry):
    def get(self, name: str):
        if name not in self and name in LAZY_BACKEND_MODULES:
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


@BACKENDS.register("torch")
class TorchBackend:
    """Eager PyTorch on the CPU (or a CUDA device), optionally with bf16 matmuls."""

    name = "torch"

    def __init__(self, autoencoder, dit, text_encoder, device: str = "cpu", bf16: bool = False) -> None:
        self.autoencoder = autoencoder.to(device).eval()
        self.dit = dit.to(device).eval()
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.bf16 = bf16

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def encode_text(self, prompts):
        tokens, mask = self.text_encoder.encode(prompts)
        return tokens.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def condition(self, tokens, mask, seconds):
        with self._autocast():
            return self.dit.encode_condition(tokens, mask, seconds.to(self.device))

    @torch.inference_mode()
    def velocity(self, x, t, cond, inpaint_latents, inpaint_mask, frame_mask):
        with self._autocast():
            v = self.dit(x, t, cond, inpaint_latents, inpaint_mask, frame_mask)
        return v.float()

    @torch.inference_mode()
    def encode_audio(self, audio):
        return self.autoencoder.encode(audio.to(self.device)).float()

    @torch.inference_mode()
    def decode_latents(self, latents):
        with self._autocast():
            audio = self.autoencoder.decode(latents.to(self.device))
        return audio.float()
