"""Rendering through a running ``sa3 serve`` daemon (``sa3 render --daemon ENDPOINT``).

Same interface as :class:`~sa3.render.runner.InProcessRenderer`: ``identity`` plus
``generate`` / ``inpaint`` / ``continue_`` returning float32 [variations, 2, samples] at 44.1 kHz.
The daemon is asked for its model (``hello``) once, up front, so an unreachable daemon is an
error before any job starts.
"""

from __future__ import annotations

import copy
from pathlib import Path

from sa3core import timebase
from sa3core.errors import Sa3Error


class DaemonRenderer:
    def __init__(self, endpoint: str) -> None:
        from bridge.client import Client, curve_from_env

        self.endpoint = endpoint
        self.client = Client(endpoint, curve=curve_from_env(), retries=1)
        self.capabilities = self.client.hello("sa3 render")
        # The daemon reports a model name, not a hash of its weights: renders are matched by name.
        self.identity = f"daemon:{self.capabilities.get('model', 'unknown')}"
        self.model: str | None = None  # the daemon's model the jobs name (protocol 1.4); None: its default
        self.defaults = self.capabilities

    def for_job(self, job) -> DaemonRenderer:
        """This renderer for the job's ``model``, a name the daemon serves (``capabilities``
        ``models``, protocol 1.4); a one-line Sa3Error naming the ones it serves otherwise."""
        name = job.spec.model
        if name is None:
            return self
        served = {entry.get("name"): entry for entry in self.capabilities.get("models", [])}
        if name not in served:
            serves = ", ".join(map(str, served)) or "one model, unnamed (a daemon before protocol 1.4)"
            raise Sa3Error(
                f"model {name!r} is not served by the daemon at {self.endpoint} (it serves: {serves}); "
                f"start it with `sa3 serve --model {name}` (several --model options serve several)"
            )
        view = copy.copy(self)
        view.model, view.identity, view.defaults = name, f"daemon:{name}", served[name]
        return view

    def recipe(self, job) -> dict:
        """Steps and guidance of the job's takes: the sheet's, else the daemon model's defaults."""
        spec, told = job.spec, self.defaults
        recipe = {
            "steps": spec.steps if spec.steps is not None else told.get("default_steps"),
            "cfg": spec.cfg if spec.cfg is not None else told.get("default_cfg"),
        }
        if spec.mode == "transform":
            recipe["init_noise_level"] = spec.init_noise_level
        return recipe

    def _run(self, mode: str, prompt: str, progress=None, loras=(), **fields):
        fields = {k: v for k, v in {**fields, "model": self.model}.items() if v is not None}
        if loras:  # adapters of the daemon's LoRA folder, by name (protocol 1.5)
            fields["loras"] = [(Path(ref).stem if Path(ref).suffix == ".safetensors" else ref, s) for ref, s in loras]
        return self.client.run(mode, prompt, progress, sample_rate=timebase.SAMPLE_RATE, **fields).audio

    def generate(self, prompt, samples, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()):
        common = dict(steps=steps, cfg=cfg, seed=seed, variations=variations, loras=loras, **_tempo(bpm, meter))
        return self._run("generate", prompt, progress, samples=samples, **common)

    def inpaint(
        self, audio, prompt, regions, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        common = dict(steps=steps, cfg=cfg, seed=seed, variations=variations, loras=loras, **_tempo(bpm, meter))
        return self._run("inpaint", prompt, progress, audio=audio, regions=regions, **common)

    def continue_(
        self, audio, prompt, samples, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        common = dict(steps=steps, cfg=cfg, seed=seed, variations=variations, loras=loras, **_tempo(bpm, meter))
        return self._run("continue", prompt, progress, audio=audio, samples=samples, **common)

    def transform(
        self, audio, prompt, level, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        common = dict(steps=steps, cfg=cfg, seed=seed, variations=variations, loras=loras, **_tempo(bpm, meter))
        return self._run("transform", prompt, progress, audio=audio, init_noise_level=level, **common)

    def close(self) -> None:
        self.client.close()


def _tempo(bpm, meter) -> dict:
    """The song's tempo and meter as request fields (none when the job has no tempo)."""
    return {} if bpm is None else {"bpm": bpm, "meter": meter or "4/4"}
