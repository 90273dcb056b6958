"""The onnxruntime backend of a released Stable Audio 3 model (``--backend onnx``).

``ReleasedFamily.load(folder, backend="onnx")`` builds a :class:`ReleasedOnnxBackend` from an
export made by ``sa3 export onnx --model RELEASED_FOLDER`` (export/released_export.py): either
the export folder itself or a released folder whose ``onnx/`` subfolder holds it. It has the
interface of :class:`sa3core.released.backend.ReleasedTorchBackend`, so the released family's
sampling runs unchanged; what runs where:

- onnxruntime: T5Gemma, the DiT's condition and step, one SAME encode/decode window;
- Python: tokenisation, the two small conditioners (torch, from ``conditioners.safetensors``),
  the released long-input windows (128 latents overlapping 32) and their stitching, and every
  random draw: the decoder's bottleneck noise and token noise, SAME-L's encoder token noise,
  drawn from the request's generator in the order :mod:`sa3core.released.same` draws them.

So the same seed gives the torch backend's float32 audio (``--fp32``; the torch backend's
default runs T5Gemma in bf16, as the official code does, which moves the audio by ~2e-3).
Memory: each SAME window is at most 128 latents (flat with length); the DiT step's attention is
onnxruntime's flash attention (``com.microsoft.MultiHeadAttention``, export/released_graphs.py),
so no [B, H, N, N] score matrix exists and the step's activations grow linearly with the frames;
the sessions plan no memory pattern for one shape, and the step's session is ``lean``
(sa3core.onnx_backend.open_session: no buffer reuse between shape classes, its arena given back
after each run), so its peak grows +129 MiB at 10 s to +237 MiB at 120 s (docs/export.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import Sa3Error
from ..manifest import MANIFEST_NAME, read_manifest
from .checkpoint import load_strict, read_config
from .conditioners import assemble, build_conditioners
from .dit import ReleasedCondition
from .same import kept_frames, window_span, window_starts

FAMILY = "released"
HOP = 4096  # samples per latent frame
# Parts whose activations grow with the length: no buffer reuse, an arena given back after each run
# (sa3core.onnx_backend.open_session, ``lean``).
LEAN_PARTS = ("dit_step",)


def find_released_export(folder: str | Path) -> Path:
    """``folder`` if it holds a released export, else ``folder/onnx``; a one-line Sa3Error otherwise."""
    folder = Path(folder)
    for candidate in (folder, folder / "onnx"):
        if (candidate / MANIFEST_NAME).is_file():
            manifest = read_manifest(candidate, runtime="onnx")
            if manifest.model.get("family") != FAMILY:
                raise Sa3Error(
                    f"{str(candidate)!r} holds an export of an sa3 model, not of this released one; "
                    f"run `sa3 export onnx --model {folder} -o {folder / 'onnx'} --force`"
                )
            return candidate
    raise Sa3Error(
        f"{str(folder)!r} holds no ONNX export; run `sa3 export onnx --model {folder} -o {folder / 'onnx'}` first"
    )


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal float32 draws, as ``sa3core.released.same`` draws its noise (contiguous)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.empty(shape, dtype=torch.float32, device=device).normal_(generator=generator).cpu()


def encoder_window_feeds(audio: torch.Tensor, codec: dict, generator) -> tuple[dict[str, np.ndarray], int]:
    """One encode window: audio [B, 2, F * 4096] -> (the graph's feeds, F). Pads to whole units
    with zeros (as the eager encoder pads) and draws SAME-L's token noise [B * Fp, 1, D]."""
    B, frames = audio.shape[0], audio.shape[-1] // HOP
    unit = codec["encoder_unit_frames"]
    padded = -(-frames // unit) * unit
    feeds = {"audio": np.zeros((B, audio.shape[1], padded * HOP), dtype=np.float32)}
    feeds["audio"][..., : frames * HOP] = audio.numpy()
    if codec["encoder_token_noise"]:
        noise = _normal((B * padded, 1, codec["encoder_width"]), generator)
        feeds["token_noise"] = noise.reshape(B, padded, 1, -1).numpy()
    return feeds, frames


def decoder_window_feeds(latents: torch.Tensor, codec: dict, generator) -> tuple[dict[str, np.ndarray], int]:
    """One decode window: latents [B, C, F] -> (the graph's feeds, F). Draws, in the eager order,
    the bottleneck noise [B, C, F] then the token noise [B * Fp, 16, D] (Fp: F padded to whole
    units, whose padded frames the eager decoder also draws for)."""
    B, C, frames = latents.shape
    unit = codec["decoder_unit_frames"]
    padded = -(-frames // unit) * unit
    shape = (B, C, padded)
    feeds = {"latents": np.zeros(shape, np.float32), "bottleneck_noise": np.zeros(shape, np.float32)}
    feeds["latents"][..., :frames] = latents.numpy()
    if codec["bottleneck_noise"]:
        feeds["bottleneck_noise"][..., :frames] = _normal((B, C, frames), generator).numpy()
    group, width = codec["decoder_out_group"], codec["decoder_width"]
    if codec["decoder_token_noise"]:
        tokens = _normal((B * padded, group, width), generator).reshape(B, padded, group, width).numpy()
    else:
        tokens = np.zeros((B, padded, group, width), np.float32)
    feeds["token_noise"] = tokens
    feeds["frame_valid"] = (np.arange(padded) < frames).astype(np.float32)
    return feeds, frames


# Where each window feed holds its frames: (axis, values per frame).
_FRAME_AXES = {"audio": (-1, HOP), "token_noise": (1, 1), "latents": (-1, 1), "bottleneck_noise": (-1, 1),
               "frame_valid": (-1, 1)}  # fmt: skip


def code_in_windows(part: str, run, x: torch.Tensor, codec: dict, generator) -> torch.Tensor:
    """Encode (``part`` "same_encoder": audio [B, 2, F * 4096] of whole frames -> latents [B, C, F])
    or decode ("same_decoder": latents [B, C, F] -> audio [B, 2, F * 4096]) through ``run`` (the
    part's graph: feeds -> its output), windowed as :meth:`ReleasedAutoencoder.encode` and
    ``decode`` window: one pass below a window, else the released windows, each drawing its noise
    whole in turn; where the export records the part's span context (SAME-S) only the frames the
    join keeps are run, widened by it, and the rest of the window's feeds is dropped."""
    role = "encoder" if part == "same_encoder" else "decoder"
    per_in, per_out = (HOP, 1) if role == "encoder" else (1, HOP)
    feeds_of = encoder_window_feeds if role == "encoder" else decoder_window_feeds
    total = x.shape[-1] // per_in
    window, overlap = codec["window_latents"], codec["overlap_latents"]
    if not codec["chunked"] or total < window:
        feeds, frames = feeds_of(x.contiguous(), codec, generator)
        return torch.from_numpy(run(feeds)[..., : frames * per_out])
    context = codec.get(f"{role}_span_context")  # absent from exports made before it: whole windows
    out = None
    starts = window_starts(total, window, overlap)
    for start, (a, b) in zip(starts, kept_frames(starts, window, overlap)):
        feeds, _ = feeds_of(x[..., start * per_in : (start + window) * per_in].contiguous(), codec, generator)
        first, last = window_span(window, (a, b), codec[f"{role}_unit_frames"], context)
        y = torch.from_numpy(run({name: _frames(name, array, first, last) for name, array in feeds.items()}))
        if out is None:
            out = y.new_zeros(*y.shape[:-1], total * per_out)
        out[..., (start + a) * per_out : (start + b) * per_out] = y[..., (a - first) * per_out : (b - first) * per_out]
    return out


def _frames(name: str, array: np.ndarray, first: int, last: int) -> np.ndarray:
    """Frames [first, last) of one of a window's feeds."""
    axis, per_frame = _FRAME_AXES[name]
    index = [slice(None)] * array.ndim
    index[axis] = slice(first * per_frame, last * per_frame)
    return np.ascontiguousarray(array[tuple(index)])


class ReleasedOnnxBackend:
    """Runs a released export with onnxruntime; the interface of ``ReleasedTorchBackend``.

    Shapes: prompts -> context [B, S, cond_token_dim] and global [B, global_cond_dim]; latents
    [B, latent_channels, frames]; audio [B, 2, frames * 4096]. ``folder`` is the export folder.
    """

    name = "onnx"

    def __init__(self, folder, threads: int | None = None, arena: bool = False, cache: bool = True) -> None:
        from ..onnx_backend import lean_run_options, open_session
        from .text import EncodedPrompts, T5GemmaTokenizer

        self.folder = find_released_export(folder)
        self.manifest = read_manifest(self.folder, runtime="onnx")
        missing = [p for p in ("text_encoder", "dit_condition", "dit_step", "same_encoder", "same_decoder")
                   if p not in self.manifest.parts]  # fmt: skip
        if missing:
            raise Sa3Error(f"{str(self.folder)!r} is a partial export (no {missing[0]}); export the model again")
        config = read_config(self.folder)
        self.diffusion = config.model.diffusion
        self.chunked = bool(self.manifest.codec["chunked"])
        self.codec = self.manifest.codec
        self.latent_channels = int(self.manifest.dit["io_channels"])
        self.tokenizer = T5GemmaTokenizer(self.folder / "tokenizer", int(self.manifest.model["text_max_length"]))
        self._prompts = EncodedPrompts(self._encode_text)
        with torch.device("meta"):
            conditioners = build_conditioners(config.model.conditioning)
        from safetensors.torch import load_file

        state = load_file(str(self.folder / "conditioners.safetensors"))
        self.conditioners = load_strict(conditioners, state, repr(str(self.folder / "conditioners.safetensors")))
        cache_dir = self.folder / "cache" if cache else None
        self.sessions = {
            part: open_session(self.folder / spec.file, threads, cache_dir, arena, lean=part in LEAN_PARTS)
            for part, spec in self.manifest.parts.items()
        }
        self._run_options = {part: lean_run_options() for part in LEAN_PARTS}
        self._stacked: tuple[ReleasedCondition, np.ndarray, np.ndarray] | None = None

    def _run(self, part: str, **feeds) -> list[np.ndarray]:
        return self.sessions[part].run(None, feeds, self._run_options.get(part))

    # ------------------------------------------------------------------ LoRA
    def attach_loras(self, stack, merge: bool) -> None:
        raise Sa3Error("LoRA files need the torch backend; drop --backend onnx (or the LoRA) and run again")

    # ------------------------------------------------------------------ text and conditions
    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (T5Gemma's last hidden state float32 [B, L, 768], mask bool [B, L])."""
        return self._prompts(prompts)  # repeated prompts skip T5Gemma

    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(prompts)
        (hidden,) = self._run("text_encoder", input_ids=ids.numpy(), attention_mask=mask.numpy())
        return torch.from_numpy(hidden), mask

    @torch.inference_mode()
    def context(self, prompts: list[str], seconds: torch.Tensor, negative: bool = False):
        """As ``ReleasedTorchBackend.context``: (context, global) of the prompts and seconds [B]."""
        hidden, mask = self.encode_text(prompts)
        tokens = self.conditioners["prompt"](hidden, mask)
        if negative:
            tokens = torch.where(mask[..., None], tokens, 0.0)
        outputs = {"prompt": tokens, "seconds_total": self.conditioners["seconds_total"](seconds.float())}
        return assemble(outputs, self.diffusion)

    @torch.inference_mode()
    def condition(self, context: torch.Tensor, global_cond: torch.Tensor) -> ReleasedCondition:
        global_embed, keys, values = self._run(
            "dit_condition",
            context=np.ascontiguousarray(context.float().numpy()),
            global_cond=np.ascontiguousarray(global_cond.float().numpy()),
        )
        cond = ReleasedCondition(
            torch.from_numpy(global_embed), list(torch.from_numpy(keys)), list(torch.from_numpy(values))
        )
        self._stacked = (cond, keys, values)  # the step reuses these arrays as they are
        return cond

    def _stack(self, cond: ReleasedCondition) -> tuple[np.ndarray, np.ndarray]:
        """The stacked keys/values of ``cond`` (a batch the sampler concatenated is stacked once)."""
        if self._stacked is None or self._stacked[0] is not cond:
            keys = torch.stack(cond.keys).numpy()
            values = torch.stack(cond.values).numpy()
            self._stacked = (cond, keys, values)
        return self._stacked[1], self._stacked[2]

    # ------------------------------------------------------------------ the DiT
    @torch.inference_mode()
    def velocity(self, x, t, cond: ReleasedCondition, local: torch.Tensor | None, frame_mask: torch.Tensor):
        """v float32 [B, C, T]; ``local`` concat(mask, mask * latents) [B, C + 1, T] or None (zeros)."""
        B, C, T = x.shape
        keys, values = self._stack(cond)
        if local is None:
            local = torch.zeros(B, C + 1, T)
        (v,) = self._run(
            "dit_step",
            x=np.ascontiguousarray(x.float().numpy()),
            t=np.ascontiguousarray(t.float().reshape(-1).expand(B).numpy()),
            global_embed=cond.global_embed.numpy(),
            keys=keys,
            values=values,
            local=np.ascontiguousarray(local.float().numpy()),
            frame_mask=np.ascontiguousarray(frame_mask.bool().numpy()),
        )
        return torch.from_numpy(v)

    # ------------------------------------------------------------------ the autoencoder
    @torch.inference_mode()
    def encode_audio(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """audio [B, 2, S] -> latents [B, C, ceil(S / 4096)]; SAME-L draws its token noise from ``generator``."""
        if audio.ndim != 3 or audio.shape[1] != 2 or audio.shape[-1] == 0:
            raise Sa3Error(f"SAME audio must be [batch, 2, length>0], got {list(audio.shape)}")
        total = -(-audio.shape[-1] // HOP)
        padded = torch.zeros(*audio.shape[:2], total * HOP)
        padded[..., : audio.shape[-1]] = audio.float()

        return code_in_windows(
            "same_encoder", lambda feeds: self._run("same_encoder", **feeds)[0], padded, self.codec, generator
        )

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """latents [B, C, F] -> audio [B, 2, F * 4096] (not clipped), its noise drawn from ``generator``."""
        if latents.ndim != 3 or latents.shape[1] != self.latent_channels or latents.shape[-1] == 0:
            raise Sa3Error(f"SAME latents must be [batch, {self.latent_channels}, length>0], got {list(latents.shape)}")
        return code_in_windows(
            "same_decoder", lambda feeds: self._run("same_decoder", **feeds)[0], latents.float(), self.codec, generator
        )

    def semitone_layout(self):
        """Released latents hold no measured semitone channels (sa3's scale lock has no handle)."""
        return None


def load(folder: str | Path, threads: int | None = None, arena: bool = False, cache: bool = True):
    """A released model's ONNX export (``folder`` or ``folder/onnx``) as a backend."""
    return ReleasedOnnxBackend(folder, threads=threads, arena=arena, cache=cache)
