"""Model families: what the generic :class:`~sa3core.pipeline.Pipeline` asks of a model.

A family brings its model folder format (recognise, load, save), its inference defaults
(sampler, steps, guidance, the longest take) and its own optional *steering hooks*: request
options that only its models understand (for sa3's own family: ``scale_lock_db``,
``tempo_grid``, ``tail_seconds``, and the tempo, key and meter rows it derives from the prompt).
The pipeline knows none of them: per request it asks the family for a :class:`Plan` and applies
what every family shares (exact lengths, regions and splicing, continuation, guidance, levels).
A request for a hook the loaded family lacks is a one-line :class:`~sa3core.errors.Sa3Error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Sa3Error
from ..registry import Registry

MODES = ("generate", "inpaint", "continue")


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
    - ``finish``: the decoded takes [B, 2, made] -> the takes [B, 2, request length]; None for none.
    """

    made: int
    condition: Callable[[int, bool], Any] | None = None
    held: int = 0
    held_latents: torch.Tensor | None = None
    steer: Callable[..., torch.Tensor] | None = None
    finish: Callable[[np.ndarray], np.ndarray] | None = None
    recipe: dict[str, object] = field(default_factory=dict)  # what a take's comment records besides the defaults


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
    from . import sa3  # noqa: F401  (registers "sa3")


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
    raise Sa3Error(
        f"model {str(folder)!r} is not an sa3 model folder (it needs model.json, same.safetensors, dit.safetensors)"
    )
