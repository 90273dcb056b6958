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
  torch backend decides; ``bf16=False`` is ``--fp32``), or with its transformer blocks' linear
  layers in int8 when ``int8`` is on (:mod:`sa3core.modules.int8`; the default on an x86 CPU
  without native bf16, where float32 is otherwise the only fast path; ``int8=True`` asks for it
  anywhere torch has the x86 int8 kernels). The int8 copy is packed on the first DiT call, so
  loading alone (``sa3 info``, encoding) does not pay its ~3 s;
- the conditioners run in float32; the SAME autoencoder's encoder and decoder blocks run in bf16
  when ``bf16`` is on (its bottleneck, boundaries, RoPE and attention stay float32:
  :meth:`ReleasedAutoencoder.coders_to`); when ``int8`` is on, the Linear layers of their
  transformers run in int8 (:data:`INT8_CODER_LAYERS`, each coder packed at its first use) and
  the rest in float32; in float32 otherwise.
Weights stored in another float dtype (the fixtures store bf16) are converted once; float32
files (the released ones) stay the file's memory map.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..backends import bf16_inference_copy, cpu_has_bf16
from ..errors import Sa3Error
from ..modules.int8 import int8_inference_copy, int8_layers, int8_supported
from ..modules.int8_cache import Int8Cache
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

# The DiT layers that run in int8 at that precision: the Linear layers of the transformer blocks
# that run on the frames at every step (self-attention, the cross-attention query, the
# feed-forward), 5 per block. The cross-attention output stays float32: every frame reads the same
# few context tokens through it, so its rounding moves all frames alike; it was the layer that
# moved the take most (the released-layout fixture with a LoRA merged: log-mel L1 0.0135 against
# float32 with it in int8, 0.0043 without) for about 5 % of a block's products. Also float32: the
# cross-attention keys and values (once per request), the inpaint MLPs, the timestep, condition and
# in/out projections.
INT8_LAYERS = ("self_attn.to_qkv", "self_attn.to_out", "cross_attn.to_q", "ff.ff.0.proj", "ff.ff.2")


def int8_layer(name: str) -> bool:
    """Whether the released DiT's module ``name`` runs in int8 at the int8 precision."""
    return name.startswith("transformer.layers.") and name.endswith(INT8_LAYERS)


# The SAME layers that run in int8 at that precision: the Linear layers of the encoder's and the
# decoder's transformers (SAME-S: 24 each, 53 M weights, 98 % of each coder's weights), which do
# nearly all of a coder's products, where they are at least INT8_CODER_MIN_FEATURES wide. On
# random weights of the released small shapes (388 frames, 2 threads, AVX2 only) the decode then
# takes 0.67x the float32 time at log-mel L1 0.0006 against it, and the encode 0.73x with the
# latents 0.13 % away (the bf16 coders' latents are 0.40 % away). Narrower layers gain nothing:
# at 4096 rows a 512-wide block's two shapes ran at 1.76x and 0.90x float32, 256 and 128 at
# 0.64-0.94x, 64 at 0.37x (the fixtures' SAMEs are 32 wide and stay float32). The in/out mappings,
# weight-normed convolutions, bottleneck, RoPE and attention stay float32.
INT8_CODER_LAYERS = (".transformers.",)
INT8_CODER_MIN_FEATURES = 512


def int8_coder_layer(name: str, layer: nn.Module) -> bool:
    """Whether the SAME autoencoder's module ``name`` runs in int8 at the int8 precision."""
    if not isinstance(layer, nn.Linear) or layer.in_features < INT8_CODER_MIN_FEATURES:
        return False
    return name.startswith(("encoder.", "decoder.")) and any(part in name for part in INT8_CODER_LAYERS)


def int8_coders_copy(
    autoencoder: nn.Module,
    parts: tuple[str, ...] = ("encoder", "decoder"),
    reuse: dict | None = None,
    cache: Int8Cache | None = None,
) -> nn.Module:
    """A copy of the SAME ``autoencoder`` whose ``parts``' layers named by :func:`int8_coder_layer`
    are int8 (:func:`sa3core.modules.int8.int8_inference_copy`, ``reuse`` and ``cache`` as there)."""
    prefixes = tuple(f"{part}." for part in parts)
    return int8_inference_copy(
        autoencoder,
        lambda name: name.startswith(prefixes) and int8_coder_layer(name, autoencoder.get_submodule(name)),
        reuse=reuse,
        cache=cache,
    )


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
        int8: bool | None = None,
    ) -> None:
        self.folder = folder
        self.device = torch.device(device)
        self.bf16 = (self.device.type == "cpu" and cpu_has_bf16()) if bf16 is None else bool(bf16)
        self.int8 = default_int8(self.device, bf16) if int8 is None else bool(int8)
        if self.int8 and self.bf16:
            raise Sa3Error("int8 and bf16 are two precisions; ask for one (--int8 or --bf16)")
        if self.int8 and (self.device.type != "cpu" or not int8_supported()):
            raise Sa3Error(
                "int8 linear layers need torch's x86 int8 kernels on the CPU, which this machine has not; "
                "leave --int8 out"
            )
        self.dit = load_dit(folder).float().to(self.device)
        self.conditioners = load_conditioners(folder).float().to(self.device)
        self.autoencoder = ReleasedAutoencoder.from_state_dict(folder.config.autoencoder, folder.parts["autoencoder"])
        self.autoencoder = self.autoencoder.to(self.device)
        if self.bf16:
            self.autoencoder.coders_to(torch.bfloat16)
        self.text_encoder = text_encoder
        self._prompts = EncodedPrompts(text_encoder.encode)  # repeated prompts skip T5Gemma
        self._int8_layers: dict = {}  # the last int8 copy's layers, reused where their weights did not change
        self._int8_cache = Int8Cache.default() if self.int8 else None  # quantised weights kept between processes
        self._dit_run = self._run_copy()
        self._autoencoder_run = None if self.int8 else self.autoencoder  # the int8 copy: made on first use
        self._coder_parts: set[str] = set()  # the coders the int8 copy has in int8
        self.diffusion = folder.config.model.diffusion
        self.chunked = folder.config.model.pretransform.chunked
        self.latent_channels = self.dit.config.io_channels

    # ------------------------------------------------------------------ LoRA
    def attach_loras(self, stack, merge: bool) -> None:
        """Apply a :class:`sa3core.lora.LoraStack` to the float32 DiT and the conditioners (the
        official LoRA targets; the text encoder and SAME are not adapted), then remake the bf16
        copy the DiT runs as, so it carries the adapters too."""
        stack.attach({LORA_PREFIXES["dit"]: self.dit, LORA_PREFIXES["conditioners"]: self.conditioners}, merge)
        self._dit_run = self._run_copy()

    # ------------------------------------------------------------------ precision
    @property
    def precision(self) -> str:
        """What the DiT runs as: "bf16", "int8" (its block linears, and SAME's transformer linears) or "float32"."""
        return "bf16" if self.bf16 else "int8" if self.int8 else "float32"

    def _run_copy(self):
        """The model the DiT calls run: the bf16 copy, the float32 DiT, or None for the int8 copy,
        made on the first call (:meth:`_dit`)."""
        if self.bf16:
            return bf16_inference_copy(self.dit)
        return None if self.int8 else self.dit

    def prepare(self) -> None:
        """Make what the first DiT call, the first decode and the first encode would (the int8
        copies), now: a daemon does it before it listens."""
        self._dit()
        self._coders("decoder", "encoder")

    def _dit(self):
        if self._dit_run is None:
            self._dit_run = int8_inference_copy(self.dit, int8_layer, reuse=self._int8_layers, cache=self._int8_cache)
            self._int8_layers = int8_layers(self._dit_run)
        return self._dit_run

    def _coders(self, *parts: str):
        """The SAME autoencoder the encode and decode run: ``autoencoder``, or at the int8
        precision its copy with ``parts`` ("encoder", "decoder") in int8, each packed at its first
        use: a generate never reads the encoder's float weights (212 MB for SAME-S) or packs them."""
        if self.int8 and not self._coder_parts.issuperset(parts):  # SAME carries no LoRA: one copy serves every take
            wanted = self._coder_parts | set(parts)
            earlier = int8_layers(self._autoencoder_run) if self._autoencoder_run is not None else None
            self._autoencoder_run = int8_coders_copy(
                self.autoencoder, tuple(sorted(wanted)), reuse=earlier, cache=self._int8_cache
            )
            self._coder_parts = wanted
        return self._autoencoder_run

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
            return self._dit().encode_condition(context.to(self.device), global_cond.to(self.device))

    # ------------------------------------------------------------------ the DiT
    @torch.inference_mode()
    def velocity(self, x, t, cond: ReleasedCondition, local: torch.Tensor | None, frame_mask: torch.Tensor):
        """v float32 [B, C, T] on x's device; ``local`` concat(mask, mask * latents) [B, C + 1, T] or None (zeros)."""
        local = None if local is None else local.to(self.device)
        with self._autocast():
            v = self._dit()(x.to(self.device), t.to(self.device), cond, local, frame_mask.to(self.device))
        return v.float().to(x.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ the autoencoder
    @torch.inference_mode()
    def encode_audio(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """audio [B, 2, S] -> latents [B, C, ceil(S / 4096)]; SAME-L draws its token noise from ``generator``."""
        return self._coders("encoder").encode(audio.to(self.device), generator, chunked=self.chunked).float()

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """latents [B, C, F] -> audio [B, 2, F * 4096] (not clipped), its noise drawn from ``generator``.

        The latents are made contiguous first: the decoder's noise lands on elements in memory
        order, and the official sampler hands its decoder contiguous latents."""
        return (
            self._coders("decoder")
            .decode(latents.to(self.device).contiguous(), generator, chunked=self.chunked)
            .float()
        )

    def semitone_layout(self):
        """Released latents hold no measured semitone channels (sa3's scale lock has no handle)."""
        return None


def load(
    path: str | Path,
    device: str = "cpu",
    bf16: bool | None = None,
    text_dtype: torch.dtype | None = None,
    int8: bool | None = None,
) -> ReleasedTorchBackend:
    """A released DiT folder (model_config.json, model.safetensors, the text encoder's folder) as a backend.

    ``text_dtype`` None: :func:`default_text_dtype`."""
    folder = open_released(path)
    text_dtype = default_text_dtype(device, bf16) if text_dtype is None else text_dtype
    prompt = next(spec for spec in folder.config.model.conditioning.configs if spec.type == "t5gemma")
    text = load_text_encoder(folder.text_encoder_dir(), prompt.config.max_length, dtype=text_dtype)
    return ReleasedTorchBackend(folder, text, device=device, bf16=bf16, int8=int8)


def default_int8(device: torch.device, bf16: bool | None) -> bool:
    """int8 DiT block linears and SAME transformer linears at the default precision (``bf16``
    None) on an x86 CPU without native bf16: there the DiT step is 1.5-1.9x faster than float32 and
    the SAME-S decode 1.5x (AMD EPYC, AVX2 only, 2 threads; ``sa3 bench int8_linears``, ``sa3
    bench versus_official``), and the take stays within the default precision's tolerance of the
    float32 take. ``--fp32`` (``bf16=False``) and ``--bf16`` keep it off."""
    return bf16 is None and device.type == "cpu" and not cpu_has_bf16() and int8_supported()


def default_text_dtype(device: str, bf16: bool | None) -> torch.dtype:
    """The T5Gemma dtype when none is asked for: bf16 as the official code runs it, except at the
    default precision (``bf16`` None) on a CPU without native bf16, where bf16 is emulated: 256
    tokens take 4.4 s in bf16 and 0.58 s in float32 on an AVX2-only AMD EPYC (2 threads). Float32
    text moves the audio by about 2e-3, inside the default precision's tolerance; ``--fp32``
    (``bf16=False``) keeps the official bf16 text for parity."""
    if bf16 is None and torch.device(device).type == "cpu" and not cpu_has_bf16():
        return torch.float32
    return torch.bfloat16
