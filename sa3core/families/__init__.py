"""Model families: what the generic :class:`~sa3core.pipeline.Pipeline` asks of a model.

A family brings its model folder format (recognise, load, save), its inference defaults
(sampler, steps, guidance, the longest take) and its own optional *steering hooks*: request
options that only its models understand (for sa3's own family: ``scale_lock_db``,
``tempo_grid``, ``tail_seconds``, and the tempo, key and meter rows it derives from the prompt).
The pipeline knows none of them: per request it asks the family for a :class:`Plan` and applies
what every family shares (exact lengths, regions and splicing, continuation, levels). How the
request's latents are drawn, sampled, guided and decoded is the plan's :class:`Sampling`: sa3's
standard one unless the family brings its own (the released checkpoints do: their padding,
random-draw order, schedule, guidance and decoder noise are the official code's).
A request for a hook the loaded family lacks is a one-line :class:`~sa3core.errors.Sa3Error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import timebase
from ..errors import Sa3Error
from ..registry import Registry

MODES = ("generate", "inpaint", "continue", "transform")
PINGPONG_SEED_OFFSET = 1_000_003  # the standard sampling's ping-pong noise: its own generator, seed + this


@dataclass
class Plan:
    """How a family wants one request made (all lengths at the model's 44.1 kHz).

    - ``made``: samples the sampler makes and the decoder renders (may differ from the request's:
      sa3's tempo grid makes the take at a nearby tempo and ``finish`` warps it back);
    - ``condition``: ``condition(variations, guided)`` -> the family's extra condition rows for
      ``backend.condition`` (conditional rows, then as many unconditional ones when guided), or None;
    - ``held``: frames at the end held at ``held_latents`` [1, 256, held] while the rest is sampled;
    - ``steer``: ``steer(v, x, t, where)`` -> the velocity after the family's steering, where
      ``where`` [B, 1, frames] is 1 on the frames being generated; None for no steering;
    - ``finish``: the decoded takes [B, 2, made] -> the takes [B, 2, request length]; None for none;
    - ``sampling``: the request's :class:`Sampling` (None: the standard one for ``made`` samples);
    - ``levels``: apply sa3's level rules to the new audio (:mod:`sa3core.level`: the -1 dBTP ceiling,
      edits matched in RMS to the kept audio); False returns it at the level the model made it.
    """

    made: int
    condition: Callable[[int, bool], Any] | None = None
    held: int = 0
    held_latents: torch.Tensor | None = None
    steer: Callable[..., torch.Tensor] | None = None
    finish: Callable[[np.ndarray], np.ndarray] | None = None
    recipe: dict[str, object] = field(default_factory=dict)  # what a take's comment records besides the defaults
    sampling: Sampling | None = None
    levels: bool = True


class Sampling:
    """One request's latents, from its first random draw to its decoded audio; this class is
    sa3's standard way, which a family replaces where its models were made otherwise.

    The pipeline calls, in this order: :meth:`noise` (the request's first random draw),
    :meth:`encode` (edits and transforms), :meth:`keep_frames` (edits), :meth:`sample`, :meth:`decode`.
    ``channels`` and ``frames`` are the latents' shape [B, channels, frames]; ``frames`` may
    exceed the request's frames (the released family pads every request).

    Standard: latents [B, 256, ceil(made / 4096)], nothing padded; take k's starting noise from a
    generator seeded ``seed + k`` (each take depends on its own seed alone), ping-pong's fresh
    noise from one seeded ``seed + PINGPONG_SEED_OFFSET``, nothing drawn by the autoencoder;
    the model's sampler (:data:`sa3core.samplers.SAMPLERS`) on the length-shifted schedule;
    classifier-free guidance with the model's ``cfg_rescale``, the unconditional rows being the
    negative prompt, or the empty one; the duration condition is the frames' length.
    """

    def __init__(self, backend, settings, made: int) -> None:
        self.backend, self.settings, self.made = backend, settings, made
        self.channels = timebase.LATENT_CHANNELS
        self.frames = timebase.samples_to_frames(made)
        self.generator: torch.Generator | None = None

    def noise(self, seed: int, variations: int) -> torch.Tensor:
        """The starting noise float32 [variations, channels, frames]; starts the request's draws."""
        self.generator = torch.Generator().manual_seed(seed + PINGPONG_SEED_OFFSET)
        return torch.stack(
            [
                torch.randn(self.channels, self.frames, generator=torch.Generator().manual_seed(seed + k))
                for k in range(variations)
            ]
        )

    def encode(self, audio: np.ndarray) -> torch.Tensor:
        """Audio float32 [2, n] at 44.1 kHz (n <= frames * 4096) -> latents [1, channels, frames]."""
        return self.backend.encode_audio(torch.from_numpy(audio)[None]).cpu()

    def keep_frames(self, spans: list[tuple[int, int]], total: int) -> torch.Tensor:
        """The inpaint mask [1, 1, frames] (1 keep, 0 regenerate) of a ``total``-sample edit whose
        ``spans`` [start, end) (samples at 44.1 kHz) are new: every frame a span touches is new."""
        keep = torch.ones(1, 1, self.frames)
        for start, end in spans:
            keep[..., start // timebase.SAMPLES_PER_FRAME : timebase.samples_to_frames(end)] = 0.0
        return keep

    def sample(
        self,
        plan: Plan,
        prompt: str,
        noise: torch.Tensor,
        source: torch.Tensor,
        keep: torch.Tensor,
        steps: int,
        cfg: float,
        progress: Callable[[int, int], None] | None = None,
        negative_prompt: str | None = None,
        init_noise_level: float | None = None,
    ) -> torch.Tensor:
        """Latents float32 [B, channels, frames] from ``noise``; ``source`` [B, channels, frames]
        holds the latents to keep where ``keep`` [B, 1, frames] is 1. ``init_noise_level`` σ
        (audio-to-audio): start at time σ from ``source * (1 - σ) + noise * σ``."""
        from ..samplers import SAMPLERS, cfg_velocity, length_shift

        variations, frames = noise.shape[0], noise.shape[-1]
        backend, rescale = self.backend, self.settings.cfg_rescale
        seconds = torch.full((variations,), timebase.samples_to_seconds(frames * timebase.SAMPLES_PER_FRAME))
        guided = cfg != 1.0
        prompts = [prompt] * variations + ([negative_prompt or ""] * variations if guided else [])
        tokens, mask = backend.encode_text(prompts)
        rows = plan.condition(variations, guided) if plan.condition is not None else None
        cond = backend.condition(tokens, mask, seconds.repeat(2 if guided else 1), rows)
        frame_mask = torch.ones(variations, frames, dtype=torch.bool)
        start = 1.0 if init_noise_level is None else float(init_noise_level)
        x = noise if init_noise_level is None else source * (1.0 - start) + noise * start
        source = source * keep  # the model sees only what it must keep

        def velocity_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            v = guided_velocity(x, t)
            return v if plan.steer is None else plan.steer(v, x, t, 1.0 - keep)

        def guided_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return backend.velocity(x, t, cond, source, keep, frame_mask)
            both = backend.velocity(
                torch.cat([x, x]),
                torch.cat([t, t]),
                cond,
                torch.cat([source, source]),
                torch.cat([keep, keep]),
                torch.cat([frame_mask, frame_mask]),
            )
            v_cond, v_uncond = both.chunk(2)
            return cfg_velocity(v_cond, v_uncond, cfg, rescale, x, t)

        sampler = SAMPLERS.get(self.settings.sampler)()
        return sampler.sample(
            velocity_fn, x, steps, shift=length_shift(frames), generator=self.generator, progress=progress, start=start
        )

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> float32 [B, 2, made] at 44.1 kHz."""
        return self.backend.decode_latents(latents)[:, :, : self.made].cpu().numpy().astype(np.float32)


class ModelFamily:
    """The interface a model family implements (see the module docstring). ``settings`` is the
    family's own settings object; it has at least ``name``, ``sampler``, ``steps``, ``cfg``,
    ``cfg_rescale`` and ``max_seconds``."""

    name: str = ""
    hooks: frozenset[str] = frozenset()  # the steering options this family takes

    def recognises(self, folder: Path) -> bool:
        raise NotImplementedError

    def load(self, folder: Path, backend: str, **backend_options) -> tuple[Any, Any]:
        """-> (backend, settings) for a model folder in this family's format."""
        raise NotImplementedError

    def plan(self, backend, settings, mode: str, prompt: str, samples: int, bpm, meter, steering: dict) -> Plan:
        raise NotImplementedError

    def plan_recipe(self, backend, settings, mode: str, prompt: str, samples, steering: dict) -> dict[str, object]:
        """What a take's comment records of the family's own settings for this request."""
        raise NotImplementedError

    def attach_loras(self, backend, stack, merge: bool) -> None:
        """Apply a :class:`sa3core.lora.LoraStack` to the backend's adaptable modules (merged into
        the weights, or kept apart for per-request strengths); a family without LoRA says so."""
        raise Sa3Error(f"this model ({self.name} family) takes no LoRA files")

    def check_steering(self, steering: dict[str, Any], mode: str) -> dict[str, Any]:
        """The steering options asked for (None = the model's default, dropped); a one-line
        Sa3Error for one this family has not got."""
        asked = {k: v for k, v in steering.items() if v is not None}
        for key in asked:
            if key not in self.hooks:
                have = ", ".join(sorted(self.hooks)) or "none"
                raise Sa3Error(
                    f"this model ({self.name} family) has no {key.replace('_', ' ')}; its steering options: {have}"
                )
        return asked


FAMILIES: Registry[type[ModelFamily]] = Registry("model family")


def _register_builtin() -> None:
    from . import released, sa3  # noqa: F401  (register "released" and "sa3")


def family_named(name: str) -> ModelFamily:
    _register_builtin()
    return FAMILIES.get(name)()


def family_of_folder(folder: Path) -> ModelFamily:
    """The family whose format ``folder`` is in; a one-line Sa3Error naming what a folder needs."""
    _register_builtin()
    for name in FAMILIES.names() if folder.is_dir() else ():
        family = FAMILIES.get(name)()
        if family.recognises(folder):
            return family
    if (folder / "model_config.json").is_file() and (folder / "manifest.json").is_file():
        # a released model's ONNX export given as the folder itself: no weights, its config and graphs
        return FAMILIES.get("released")()
    raise Sa3Error(
        f"model {str(folder)!r} is not an sa3 model folder (it needs model.json, same.safetensors, dit.safetensors) "
        "nor a released Stable Audio 3 one (model_config.json, model.safetensors)"
    )
