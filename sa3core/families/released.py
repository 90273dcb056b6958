"""The released Stable Audio 3 checkpoints as a model family, run with the official numerics.

A folder in the released layout holds ``model_config.json`` and ``model.safetensors`` (and the
text encoder's folder the prompt conditioner names); :mod:`sa3core.released` reads and runs it.
This module says what the official ``StableAudioModel.generate`` does with a request, so that on
the CPU at float32 the same seed gives the same audio (tests/released/test_pipeline_parity.py):

- **Defaults** from the config: post-trained models (``rf_denoiser``) ping-pong, 8 steps,
  guidance 1; base models (``rectified_flow``) Euler, 50 steps, guidance 7 with the orthogonal
  (APG) update. Both on the fixed LogSNR schedule (:mod:`sa3core.released.sampling`).
- **Padding**: a request of ``n`` samples is made ``n + 6 s`` long (``exact_length=True``, an
  sa3 option: ``n`` long; a 1 s take of released small then costs 1/6 of a 60 s one instead of
  1/5, the DiT's per-step weight traffic being the floor; the models were trained with the
  headroom, and the same seed gives another take: ``python -m bench.exact_length``), rounded up to whole frames
  and to the encoder's attention alignment (two frames: 8192 samples), and capped at the
  config's ``sample_size``; the valid frames are ``ceil(n / 4096) + 64``, the rest is padding.
  Padded frames follow the semantics the weights were trained with (flash-attention varlen:
  they leave every softmax, attention and feed-forward write zero there); the official CPU path
  only zeroes their values, which changes the valid frames too. sa3 follows the trained
  semantics, as the fixtures' ``trained`` references do. The decoded audio is zeroed after the
  valid frames, clipped to [-1, 1] and cut to the request.
- **Random draws**, all from one generator seeded like the official ``torch.manual_seed(seed)``,
  in the official order: the starting noise [variations, C, frames]; the SAME encoder's token
  noise per window (SAME-L, edits); one draw per ping-pong step, the last one too; per decode
  window the bottleneck noise, then the decoder's token noise.
- **Conditions**: the prompt through T5Gemma (bf16, as the official run) and its learned
  padding, the request's seconds as a token and as the global condition. Guidance batches the
  unconditional rows: a context of zeros (the seconds token too) with the same global condition,
  or a negative prompt's tokens with zeros at its padded positions.
- **Edits**: a sample mask (1 keep) over the padded length, zero in each region and after the
  request, read at the first sample of each frame; the DiT's local input is
  ``concat(mask, latents * mask)``. Outside the regions the pipeline keeps the input bit-exact.
  Audio-to-audio starts at ``init_noise_level`` σ from ``latents * (1 - σ) + noise * σ``, its
  local input zero; the input is encoded after the starting noise is drawn.
- **Levels**: the official audio as made (``Plan.levels`` False): no -1 dBTP ceiling, no RMS
  matching of edits.

sa3's steering options (scale lock, tempo grid, one-shot tail) are not for these models: asking
for one is the family interface's one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import timebase
from ..errors import Sa3Error
from . import FAMILIES, ModelFamily, Plan, Sampling

HEADROOM_SECONDS = 6.0  # generate's duration_padding_sec
# generate aligns the length to chunk_size // stride latents, reading chunk_size from the encoder's
# config with this default when the key is absent (the SAME constructor's own default is 128).
GENERATE_CHUNK_DEFAULT = 32
OBJECTIVE_DEFAULTS = {  # the official inference defaults per diffusion objective
    "rf_denoiser": ("pingpong", 8, 1.0),  # post-trained: ping-pong, 8 steps, no guidance
    "rectified_flow": ("euler", 50, 7.0),  # base: Euler, 50 steps, guidance 7 (APG)
}


@dataclass
class ReleasedSettings:
    """What the pipeline reads of a released model (from its config and the released inference rules)."""

    name: str
    objective: str
    sampler: str
    steps: int
    cfg: float
    max_seconds: float  # the config's sample_size
    align_frames: int = 2  # the padded length is a multiple of this many frames
    apg: float = 1.0  # the share of guidance's orthogonal update (official apg_scale)
    cfg_rescale: float = 0.0  # recorded in takes' comments; released guidance does not rescale
    text_encoder: str = "t5gemma"  # what `sa3 info` shows: the T5Gemma folder the prompt conditioner names


def padded_frames(samples: int, settings: ReleasedSettings, headroom: float = HEADROOM_SECONDS) -> int:
    """Latent frames the official generate makes for ``samples`` (44.1 kHz): + ``headroom``
    seconds (6 as released; 0 in exact-length mode), rounded up to whole frames, then to
    ``align_frames``, capped at ``max_seconds``."""
    frame = timebase.SAMPLES_PER_FRAME
    target = samples + timebase.seconds_to_samples(headroom)
    frames = -(-target // frame)
    frames = -(-frames // settings.align_frames) * settings.align_frames
    cap = timebase.seconds_to_samples(settings.max_seconds) // frame
    return min(frames, cap)


def valid_frames(samples: int, frames: int, headroom: float = HEADROOM_SECONDS) -> int:
    """Frames that are not padding: the request's frames plus the headroom's whole frames (64 for 6 s)."""
    extra = int(headroom * timebase.SAMPLE_RATE / timebase.SAMPLES_PER_FRAME)
    return min(timebase.samples_to_frames(samples) + extra, frames)


class ReleasedSampling(Sampling):
    """The official generate's latents, draws, sampler, guidance and decode (module docstring)."""

    def __init__(self, backend, settings: ReleasedSettings, made: int, headroom: float = HEADROOM_SECONDS) -> None:
        super().__init__(backend, settings, made)
        self.channels = backend.latent_channels
        self.frames = padded_frames(made, settings, headroom)
        self.valid = valid_frames(made, self.frames, headroom)

    def noise(self, seed: int, variations: int) -> torch.Tensor:
        self.generator = torch.Generator().manual_seed(seed)
        return torch.randn(variations, self.channels, self.frames, generator=self.generator)

    def encode(self, audio: np.ndarray) -> torch.Tensor:
        length = self.frames * timebase.SAMPLES_PER_FRAME
        padded = torch.zeros(1, timebase.CHANNELS, length)  # official: zero-padded (or cut) to the length
        padded[0, :, : audio.shape[1]] = torch.from_numpy(np.asarray(audio[:, :length], dtype=np.float32))
        return self.backend.encode_audio(padded, self.generator).cpu()

    def keep_frames(self, spans: list[tuple[int, int]], total: int) -> torch.Tensor:
        keep = torch.ones(self.frames * timebase.SAMPLES_PER_FRAME)
        for start, end in spans:
            keep[start:end] = 0.0
        keep[total:] = 0.0  # after the request: new, as in training
        return keep[:: timebase.SAMPLES_PER_FRAME][None, None]  # each frame's first sample (1, 1, frames)

    def sample(
        self, plan, prompt, noise, source, keep, steps, cfg, progress=None, negative_prompt=None, init_noise_level=None
    ):
        from ..released.dit import ReleasedCondition
        from ..released.sampling import apg_velocity, sample

        backend, variations = self.backend, noise.shape[0]
        seconds = torch.full((variations,), timebase.samples_to_seconds(self.made))  # the request's own
        context, global_cond = backend.context([prompt] * variations, seconds)
        cond = backend.condition(context, global_cond)
        guided = cfg != 1.0
        if guided:
            if negative_prompt is None:
                negative = torch.zeros_like(context)
            else:
                negative, _ = backend.context([negative_prompt] * variations, seconds, negative=True)
            both = ReleasedCondition.cat([cond, backend.condition(negative, global_cond)])
        frame_mask = (torch.arange(self.frames) < self.valid).expand(variations, -1)
        local = torch.cat([keep, source * keep], dim=1) if bool(keep.any()) else None  # None: all zeros
        start = 1.0 if init_noise_level is None else float(init_noise_level)
        x = noise if init_noise_level is None else source * (1 - start) + noise * start  # audio-to-audio

        def velocity_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return backend.velocity(x, t, cond, local, frame_mask)
            pair = None if local is None else torch.cat([local, local])
            both_v = backend.velocity(torch.cat([x, x]), torch.cat([t, t]), both, pair, frame_mask.repeat(2, 1))
            v_cond, v_uncond = both_v.chunk(2)
            return apg_velocity(x, t, v_cond, v_uncond, cfg, frame_mask, self.settings.apg)

        return sample(self.settings.sampler, velocity_fn, x, steps, self.generator, start, progress)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        audio = self.backend.decode_latents(latents, self.generator).cpu()
        real = torch.arange(audio.shape[-1]) < self.valid * timebase.SAMPLES_PER_FRAME  # padding decodes to noise
        return (audio * real).clamp(-1.0, 1.0)[..., : self.made].numpy().astype(np.float32)


@FAMILIES.register("released")
class ReleasedFamily(ModelFamily):
    name = "released"
    hooks = frozenset({"exact_length"})

    def recognises(self, folder: Path) -> bool:
        return (folder / "model_config.json").is_file() and (folder / "model.safetensors").is_file()

    def load(self, folder: Path, backend: str = "torch", **backend_options):
        from ..released import backend as released_backend
        from ..released.checkpoint import read_config

        if backend != "torch":
            if backend != "onnx":
                raise Sa3Error(f"a released Stable Audio 3 model runs on the torch or onnx backend, not {backend!r}")
            from ..released import onnx_backend  # the export (folder or folder/onnx) holds model_config.json

            unknown = set(backend_options) - {"threads", "arena", "cache"}
            if unknown:
                name = sorted(unknown)[0].replace("_", " ")
                raise Sa3Error(f"a released Stable Audio 3 model on the onnx backend takes no {name} option")
            model = onnx_backend.load(folder, **backend_options)
            return model, self.settings(folder, read_config(model.folder))
        unknown = set(backend_options) - {"bf16", "int8", "device", "text_dtype"}
        if unknown:  # sa3's own options (phase_iterations) mean nothing to these models
            raise Sa3Error(f"a released Stable Audio 3 model takes no {sorted(unknown)[0].replace('_', ' ')} option")
        config = read_config(folder)
        if not config.is_dit:
            raise Sa3Error(
                f"{str(folder)!r} holds a SAME autoencoder alone; generating needs a Stable Audio 3 DiT folder"
            )
        settings = self.settings(folder, config)
        return released_backend.load(folder, **backend_options), settings

    @staticmethod
    def settings(folder: Path, config) -> ReleasedSettings:
        """The model's defaults: the official inference rules for its objective, its length limit."""
        objective = config.model.diffusion.diffusion_objective
        sampler, steps, cfg = OBJECTIVE_DEFAULTS[objective]
        encoder = json.loads((folder / "model_config.json").read_text(encoding="utf-8"))
        encoder = encoder["model"]["pretransform"]["config"]["encoder"]["config"]
        chunk = encoder.get("chunk_size", GENERATE_CHUNK_DEFAULT)
        align = max(1, chunk // config.autoencoder.stride)
        max_seconds = timebase.samples_to_seconds(config.sample_size)
        return ReleasedSettings(folder.name, objective, sampler, steps, cfg, max_seconds, align)

    def attach_loras(self, backend, stack, merge: bool) -> None:
        """The official LoRA files adapt the DiT and the conditioners (keys under ``model.`` and
        ``conditioners.``, :data:`sa3core.released.backend.LORA_PREFIXES`)."""
        backend.attach_loras(stack, merge)

    def plan_recipe(self, backend, settings, mode, prompt, samples, steering) -> dict[str, object]:
        exact = bool(self.check_steering(steering, mode).get("exact_length"))
        return {"exact_length": True} if exact else {}  # only then: other takes' recipes stay as they were

    def plan(self, backend, settings, mode, prompt, samples, bpm, meter, steering) -> Plan:
        exact = bool(self.check_steering(steering, mode).get("exact_length"))
        headroom = 0.0 if exact else HEADROOM_SECONDS
        # bpm and meter set lengths only: the released models hear tempo and meter in the prompt alone
        return Plan(made=samples, sampling=ReleasedSampling(backend, settings, samples, headroom), levels=False)
