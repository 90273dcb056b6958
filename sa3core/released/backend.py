"""The torch backend of a released Stable Audio 3 folder: its text encoder, conditioners, DiT and SAME.

:func:`load` reads the folder (:mod:`sa3core.released.checkpoint`: weights memory-mapped, loading
strict) and returns a :class:`ReleasedTorchBackend`, which runs the parts; the released family
(:mod:`sa3core.families.released`) decides what to run when.

Precision, as the official code runs on a CPU unless said otherwise:
- the T5Gemma text encoder runs in bf16 (``text_dtype``), as transformers 5.x runs the official
  one on every device; float32 text moves the fixture's audio by 2.3e-3, above the parity
  tolerance (tests/fixtures/released/README.md). Only at the default precision on a CPU without
  native bf16 it runs in float32, where emulated bf16 is 8x slower (:func:`default_text_dtype`);
- the DiT runs in float32, or with bf16 matmuls under autocast from bf16 copies of its linear
  weights when ``bf16`` is on (the default where the CPU multiplies bf16 natively, as sa3's own
  torch backend decides; ``bf16=False`` is ``--fp32``);
- the conditioners run in float32; the SAME autoencoder's encoder and decoder blocks run in bf16
  when ``bf16`` is on (its bottleneck, boundaries, RoPE and attention stay float32:
  :meth:`ReleasedAutoencoder.coders_to`), in float32 otherwise.
Weights stored in another float dtype (the fixtures store bf16) are converted once; float32
files (the released ones) stay the file's memory map.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backends import bf16_inference_copy, cpu_has_bf16
from .checkpoint import ReleasedFolder, load_conditioners, load_dit, open_released
from .conditioners import assemble
from .dit import ReleasedCondition
from .same import ReleasedAutoencoder
from .text import EncodedPrompts, ReleasedTextEncoder, load_text_encoder

# LoRA files name their layers relative to the official DiT wrapper (whose DiT is its `model`) and
# to the official conditioner (whose ModuleDict is its `conditioners`): the checkpoint's keys
# without their first `model.` / `conditioner.`. Under these prefixes sa3's module names are the
# official ones (the parity tests load official files layer by layer, strictly).
LORA_PREFIXES = {"dit": "model.", "conditioners": "conditioners."}


class ReleasedTorchBackend:
    """Runs a released checkpoint's parts; ``latent_channels`` is the DiT's ``io_channels``.

    Shapes: prompts -> context [B, S, cond_token_dim] (prompt tokens, then the seconds token) and
    global [B, global_cond_dim]; latents [B, latent_channels, frames]; audio [B, 2, frames * 4096].
    """

    name = "torch"

    def __init__(
        self,
        folder: ReleasedFolder,
        text_encoder: ReleasedTextEncoder,
        device: str = "cpu",
        bf16: bool | None = None,
    ) -> None:
        self.folder = folder
        self.device = torch.device(device)
        self.bf16 = (self.device.type == "cpu" and cpu_has_bf16()) if bf16 is None else bool(bf16)
        self.dit = load_dit(folder).float().to(self.device)
        self.conditioners = load_conditioners(folder).float().to(self.device)
        self.autoencoder = ReleasedAutoencoder.from_state_dict(folder.config.autoencoder, folder.parts["autoencoder"])
        self.autoencoder = self.autoencoder.to(self.device)
        if self.bf16:
            self.autoencoder.coders_to(torch.bfloat16)
        self.text_encoder = text_encoder
        self._prompts = EncodedPrompts(text_encoder.encode)  # repeated prompts skip T5Gemma
        self._dit_run = bf16_inference_copy(self.dit) if self.bf16 else self.dit
        self.diffusion = folder.config.model.diffusion
        self.chunked = folder.config.model.pretransform.chunked
        self.latent_channels = self.dit.config.io_channels

    # ------------------------------------------------------------------ LoRA
    def attach_loras(self, stack, merge: bool) -> None:
        """Apply a :class:`sa3core.lora.LoraStack` to the float32 DiT and the conditioners (the
        official LoRA targets; the text encoder and SAME are not adapted), then remake the bf16
        copy the DiT runs as, so it carries the adapters too."""
        stack.attach({LORA_PREFIXES["dit"]: self.dit, LORA_PREFIXES["conditioners"]: self.conditioners}, merge)
        self._dit_run = bf16_inference_copy(self.dit) if self.bf16 else self.dit

    # ------------------------------------------------------------------ text and conditions
    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the encoder's last hidden state float32 [B, L, 768], mask bool [B, L])."""
        hidden, mask = self._prompts(prompts)
        return hidden.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def context(self, prompts: list[str], seconds: torch.Tensor, negative: bool = False):
        """Prompts and seconds [B] -> (context, global), as the official conditioner and wrapper
        assemble them. ``negative``: a negative prompt's context, whose padded prompt positions are
        zeros instead of the learned padding (the official DiT's rule for negative conditioning)."""
        hidden, mask = self.encode_text(prompts)
        tokens = self.conditioners["prompt"](hidden, mask)
        if negative:
            tokens = torch.where(mask[..., None], tokens, 0.0)
        outputs = {"prompt": tokens, "seconds_total": self.conditioners["seconds_total"](seconds.to(self.device))}
        return assemble(outputs, self.diffusion)

    @torch.inference_mode()
    def condition(self, context: torch.Tensor, global_cond: torch.Tensor) -> ReleasedCondition:
        with self._autocast():
            return self._dit_run.encode_condition(context.to(self.device), global_cond.to(self.device))

    # ------------------------------------------------------------------ the DiT
    @torch.inference_mode()
    def velocity(self, x, t, cond: ReleasedCondition, local: torch.Tensor | None, frame_mask: torch.Tensor):
        """v float32 [B, C, T] on x's device; ``local`` concat(mask, mask * latents) [B, C + 1, T] or None (zeros)."""
        local = None if local is None else local.to(self.device)
        with self._autocast():
            v = self._dit_run(x.to(self.device), t.to(self.device), cond, local, frame_mask.to(self.device))
        return v.float().to(x.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ the autoencoder
    @torch.inference_mode()
    def encode_audio(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """audio [B, 2, S] -> latents [B, C, ceil(S / 4096)]; SAME-L draws its token noise from ``generator``."""
        return self.autoencoder.encode(audio.to(self.device), generator, chunked=self.chunked).float()

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """latents [B, C, F] -> audio [B, 2, F * 4096] (not clipped), its noise drawn from ``generator``.

        The latents are made contiguous first: the decoder's noise lands on elements in memory
        order, and the official sampler hands its decoder contiguous latents."""
        return self.autoencoder.decode(latents.to(self.device).contiguous(), generator, chunked=self.chunked).float()

    def semitone_layout(self):
        """Released latents hold no measured semitone channels (sa3's scale lock has no handle)."""
        return None


def load(
    path: str | Path, device: str = "cpu", bf16: bool | None = None, text_dtype: torch.dtype | None = None
) -> ReleasedTorchBackend:
    """A released DiT folder (model_config.json, model.safetensors, the text encoder's folder) as a backend.

    ``text_dtype`` None: :func:`default_text_dtype`."""
    folder = open_released(path)
    text_dtype = default_text_dtype(device, bf16) if text_dtype is None else text_dtype
    prompt = next(spec for spec in folder.config.model.conditioning.configs if spec.type == "t5gemma")
    text = load_text_encoder(folder.text_encoder_dir(), prompt.config.max_length, dtype=text_dtype)
    return ReleasedTorchBackend(folder, text, device=device, bf16=bf16)


def default_text_dtype(device: str, bf16: bool | None) -> torch.dtype:
    """The T5Gemma dtype when none is asked for: bf16 as the official code runs it, except at the
    default precision (``bf16`` None) on a CPU without native bf16, where bf16 is emulated: 256
    tokens take 4.4 s in bf16 and 0.58 s in float32 on an AVX2-only AMD EPYC (2 threads). Float32
    text moves the audio by about 2e-3, inside the default precision's tolerance; ``--fp32``
    (``bf16=False``) keeps the official bf16 text for parity."""
    if bf16 is None and torch.device(device).type == "cpu" and not cpu_has_bf16():
        return torch.float32
    return torch.bfloat16
