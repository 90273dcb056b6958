"""sa3's own model family: the embedded default and every model folder in sa3's format.

A folder holds ``model.json`` (:class:`ModelSettings`), ``same.safetensors`` and
``dit.safetensors`` (sa3core.checkpoint). Besides text, the DiT is conditioned on tempo, key
and meter rows (:mod:`sa3core.musical`) read from the prompt or given with the request, and
the family steers sampling in three ways its models were built for:

- ``scale_lock_db``: where the prompt names a key, notes outside its scale are turned down at
  every sampler step, in the latents' measured semitone channels (:mod:`sa3core.scale_lock`);
- ``tempo_grid``: a take with a known tempo is made at the nearest tempo whose beat falls on
  the latent frames and warped to the tempo asked for (:mod:`sa3core.warp`; generate only);
- ``tail_seconds``: the take ends in that much digital silence, its last frames held at the
  latents of silence while the rest is sampled (generate only; one-shot prompts get the model's
  ``one_shot_tail_seconds`` by default).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint, scale_lock, timebase, warp
from ..backends import BACKENDS
from ..config import from_dict, to_dict
from ..errors import Sa3Error
from ..musical import MusicAttributes, music_rows, parse_prompt, reads_as_one_shot
from ..splicing import Region, splice
from . import FAMILIES, ModelFamily, Plan

MODEL_FORMAT = 1


@dataclass
class ModelSettings:
    """What an sa3 model folder's ``model.json`` says besides the weights."""

    format: int = MODEL_FORMAT
    name: str = "untrained"
    text_encoder: str = "minilm"
    sampler: str = "pingpong"  # distilled models sample with ping-pong; flow-only models with "dpmpp"
    steps: int = 8
    cfg: float = 1.0
    cfg_rescale: float = 0.0  # 0..1: keep guided outputs at the conditional level (samplers.cfg_velocity)
    tempo_grid: bool = False  # generate known tempi on the latent frame grid, then warp (sa3core.warp)
    # Griffin-Lim iterations on the decoder's phases (sa3core.models.same.refine_phase)
    phase_iterations: int = 0
    # dB per sampler step by which semitones outside a key the prompt names are turned down
    # (sa3core.scale_lock; needs an autoencoder with semitone channels; 0 = off)
    scale_lock_db: float = 0.0
    # prompts that read as one-shots (musical.reads_as_one_shot): the last this many seconds are
    # held at the latents of silence, so the sound ends inside the take (0 = off)
    one_shot_tail_seconds: float = 0.0
    max_seconds: float = timebase.MAX_SECONDS


def read_settings(folder: Path) -> ModelSettings:
    """A model folder's ``model.json``, checked (keys, types, format); Sa3Error when it is not right."""
    try:
        data = json.loads((folder / "model.json").read_text())
    except json.JSONDecodeError as err:
        raise Sa3Error(f"{str(folder / 'model.json')!r} is not valid JSON: {err}") from None
    settings = from_dict(ModelSettings, data, where=str(folder / "model.json"))
    if settings.format != MODEL_FORMAT:
        raise Sa3Error(f"model {str(folder)!r} has format {settings.format}; this sa3 reads format {MODEL_FORMAT}")
    scale_lock.check_cut(settings.scale_lock_db, f"{str(folder / 'model.json')!r} scale_lock_db")
    check_tail(settings.one_shot_tail_seconds, f"{str(folder / 'model.json')!r} one_shot_tail_seconds")
    return settings


def check_tail(seconds: float, what: str = "tail", samples: int | None = None) -> float:
    """A silent tail length: a finite number of seconds, 0 or more, and shorter than the take
    of ``samples`` (when given)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise Sa3Error(f"{what} must be a number of seconds, 0 or more (got {seconds!r})")
    if samples is not None and seconds >= timebase.samples_to_seconds(samples):
        raise Sa3Error(
            f"{what} {seconds:g} s leaves nothing to generate in a {timebase.samples_to_seconds(samples):.3g} s "
            "take; ask for a shorter tail or a longer take"
        )
    return float(seconds)


def tail_frames(tail_seconds: float, samples: int) -> int:
    """Latent frames held at silence so that the last ``tail_seconds`` of a ``samples``-long take
    are silent: the frames that start at or after ``samples - tail`` (0 when none would be left
    to generate before them)."""
    if tail_seconds <= 0:
        return 0
    frames = timebase.samples_to_frames(samples)
    start = max(0, samples - timebase.seconds_to_samples(tail_seconds))
    first = -(-start // timebase.SAMPLES_PER_FRAME)  # first frame wholly after `start`
    return frames - first if first >= 1 else 0


def request_music(prompt: str, bpm: float | None, meter: str | None) -> MusicAttributes:
    """The prompt's tempo, key and meter, with ``bpm`` / ``meter`` from the request winning."""
    if bpm is not None:
        bpm = timebase.check_bpm(bpm)
    quarters = None
    if meter is not None:
        quarters = float(timebase.Meter.parse(meter).quarters_per_bar)
    return parse_prompt(prompt).merged(bpm=bpm, quarters_per_bar=quarters)


@FAMILIES.register("sa3")
class SA3Family(ModelFamily):
    name = "sa3"
    # exact_length is accepted and changes nothing: sa3's models always make the requested length
    # (the released family pads by 6 s unless asked for it).
    hooks = frozenset({"scale_lock_db", "tempo_grid", "tail_seconds", "exact_length"})
    GENERATE_ONLY = frozenset({"tempo_grid", "tail_seconds"})

    # ------------------------------------------------------------------ folders
    def recognises(self, folder: Path) -> bool:
        return (folder / "model.json").is_file()

    def load(self, folder: Path, backend: str = "torch", **backend_options):
        if backend_options.get("int8"):
            raise Sa3Error(
                "int8 linear layers are for the released Stable Audio 3 models; leave --int8 out for this one"
            )
        backend_options.pop("int8", None)
        settings = read_settings(folder)
        if backend != "torch":
            return BACKENDS.get(backend)(folder, settings, **backend_options), settings
        autoencoder, _ = checkpoint.load_model(folder / "same.safetensors", expect_kind="same")
        dit, _ = checkpoint.load_model(folder / "dit.safetensors", expect_kind="dit")
        return self.torch_backend(autoencoder, dit, settings, **backend_options), settings

    def torch_backend(self, autoencoder, dit, settings: ModelSettings, **backend_options):
        from ..text import TEXT_ENCODERS

        text_encoder = TEXT_ENCODERS.get(settings.text_encoder)()
        backend_options.setdefault("phase_iterations", settings.phase_iterations)
        backend = BACKENDS.get("torch")(autoencoder, dit, text_encoder, **backend_options)
        if settings.scale_lock_db and backend.semitone_layout() is None:
            raise Sa3Error(
                f"model.json asks for a scale lock of {settings.scale_lock_db} dB, but the autoencoder has no "
                "semitone channels to lock; set scale_lock_db to 0"
            )
        return backend

    def random(self, preset: str, seed: int, text_encoder: str, **backend_options):
        """-> (backend, settings) of a randomly initialised model of a size preset."""
        from ..models.dit import DiT, dit_preset
        from ..models.same import SAME, same_preset
        from ..text import TEXT_ENCODERS

        encoder = TEXT_ENCODERS.get(text_encoder)()
        torch.manual_seed(seed)
        autoencoder = SAME(same_preset(preset))
        dit_config = dit_preset(preset)
        if dit_config.text_dim != encoder.dim:
            dit_config = type(dit_config)(**{**to_dict(dit_config), "text_dim": encoder.dim})
        dit = DiT(dit_config)
        settings = ModelSettings(name=f"random-{preset}", text_encoder=text_encoder, sampler="euler", steps=8)
        return BACKENDS.get("torch")(autoencoder, dit, encoder, **backend_options), settings

    def save(self, backend, settings: ModelSettings, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save_model(folder / "same.safetensors", "same", backend.autoencoder)
        checkpoint.save_model(folder / "dit.safetensors", "dit", backend.dit)
        (folder / "model.json").write_text(json.dumps(to_dict(settings), indent=2) + "\n")
        return folder

    # ------------------------------------------------------------------ requests
    def check_steering(self, steering, mode):
        asked = super().check_steering(steering, mode)
        for key in asked.keys() & self.GENERATE_ONLY:
            if mode != "generate":
                raise Sa3Error(f"{key} applies to generate only, not to {mode}")
        return asked

    def tail(self, settings: ModelSettings, prompt: str, tail_seconds: float | None, samples: int) -> float:
        """The silent tail of a ``samples``-long take (44.1 kHz): asked for, else the model's for one-shots."""
        if tail_seconds is None:
            return settings.one_shot_tail_seconds if reads_as_one_shot(prompt) else 0.0
        return check_tail(tail_seconds, "tail_seconds", samples)

    def plan_recipe(self, backend, settings, mode, prompt, samples, steering) -> dict[str, object]:
        """What a take's comment records of this family's settings for the request (nothing is run)."""
        steering = self.check_steering(steering, mode)
        cut = steering.get("scale_lock_db")
        recipe: dict[str, object] = {
            "scale_lock_db": settings.scale_lock_db if cut is None else float(cut),
            "phase_iterations": getattr(backend, "phase_iterations", None),
        }
        if mode == "generate":
            recipe["warp"] = bool(steering.get("tempo_grid", settings.tempo_grid))
            recipe["tail_seconds"] = self.tail(settings, prompt, steering.get("tail_seconds"), samples)
        return recipe

    def plan(self, backend, settings, mode, prompt, samples, bpm, meter, steering) -> Plan:
        recipe = self.plan_recipe(backend, settings, mode, prompt, samples, steering)
        steering = self.check_steering(steering, mode)
        music = request_music(prompt, bpm, meter)
        lock = self._scale_lock(backend, settings, music, steering.get("scale_lock_db"))
        made, tempo, held, held_latents, finish = samples, None, 0, None, None
        if mode == "generate":
            tail, grid = recipe["tail_seconds"], recipe["warp"]
            tempo = warp.plan(music.bpm, samples, timebase.seconds_to_samples(settings.max_seconds)) if grid else None
            if tempo is not None:
                music, made = music.merged(bpm=tempo.grid_bpm), tempo.grid_samples
            held = tail_frames(tail * made / samples, made)  # on the grid, the tail is warped with the take
            if held:
                frames = timebase.samples_to_frames(made)
                silence = torch.zeros(1, timebase.CHANNELS, frames * timebase.SAMPLES_PER_FRAME)
                held_latents = backend.encode_audio(silence).cpu()[..., -held:]
            finish = self._finisher(made, held, tempo)

        def condition(variations: int, guided: bool) -> torch.Tensor:
            return music_rows([music] * variations + ([MusicAttributes()] * variations if guided else []))

        def steer(v, x, t, where):
            return scale_lock.lock_velocity(v, x, t, lock, where=where)

        return Plan(
            made=made,
            condition=condition,
            held=held,
            held_latents=held_latents,
            steer=None if lock is None else steer,
            finish=finish,
            recipe=recipe,
        )

    @staticmethod
    def _finisher(made: int, held: int, tempo):
        if not held and tempo is None:
            return None

        def finish(audio: np.ndarray) -> np.ndarray:
            if held:  # digital silence from the first held frame on, faded into as inpainting splices
                frames = timebase.samples_to_frames(made)
                sounding = [Region(0, (frames - held) * timebase.SAMPLES_PER_FRAME)]
                audio = np.stack([splice(np.zeros_like(take), take, sounding) for take in audio])
            return warp.warp(audio, tempo) if tempo is not None else audio

        return finish

    @staticmethod
    def _scale_lock(backend, settings, music: MusicAttributes, cut_db: float | None) -> torch.Tensor | None:
        """The scale lock's per-channel offsets for this request (None: off, or no scale asked).

        ``cut_db`` None means the model's setting, which a backend without the semitone layout
        (an export from before it was recorded) skips, having warned at load; asked for
        explicitly there, it is an error."""
        asked = cut_db is not None
        cut_db = scale_lock.check_cut(float(cut_db)) if asked else settings.scale_lock_db
        if not cut_db or music.tonic is None or music.mode is None:
            return None
        layout = backend.semitone_layout()
        if layout is None:
            if not asked:
                return None
            raise Sa3Error(
                "this model cannot lock notes to a key: its autoencoder has no semitone channels, or its export "
                "does not record them (export it again); leave the scale lock out or set it to 0"
            )
        return scale_lock.scale_offsets(layout, music, cut_db)
