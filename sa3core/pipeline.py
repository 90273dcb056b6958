"""The one Pipeline behind the CLI, the daemon, the render scripts and the tests.

    prompt -> text encoder -> DiT condition (once) --+
    noise  -> sampler (velocity_fn = DiT step, CFG) -+-> latents -> decoder -> crop -> splice

The pipeline knows no model family (:mod:`sa3core.families`): it asks the loaded family for a
plan per request (its extra condition rows, frames to hold, a steering hook, a finishing step,
and its :class:`~sa3core.families.Sampling`: latent shape and padding, random draws, sampler,
guidance, decode) and applies what every family shares. Lengths are exact: a request for N samples returns N
samples, at the rate asked for (the model runs at 44.1 kHz; other rates are resampled to).
Inpainting keeps every sample outside its regions bit-exact, at the input's own rate (only the
new audio is resampled, and spliced in with short equal-power crossfades that lie inside the
regions, :mod:`sa3core.splicing`); continuation returns the input unchanged followed by the new
audio.

Levels (:mod:`sa3core.level`): no new audio has a true peak above -1 dBTP (:data:`PEAK_CEILING`)
at the rate it is returned at. A generated take above it is turned down as a whole; inpainted
and continued audio is first matched in RMS to the kept audio next to it, then held under the
ceiling by a look-ahead gain on the new audio alone (the input's own samples are never touched).
A family whose plan says ``levels=False`` (the released checkpoints: the official audio) gets its
new audio as the model made it, spliced in with the same crossfades.

LoRA (:mod:`sa3core.lora`, every family that has adaptable modules): ``Pipeline.load(folder,
loras=[(path, strength), ...])`` applies the files in that order, merged into the weights (fixed
strengths, no cost per step); with ``merge_loras=False`` they stay apart and a request can run
with other strengths, one per file in [-2, 2]: ``with pipeline.lora_strengths([0.5, 1.0]):
pipeline.generate(...)``. Strength 0 gives the base model bit for bit. A take's recipe lists the
files (name, sha256, type, rank) and the strengths it was made with.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from . import level, limits, timebase
from .audio import resample_to_length
from .errors import Sa3Error
from .families import ModelFamily, Plan, Sampling, family_named, family_of_folder
from .lora import LoraStack
from .splicing import Region, check_audio, check_regions, place_new_audio, splice

__all__ = [
    "DEFAULT_MODEL_DIR",
    "PEAK_CEILING",
    "Pipeline",
    "Region",
    "check_rate",
    "check_regions",
    "default_model_dir",
    "limit_peaks",
    "model_region",
    "model_samples",
    "place_new_audio",
    "splice",
]

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
PEAK_CEILING = level.PEAK_CEILING  # -1 dBTP: no new audio is returned above it
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 384_000  # rates audio may come in and go out at

Progress = Callable[[int, int], None]
limit_peaks = level.limit_peaks  # each take turned down as a whole to just under the ceiling, where over it


def default_model_dir() -> Path:
    """The shipped default model folder; an Sa3Error that says what to do when the install lacks it."""
    if not (DEFAULT_MODEL_DIR / "model.json").exists():
        raise Sa3Error(
            f"the default model is missing from this install ({DEFAULT_MODEL_DIR} has no model.json); "
            "reinstall sa3 from a full checkout, or pass --model FOLDER"
        )
    return DEFAULT_MODEL_DIR


def check_rate(sample_rate: int, what: str = "sample rate") -> int:
    """A sample rate in Hz: a whole number from :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise Sa3Error(f"{what} must be a whole number of Hz (got {sample_rate!r})")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise Sa3Error(f"{what} {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def _to_rate(audio: np.ndarray, from_rate: int, to_rate: int, samples: int) -> np.ndarray:
    """``audio`` [..., n] resampled to exactly ``samples`` at ``to_rate``; itself at the same rate."""
    return audio if from_rate == to_rate else resample_to_length(audio, from_rate, to_rate, samples)


def model_samples(samples: int, sample_rate: int) -> int:
    """``samples`` at ``sample_rate`` as a sample count at the model's 44.1 kHz (the same number there)."""
    if sample_rate == timebase.SAMPLE_RATE:
        return int(samples)
    return timebase.seconds_to_samples(max(0, samples) / sample_rate)


def model_region(region: Region, sample_rate: int, total: int) -> Region:
    """``region`` (samples at ``sample_rate``) at the model's 44.1 kHz, rounded outwards: every model
    sample it touches, within a ``total``-sample input."""
    rate = timebase.SAMPLE_RATE
    return Region(region.start * rate // sample_rate, min(total, -(-region.end * rate // sample_rate)))


class Pipeline:
    """``Pipeline(backend, settings, family=None)``: ``backend`` runs the model's parts
    (sa3core.backends), ``settings`` are the family's settings (name, sampler, steps, cfg,
    cfg_rescale, max_seconds and the family's own), ``family`` defaults to sa3's own."""

    def __init__(self, backend, settings, family: ModelFamily | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.family = family if family is not None else family_named("sa3")
        self.loras: LoraStack | None = None  # the LoRA files applied, in order (use_loras)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        backend: str = "torch",
        loras: Sequence[str | Path | tuple[str | Path, float]] = (),
        merge_loras: bool = True,
        **backend_options,
    ) -> Pipeline:
        """Load a model folder in the format of a family that recognises it (sa3's own:
        ``model.json``, ``same.safetensors``, ``dit.safetensors``).

        ``path=None`` uses the shipped default model (:func:`default_model_dir`). ``loras``: LoRA
        files (strength 1) or (file, strength) pairs, applied in order (:meth:`use_loras`; the
        files are read and checked before the model loads).
        """
        stack = LoraStack.read(loras) if loras else None
        folder = default_model_dir() if path is None else Path(path)
        family = family_of_folder(folder)
        model_backend, settings = family.load(folder, backend, **backend_options)
        pipeline = cls(model_backend, settings, family)
        if stack is not None:
            pipeline.use_loras(stack, merge=merge_loras)
        return pipeline

    def use_loras(
        self, loras: LoraStack | Sequence[str | Path | tuple[str | Path, float]], merge: bool = True
    ) -> LoraStack:
        """Apply LoRA files to this model, in order, each at its strength (in [-2, 2]; 1 when a
        bare path is given). ``merge``: write the adapted weights once (fastest; the strengths
        are then fixed); False keeps them apart so :meth:`lora_strengths` can change them per
        request. Once per pipeline; a file that does not fit the model is a one-line Sa3Error."""
        if self.loras is not None:
            raise Sa3Error("this model already has LoRA files applied; load it again to use others")
        stack = loras if isinstance(loras, LoraStack) else LoraStack.read(loras)
        self.family.attach_loras(self.backend, stack, merge)
        self.loras = stack
        return stack

    def drop_loras(self) -> None:
        """Take the LoRA files off this model (applied with ``merge=False``; merged ones are part of
        the weights: load the model again). A server swapping adapter sets between jobs calls this,
        then :meth:`use_loras` with the next set. No files applied: nothing to do."""
        if self.loras is None:
            return
        self.loras.detach()
        self.loras = None

    @contextlib.contextmanager
    def lora_strengths(self, strengths: Sequence[float] | None) -> Iterator[None]:
        """Requests inside the block run with these LoRA strengths (one per file, in the order
        given at load; None: the load strengths). Needs ``merge_loras=False`` unless they equal
        the merged ones. One request at a time: the strengths are the model's state meanwhile."""
        if strengths is None:
            yield
            return
        if self.loras is None:
            raise Sa3Error("LoRA strengths given, but this model has no LoRA files applied")
        with self.loras.using(strengths):
            yield

    @classmethod
    def from_parts(cls, autoencoder, dit, settings, **backend_options) -> Pipeline:
        """sa3's own family from its parts (an autoencoder, a DiT and the settings of model.json)."""
        family = family_named("sa3")
        return cls(family.torch_backend(autoencoder, dit, settings, **backend_options), settings, family)

    @classmethod
    def random(
        cls,
        preset: str = "tiny",
        seed: int = 0,
        text_encoder: str = "minilm",
        backend: str = "torch",
        family: str = "sa3",
        **backend_options,
    ) -> Pipeline:
        """A randomly initialised model of a family's size preset: for tests, benchmarks and smoke runs."""
        if backend != "torch":
            raise Sa3Error("a random model runs on the torch backend only; export a model folder for other backends")
        model_family = family_named(family)
        model_backend, settings = model_family.random(preset, seed, text_encoder, **backend_options)
        return cls(model_backend, settings, model_family)

    def save(self, folder: str | Path) -> Path:
        """Write a model folder that :meth:`load` reads (torch backend only)."""
        return self.family.save(self.backend, self.settings, Path(folder))

    # ------------------------------------------------------------------ checks
    @property
    def max_samples(self) -> int:
        return timebase.seconds_to_samples(self.settings.max_seconds)

    def _check_length(self, samples: int, what: str = "requested length") -> int:
        return timebase.check_duration(int(samples), self.settings.max_seconds, what)

    # ------------------------------------------------------------------ public API
    def generate(
        self,
        prompt: str,
        samples: int,
        steps: int | None = None,
        cfg: float | None = None,
        seed: int = 0,
        variations: int = 1,
        progress: Progress | None = None,
        bpm: float | None = None,
        meter: str | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
        negative_prompt: str | None = None,
        **steering,
    ) -> np.ndarray:
        """Text to audio: float32 [variations, 2, samples] at ``sample_rate`` (``samples`` counts
        at that rate; the model makes the same length at 44.1 kHz, which is resampled).
        ``negative_prompt``: what guidance steers away from (used when ``cfg`` is not 1).

        ``bpm`` / ``meter`` (e.g. "6/8"): the take's tempo and meter, with a downbeat at sample 0
        (what a family does with them: sa3's conditions its model on them, :mod:`sa3core.musical`).
        ``steering``: the loaded family's own options (``self.family.hooks``; sa3's:
        ``scale_lock_db``, ``tempo_grid``, ``tail_seconds``, see :mod:`sa3core.families.sa3`);
        None means the model's default, an option the family lacks is an Sa3Error. Takes whose
        true peak at ``sample_rate`` is above :data:`PEAK_CEILING` are turned down to it as a whole.
        """
        rate = check_rate(sample_rate)
        length = self._check_length(model_samples(samples, rate))  # at 44.1 kHz
        plan = self._plan("generate", prompt, length, bpm, meter, steering)
        run = self._sampling(plan)
        keep = torch.zeros(variations, 1, run.frames)
        source = torch.zeros(variations, run.channels, run.frames)
        if plan.held:
            source[..., -plan.held :] = plan.held_latents
            keep[..., -plan.held :] = 1.0
        latents = self._sample(
            plan, prompt, run.frames, source, keep, steps, cfg, seed, variations, progress, negative_prompt, run
        )
        audio = run.decode(latents)
        if plan.finish is not None:
            audio = plan.finish(audio)
        audio = _to_rate(audio, timebase.SAMPLE_RATE, rate, samples)
        return level.limit_peaks(audio) if plan.levels else audio  # at the rate returned: resampling moves peaks

    def inpaint(
        self,
        audio: np.ndarray,
        prompt: str,
        regions: Sequence[Region],
        steps: int | None = None,
        cfg: float | None = None,
        seed: int = 0,
        variations: int = 1,
        progress: Progress | None = None,
        bpm: float | None = None,
        meter: str | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
        negative_prompt: str | None = None,
        **steering,
    ) -> np.ndarray:
        """Regenerate ``regions`` of ``audio`` [2, n] at ``sample_rate`` (regions in samples at that
        rate): float32 [variations, 2, n] at that rate, every sample outside the regions the
        input's own, bit-exact. Only the new audio is resampled from the model's 44.1 kHz; in each
        region it is matched in RMS to the kept audio around it, crossfaded in and held under the
        ceiling (:func:`place_new_audio`; crossfaded only where the family's plan says
        ``levels=False``). ``bpm`` / ``meter``: the song's, with a downbeat at sample 0 of
        ``audio``; ``steering`` and ``negative_prompt`` as in :meth:`generate`."""
        rate = check_rate(sample_rate)
        audio = check_audio(audio)
        given = audio.shape[1]
        total = self._check_length(model_samples(given, rate), "input audio")
        regions = check_regions(regions, given, rate)
        source = _to_rate(audio, rate, timebase.SAMPLE_RATE, total)
        # Each region at 44.1 kHz, rounded outwards; the family says which frames that makes new.
        spans = [(m.start, m.end) for m in (model_region(r, rate, total) for r in regions)]
        plan = self._plan("inpaint", prompt, total, bpm, meter, steering)
        generated = self._edit(
            plan, source, spans, total, prompt, steps, cfg, seed, variations, progress, negative_prompt
        )
        generated = _to_rate(generated, timebase.SAMPLE_RATE, rate, given)
        if not plan.levels:
            return np.stack([splice(audio, take, regions, rate) for take in generated])
        return np.stack([place_new_audio(audio, take, regions, rate) for take in generated])

    def continue_(
        self,
        audio: np.ndarray,
        prompt: str,
        samples: int,
        steps: int | None = None,
        cfg: float | None = None,
        seed: int = 0,
        variations: int = 1,
        progress: Progress | None = None,
        bpm: float | None = None,
        meter: str | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
        negative_prompt: str | None = None,
        **steering,
    ) -> np.ndarray:
        """Extend ``audio`` [2, n] at ``sample_rate`` by ``samples`` new samples at that rate:
        returns [variations, 2, n + samples], whose first n samples are the input's own,
        bit-exact. The new audio is matched in RMS to the input's last seconds and held under the
        ceiling (:func:`place_new_audio`; cut in as it is where the family's plan says
        ``levels=False``). ``bpm``, ``meter``, ``steering`` and ``negative_prompt`` as in :meth:`inpaint`."""
        rate = check_rate(sample_rate)
        audio = check_audio(audio)
        given = audio.shape[1]
        if samples <= 0:
            raise Sa3Error(f"continuation length must be longer than zero (got {samples} samples)")
        model_given = model_samples(given, rate)
        total = self._check_length(model_given + max(1, model_samples(samples, rate)), "input plus continuation")
        frames = timebase.samples_to_frames(total)
        padded = np.zeros((2, timebase.frames_to_samples(frames)), dtype=np.float32)
        padded[:, :model_given] = _to_rate(audio, rate, timebase.SAMPLE_RATE, model_given)
        plan = self._plan("continue", prompt, total, bpm, meter, steering)
        generated = self._edit(
            plan, padded, [(model_given, total)], total, prompt, steps, cfg, seed, variations, progress,
            negative_prompt,
        )  # fmt: skip
        generated = _to_rate(generated, timebase.SAMPLE_RATE, rate, given + samples)
        original = np.concatenate([audio, np.zeros((timebase.CHANNELS, samples), dtype=np.float32)], axis=1)
        if not plan.levels:  # the input's own samples, then the new audio as made
            return np.stack([np.concatenate([audio, take[:, given:]], axis=1) for take in generated])
        new = [Region(given, given + samples)]
        return np.stack([place_new_audio(original, take, new, rate, crossfade=False) for take in generated])

    def transform(
        self,
        audio: np.ndarray,
        prompt: str,
        init_noise_level: float = 0.9,
        steps: int | None = None,
        cfg: float | None = None,
        seed: int = 0,
        variations: int = 1,
        progress: Progress | None = None,
        bpm: float | None = None,
        meter: str | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
        negative_prompt: str | None = None,
        **steering,
    ) -> np.ndarray:
        """Audio-to-audio: ``audio`` [2, n] at ``sample_rate`` made again after the prompt, from its
        latents mixed with noise at ``init_noise_level`` (0 < level <= 1: near 0 keeps the input,
        1 keeps only its length). float32 [variations, 2, n] at that rate, all of it new (held under
        the ceiling unless the family's plan says ``levels=False``). The other arguments as in
        :meth:`inpaint`."""
        rate = check_rate(sample_rate)
        audio = check_audio(audio)
        limits.check_init_noise_level(init_noise_level, "init noise level")
        given = audio.shape[1]
        total = self._check_length(model_samples(given, rate), "input audio")
        source = _to_rate(audio, rate, timebase.SAMPLE_RATE, total)
        plan = self._plan("transform", prompt, total, bpm, meter, steering)
        run = self._sampling(plan)
        noise = self._noise(run, seed, variations)  # the request's first draw, before the encoder's
        latents = run.encode(source).repeat(variations, 1, 1)  # contiguous: the layout the sampler then keeps
        keep = torch.zeros(variations, 1, run.frames)  # nothing held: the DiT sees no source
        steps, cfg = self._steps_cfg(steps, cfg)
        latents = run.sample(
            plan, prompt, noise, latents, keep, steps, cfg, progress, negative_prompt, float(init_noise_level)
        )
        new = _to_rate(run.decode(latents), timebase.SAMPLE_RATE, rate, given)
        return level.limit_peaks(new) if plan.levels else new

    def recipe(
        self,
        prompt: str,
        steps: int | None = None,
        cfg: float | None = None,
        samples: int | None = None,
        **steering,
    ) -> dict[str, object]:
        """What makes a take besides its prompt, length, seed, tempo and rate: the request's values
        with the model's defaults filled in, as :meth:`generate`, :meth:`inpaint` and
        :meth:`continue_` fill them in. Keys: model, sampler, steps, cfg, cfg_rescale and what the
        family records (sa3's: scale_lock_db, phase_iterations, and for generate, ``samples`` at
        44.1 kHz given, warp and tail_seconds)."""
        steps, cfg = self._steps_cfg(steps, cfg)
        recipe: dict[str, object] = {
            "model": self.settings.name,
            "sampler": self.settings.sampler,
            "steps": steps,
            "cfg": cfg,
            "cfg_rescale": self.settings.cfg_rescale,
        }
        if self.loras is not None:  # only then: recipes of takes without LoRA stay as they were
            recipe["loras"] = self.loras.describe()
        mode = "generate" if samples is not None else "inpaint"
        plan = self.family.plan_recipe(self.backend, self.settings, mode, prompt, samples, steering)
        return recipe | plan

    def _plan(self, mode: str, prompt: str, samples: int, bpm, meter, steering: dict) -> Plan:
        return self.family.plan(self.backend, self.settings, mode, prompt, samples, bpm, meter, steering)

    def _steps_cfg(self, steps: int | None, cfg: float | None) -> tuple[int, float]:
        """Sampler steps and guidance scale: asked for, else the model's; Sa3Error when out of range."""
        steps = self.settings.steps if steps is None else int(steps)
        cfg = self.settings.cfg if cfg is None else float(cfg)
        if steps < 1:
            raise Sa3Error(f"steps must be at least 1 (got {steps})")
        if not math.isfinite(cfg) or cfg < 0:
            raise Sa3Error(f"guidance scale {cfg!r} must be a number of 0 or more")
        return steps, cfg

    # ------------------------------------------------------------------ sampling
    def _sampling(self, plan: Plan) -> Sampling:
        return plan.sampling if plan.sampling is not None else Sampling(self.backend, self.settings, plan.made)

    def _edit(
        self, plan, audio, spans, total, prompt, steps, cfg, seed, variations, progress, negative_prompt=None
    ) -> np.ndarray:
        """Encode ``audio`` [2, n], regenerate the frames the family's sampling makes new for
        ``spans`` (samples at 44.1 kHz), decode: float32 [variations, 2, total] (before any splicing)."""
        run = self._sampling(plan)
        noise = self._noise(run, seed, variations)  # the request's first draw, before the encoder's
        source = run.encode(audio)
        keep = run.keep_frames(spans, total)
        latents = self._sample(
            plan, prompt, run.frames, source.expand(variations, -1, -1), keep.expand(variations, -1, -1),
            steps, cfg, seed, variations, progress, negative_prompt, run, noise,
        )  # fmt: skip
        return run.decode(latents)

    @staticmethod
    def _noise(run: Sampling, seed: int, variations: int) -> torch.Tensor:
        if variations < 1:
            raise Sa3Error(f"variations must be at least 1 (got {variations})")
        return run.noise(seed, variations)

    def _sample(
        self, plan, prompt, frames, source, keep, steps, cfg, seed, variations, progress,
        negative_prompt=None, run=None, noise=None,
    ) -> torch.Tensor:  # fmt: skip
        """Latents [variations, channels, frames] by the plan's sampling (``run``; made here when None),
        from ``noise`` (drawn here when None)."""
        run = self._sampling(plan) if run is None else run
        if run.frames != frames:
            raise ValueError(f"{frames} frames asked for, the sampling makes {run.frames}")
        noise = self._noise(run, seed, variations) if noise is None else noise
        steps, cfg = self._steps_cfg(steps, cfg)
        return run.sample(plan, prompt, noise, source, keep, steps, cfg, progress, negative_prompt)
