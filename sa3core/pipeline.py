"""The one Pipeline behind the CLI, the daemon, the render scripts and the tests.

    prompt -> text encoder -> DiT condition (once) --+
    noise  -> sampler (velocity_fn = DiT step, CFG) -+-> latents -> decoder -> crop -> splice

Lengths are exact: a request for N samples returns N samples, at the rate asked for (the model
runs at 44.1 kHz; other rates are resampled to). Generation with a known tempo runs on the
latent frame grid and is warped to the tempo (:mod:`sa3core.warp`, when the model's
``tempo_grid`` is on). Inpainting keeps every sample outside its regions bit-exact, at the
input's own rate (only the new audio is resampled, and spliced in with short equal-power
crossfades that lie inside the regions); continuation returns the input unchanged followed by
the new audio.

Levels (:mod:`sa3core.level`): no new audio has a true peak above -1 dBTP (:data:`PEAK_CEILING`)
at the rate it is returned at. A generated take above it is turned down as a whole; inpainted
and continued audio is first matched in RMS to the kept audio next to it, then held under the
ceiling by a look-ahead gain on the new audio alone (the input's own samples are never touched).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, level, scale_lock, timebase, warp
from .audio import resample_to_length
from .backends import BACKENDS
from .config import from_dict, to_dict
from .errors import Sa3Error
from .musical import MusicAttributes, music_rows, parse_prompt, reads_as_one_shot

MODEL_FORMAT = 1
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
CROSSFADE_SECONDS = (
    0.010  # equal-power splice at region borders: short enough to keep timing, long enough to hide a click
)

PEAK_CEILING = level.PEAK_CEILING  # -1 dBTP: no new audio is returned above it
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 384_000  # rates audio may come in and go out at

Progress = Callable[[int, int], None]


def default_model_dir() -> Path:
    """The shipped default model folder; an Sa3Error that says what to do when the install lacks it."""
    if not (DEFAULT_MODEL_DIR / "model.json").exists():
        raise Sa3Error(
            f"the default model is missing from this install ({DEFAULT_MODEL_DIR} has no model.json); "
            "reinstall sa3 from a full checkout, or pass --model FOLDER"
        )
    return DEFAULT_MODEL_DIR


@dataclass
class ModelSettings:
    """What a model folder's ``model.json`` says besides the weights."""

    format: int = MODEL_FORMAT
    name: str = "untrained"
    text_encoder: str = "minilm"
    sampler: str = "pingpong"  # distilled models sample with ping-pong; flow-only models with "dpmpp"
    steps: int = 8
    cfg: float = 1.0
    cfg_rescale: float = 0.0  # 0..1: keep guided outputs at the conditional level (samplers.cfg_velocity)
    tempo_grid: bool = False  # generate known tempi on the latent frame grid, then warp (sa3core.warp)
    # Griffin-Lim iterations on the decoder's phases (SAME.refine_phase; torch backend only)
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


@dataclass(frozen=True)
class Region:
    """A span to regenerate, in samples at the audio's rate (44.1 kHz unless a ``sample_rate``
    says otherwise): [start, end)."""

    start: int
    end: int

    @classmethod
    def from_seconds(cls, start: float, end: float, sample_rate: int = timebase.SAMPLE_RATE) -> Region:
        return cls(timebase.seconds_to_samples(start, sample_rate), timebase.seconds_to_samples(end, sample_rate))


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


class Pipeline:
    def __init__(self, backend, settings: ModelSettings) -> None:
        self.backend = backend
        self.settings = settings

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "torch", **backend_options) -> Pipeline:
        """Load a model folder (``model.json``, ``same.safetensors``, ``dit.safetensors``).

        ``path=None`` uses the shipped default model (:func:`default_model_dir`).
        """
        folder = default_model_dir() if path is None else Path(path)
        if not folder.is_dir() or not (folder / "model.json").exists():
            raise Sa3Error(
                f"model {str(folder)!r} is not an sa3 model folder (it needs model.json, same.safetensors, dit.safetensors)"
            )
        settings = read_settings(folder)
        if backend != "torch":
            return cls(BACKENDS.get(backend)(folder, settings, **backend_options), settings)
        autoencoder, _ = checkpoint.load_model(folder / "same.safetensors", expect_kind="same")
        dit, _ = checkpoint.load_model(folder / "dit.safetensors", expect_kind="dit")
        return cls.from_parts(autoencoder, dit, settings, **backend_options)

    @classmethod
    def from_parts(cls, autoencoder, dit, settings: ModelSettings, **backend_options) -> Pipeline:
        from .text import TEXT_ENCODERS

        text_encoder = TEXT_ENCODERS.get(settings.text_encoder)()
        backend_options.setdefault("phase_iterations", settings.phase_iterations)
        backend = BACKENDS.get("torch")(autoencoder, dit, text_encoder, **backend_options)
        if settings.scale_lock_db and backend.semitone_layout() is None:
            raise Sa3Error(
                f"model.json asks for a scale lock of {settings.scale_lock_db} dB, but the autoencoder has no "
                "semitone channels to lock; set scale_lock_db to 0"
            )
        return cls(backend, settings)

    @classmethod
    def random(
        cls,
        preset: str = "tiny",
        seed: int = 0,
        text_encoder: str = "minilm",
        backend: str = "torch",
        **backend_options,
    ) -> Pipeline:
        """A randomly initialised model of a size preset: for tests, benchmarks and smoke runs."""
        from .models.dit import DiT, dit_preset
        from .models.same import SAME, same_preset
        from .text import TEXT_ENCODERS

        if backend != "torch":
            raise Sa3Error("a random model runs on the torch backend only; export a model folder for other backends")
        encoder = TEXT_ENCODERS.get(text_encoder)()
        torch.manual_seed(seed)
        autoencoder = SAME(same_preset(preset))
        dit_config = dit_preset(preset)
        if dit_config.text_dim != encoder.dim:
            dit_config = type(dit_config)(**{**to_dict(dit_config), "text_dim": encoder.dim})
        dit = DiT(dit_config)
        settings = ModelSettings(name=f"random-{preset}", text_encoder=text_encoder, sampler="euler", steps=8)
        return cls(BACKENDS.get("torch")(autoencoder, dit, encoder, **backend_options), settings)

    def save(self, folder: str | Path) -> Path:
        """Write a model folder that :meth:`load` reads (torch backend only)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save_model(folder / "same.safetensors", "same", self.backend.autoencoder)
        checkpoint.save_model(folder / "dit.safetensors", "dit", self.backend.dit)
        (folder / "model.json").write_text(json.dumps(to_dict(self.settings), indent=2) + "\n")
        return folder

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
        tempo_grid: bool | None = None,
        scale_lock_db: float | None = None,
        tail_seconds: float | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
    ) -> np.ndarray:
        """Text to audio: float32 [variations, 2, samples] at ``sample_rate`` (``samples`` counts
        at that rate; the model makes the same length at 44.1 kHz, which is resampled).

        ``bpm`` / ``meter`` (e.g. "6/8") override what the prompt says: the model starts on a
        downbeat at sample 0 and keeps that tempo (see :mod:`sa3core.musical`). With the model's
        ``tempo_grid`` (or ``tempo_grid=True``), a known tempo is generated on the latent frame
        grid and warped to it (:mod:`sa3core.warp`). Takes whose true peak at ``sample_rate`` is
        above :data:`PEAK_CEILING` are turned down to it as a whole. ``scale_lock_db`` (None = the
        model's ``scale_lock_db``) keeps the notes in a key the prompt names
        (:mod:`sa3core.scale_lock`); 0 turns that off. ``tail_seconds``: the take ends in that
        much digital silence, the frames there held at the latents of silence while the rest is
        sampled, so the sound decays into them (None = the model's ``one_shot_tail_seconds`` for
        prompts that read as one-shots, else none; 0 = none).
        """
        rate = check_rate(sample_rate)
        made = self._check_length(model_samples(samples, rate))  # at 44.1 kHz
        tail = self._tail(prompt, tail_seconds, made)
        music = request_music(prompt, bpm, meter)
        grid = self.settings.tempo_grid if tempo_grid is None else tempo_grid
        tempo = warp.plan(music.bpm, made, self.max_samples) if grid else None
        length = made
        if tempo is not None:
            music, made = music.merged(bpm=tempo.grid_bpm), tempo.grid_samples
        frames = timebase.samples_to_frames(made)
        keep = torch.zeros(variations, 1, frames)
        source = torch.zeros(variations, timebase.LATENT_CHANNELS, frames)
        held = tail_frames(tail * made / length, made)  # on the grid, the tail is warped with the take
        if held:
            silence = torch.zeros(1, timebase.CHANNELS, frames * timebase.SAMPLES_PER_FRAME)
            source[..., -held:] = self.backend.encode_audio(silence).cpu()[..., -held:]
            keep[..., -held:] = 1.0
        latents = self._sample(
            prompt, frames, source, keep, steps, cfg, seed, variations, progress, music, scale_lock_db
        )
        audio = self.backend.decode_latents(latents)[:, :, :made].cpu().numpy().astype(np.float32)
        if held:  # digital silence from the first held frame on, faded into as inpainting splices
            sounding = [Region(0, (frames - held) * timebase.SAMPLES_PER_FRAME)]
            audio = np.stack([splice(np.zeros_like(take), take, sounding) for take in audio])
        if tempo is not None:
            audio = warp.warp(audio, tempo)
        return level.limit_peaks(
            _to_rate(audio, timebase.SAMPLE_RATE, rate, samples)
        )  # at the rate returned: resampling moves peaks

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
        scale_lock_db: float | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
    ) -> np.ndarray:
        """Regenerate ``regions`` of ``audio`` [2, n] at ``sample_rate`` (regions in samples at that
        rate): float32 [variations, 2, n] at that rate, every sample outside the regions the
        input's own, bit-exact. Only the new audio is resampled from the model's 44.1 kHz; in each
        region it is matched in RMS to the kept audio around it, crossfaded in and held under the
        ceiling (:func:`place_new_audio`). ``bpm`` / ``meter``: the song's, with a downbeat at
        sample 0 of ``audio``; ``scale_lock_db`` as in :meth:`generate`."""
        rate = check_rate(sample_rate)
        audio = _check_audio(audio)
        given = audio.shape[1]
        total = self._check_length(model_samples(given, rate), "input audio")
        regions = check_regions(regions, given, rate)
        source = _to_rate(audio, rate, timebase.SAMPLE_RATE, total)
        frames = timebase.samples_to_frames(total)
        keep = torch.ones(1, 1, frames)
        for region in regions:
            # Every frame that touches the region (at 44.1 kHz, rounded outwards) is regenerated.
            first = region.start * timebase.SAMPLE_RATE // rate // timebase.SAMPLES_PER_FRAME
            last = timebase.samples_to_frames(min(total, -(-region.end * timebase.SAMPLE_RATE // rate)))
            keep[..., first:last] = 0.0
        music = request_music(prompt, bpm, meter)
        generated = self._edit(
            source, keep, total, prompt, steps, cfg, seed, variations, progress, music, scale_lock_db
        )
        generated = _to_rate(generated, timebase.SAMPLE_RATE, rate, given)
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
        scale_lock_db: float | None = None,
        sample_rate: int = timebase.SAMPLE_RATE,
    ) -> np.ndarray:
        """Extend ``audio`` [2, n] at ``sample_rate`` by ``samples`` new samples at that rate:
        returns [variations, 2, n + samples], whose first n samples are the input's own,
        bit-exact. The new audio is matched in RMS to the input's last seconds and held under the
        ceiling (:func:`place_new_audio`). ``bpm``, ``meter`` and ``scale_lock_db`` as in
        :meth:`inpaint`."""
        rate = check_rate(sample_rate)
        audio = _check_audio(audio)
        given = audio.shape[1]
        if samples <= 0:
            raise Sa3Error(f"continuation length must be longer than zero (got {samples} samples)")
        model_given = model_samples(given, rate)
        total = self._check_length(model_given + max(1, model_samples(samples, rate)), "input plus continuation")
        frames = timebase.samples_to_frames(total)
        padded = np.zeros((2, timebase.frames_to_samples(frames)), dtype=np.float32)
        padded[:, :model_given] = _to_rate(audio, rate, timebase.SAMPLE_RATE, model_given)
        keep = torch.zeros(1, 1, frames)
        keep[..., : model_given // timebase.SAMPLES_PER_FRAME] = 1.0  # frames wholly inside the input
        music = request_music(prompt, bpm, meter)
        generated = self._edit(
            padded, keep, total, prompt, steps, cfg, seed, variations, progress, music, scale_lock_db
        )
        generated = _to_rate(generated, timebase.SAMPLE_RATE, rate, given + samples)
        original = np.concatenate([audio, np.zeros((timebase.CHANNELS, samples), dtype=np.float32)], axis=1)
        new = [Region(given, given + samples)]
        return np.stack([place_new_audio(original, take, new, rate, crossfade=False) for take in generated])

    def recipe(
        self,
        prompt: str,
        steps: int | None = None,
        cfg: float | None = None,
        scale_lock_db: float | None = None,
        tempo_grid: bool | None = None,
        tail_seconds: float | None = None,
        samples: int | None = None,
    ) -> dict[str, object]:
        """What makes a take besides its prompt, length, seed, tempo and rate: the request's values
        with the model's defaults filled in, as :meth:`generate`, :meth:`inpaint` and
        :meth:`continue_` fill them in. Keys: model, sampler, steps, cfg, cfg_rescale,
        scale_lock_db, phase_iterations (None where the backend does not refine phases), and for
        generate (``samples``, at 44.1 kHz, given) warp and tail_seconds."""
        steps, cfg = self._steps_cfg(steps, cfg)
        recipe: dict[str, object] = {
            "model": self.settings.name,
            "sampler": self.settings.sampler,
            "steps": steps,
            "cfg": cfg,
            "cfg_rescale": self.settings.cfg_rescale,
            "scale_lock_db": self.settings.scale_lock_db if scale_lock_db is None else float(scale_lock_db),
            "phase_iterations": getattr(self.backend, "phase_iterations", None),
        }
        if samples is not None:
            recipe["warp"] = self.settings.tempo_grid if tempo_grid is None else bool(tempo_grid)
            recipe["tail_seconds"] = self._tail(prompt, tail_seconds, samples)
        return recipe

    def _tail(self, prompt: str, tail_seconds: float | None, samples: int) -> float:
        """The silent tail of a ``samples``-long take (44.1 kHz): asked for, else the model's for one-shots."""
        if tail_seconds is None:
            return self.settings.one_shot_tail_seconds if reads_as_one_shot(prompt) else 0.0
        return check_tail(tail_seconds, "tail_seconds", samples)

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
    def _edit(
        self, audio, keep, total, prompt, steps, cfg, seed, variations, progress, music, scale_lock_db=None
    ) -> np.ndarray:
        """Encode ``audio``, regenerate the frames where ``keep`` [1, 1, frames] is 0, decode:
        float32 [variations, 2, total] (before any splicing)."""
        frames = keep.shape[-1]
        source = self.backend.encode_audio(torch.from_numpy(audio)[None]).cpu()
        latents = self._sample(
            prompt, frames, source.expand(variations, -1, -1), keep.expand(variations, -1, -1),
            steps, cfg, seed, variations, progress, music, scale_lock_db,
        )  # fmt: skip
        return self.backend.decode_latents(latents)[:, :, :total].cpu().numpy()

    def _sample(
        self, prompt, frames, source, keep, steps, cfg, seed, variations, progress, music, scale_lock_db=None
    ) -> torch.Tensor:
        from .samplers import SAMPLERS, cfg_velocity, length_shift

        if variations < 1:
            raise Sa3Error(f"variations must be at least 1 (got {variations})")
        steps, cfg = self._steps_cfg(steps, cfg)
        rescale = self.settings.cfg_rescale
        lock = self._scale_lock(music, scale_lock_db)
        seconds = torch.full((variations,), timebase.samples_to_seconds(frames * timebase.SAMPLES_PER_FRAME))
        guided = cfg != 1.0
        prompts = [prompt] * variations + ([""] * variations if guided else [])
        tokens, mask = self.backend.encode_text(prompts)
        rows = music_rows([music] * variations + ([MusicAttributes()] * variations if guided else []))
        cond = self.backend.condition(tokens, mask, seconds.repeat(2 if guided else 1), rows)
        frame_mask = torch.ones(variations, frames, dtype=torch.bool)
        source = source * keep  # the model sees only what it must keep

        def velocity_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            v = guided_velocity(x, t)
            return v if lock is None else scale_lock.lock_velocity(v, x, t, lock, where=1.0 - keep)

        def guided_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return self.backend.velocity(x, t, cond, source, keep, frame_mask)
            both = self.backend.velocity(
                torch.cat([x, x]),
                torch.cat([t, t]),
                cond,
                torch.cat([source, source]),
                torch.cat([keep, keep]),
                torch.cat([frame_mask, frame_mask]),
            )
            v_cond, v_uncond = both.chunk(2)
            return cfg_velocity(v_cond, v_uncond, cfg, rescale, x, t)

        # One generator per variation: variation k of seed s equals variation 0 of seed s + k.
        noise = torch.stack(
            [
                torch.randn(timebase.LATENT_CHANNELS, frames, generator=torch.Generator().manual_seed(seed + k))
                for k in range(variations)
            ]
        )
        sampler = SAMPLERS.get(self.settings.sampler)()
        generator = torch.Generator().manual_seed(seed + 1_000_003)  # fresh noise for ping-pong re-noising
        return sampler.sample(
            velocity_fn, noise, steps, shift=length_shift(frames), generator=generator, progress=progress
        )

    def _scale_lock(self, music: MusicAttributes, cut_db: float | None) -> torch.Tensor | None:
        """The scale lock's per-channel offsets for this request (None: off, or no scale asked).

        ``cut_db`` None means the model's setting, which a backend without the semitone layout
        (an export from before it was recorded) skips, having warned at load; asked for
        explicitly there, it is an error."""
        asked = cut_db is not None
        cut_db = scale_lock.check_cut(float(cut_db)) if asked else self.settings.scale_lock_db
        if not cut_db or music.tonic is None or music.mode is None:
            return None
        layout = self.backend.semitone_layout()
        if layout is None:
            if not asked:
                return None
            raise Sa3Error(
                "this model cannot lock notes to a key: its autoencoder has no semitone channels, or its export "
                "does not record them (export it again); leave the scale lock out or set it to 0"
            )
        return scale_lock.scale_offsets(layout, music, cut_db)


def request_music(prompt: str, bpm: float | None, meter: str | None) -> MusicAttributes:
    """The prompt's tempo, key and meter, with ``bpm`` / ``meter`` from the request winning."""
    if bpm is not None:
        bpm = timebase.check_bpm(bpm)
    quarters = None
    if meter is not None:
        quarters = float(timebase.Meter.parse(meter).quarters_per_bar)
    return parse_prompt(prompt).merged(bpm=bpm, quarters_per_bar=quarters)


limit_peaks = level.limit_peaks  # each take turned down as a whole to just under the ceiling, where over it


def check_regions(regions: Sequence[Region], total: int, sample_rate: int = timebase.SAMPLE_RATE) -> list[Region]:
    """Regions sorted by start; raises Sa3Error for none, empty, outside [0, total) or overlapping
    (``total`` and the regions in samples at ``sample_rate``)."""
    if not regions:
        raise Sa3Error("inpainting needs at least one --region START:END")
    regions = sorted(regions, key=lambda r: r.start)
    for region in regions:
        if region.end <= region.start:
            raise Sa3Error(f"region {_fmt(region, sample_rate)} is empty: its end must come after its start")
        if region.start < 0 or region.end > total:
            raise Sa3Error(
                f"region {_fmt(region, sample_rate)} lies outside the audio (0.000-{total / sample_rate:.3f} s)"
            )
    for left, right in zip(regions, regions[1:]):
        if right.start < left.end:
            raise Sa3Error(
                f"regions {_fmt(left, sample_rate)} and {_fmt(right, sample_rate)} overlap; merge them into one region"
            )
    return regions


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != timebase.CHANNELS:
        raise Sa3Error(f"audio must be stereo [2, samples]; got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise Sa3Error("input audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise Sa3Error("input audio contains NaN or infinite samples")
    return audio


def _fmt(region: Region, sample_rate: int = timebase.SAMPLE_RATE) -> str:
    return f"{region.start / sample_rate:.3f}:{region.end / sample_rate:.3f} s"


def _crossfade(region: Region, total: int, sample_rate: int) -> np.ndarray:
    """The new audio's gain across ``region`` (float32 [length]): equal-power fades of up to
    CROSSFADE_SECONDS inside the region where it borders kept audio, 1 elsewhere."""
    length = region.end - region.start
    fade = min(timebase.seconds_to_samples(CROSSFADE_SECONDS, sample_rate), length // 2)
    gain_in = np.ones(length, dtype=np.float32)
    if fade > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(fade, dtype=np.float32) + 0.5) / fade)
        # Only fade where the region borders kept audio; a region at the file's edge starts hard.
        if region.start > 0:
            gain_in[:fade] = ramp
        if region.end < total:
            gain_in[-fade:] = np.minimum(gain_in[-fade:], ramp[::-1])
    return gain_in


def splice(
    original: np.ndarray, generated: np.ndarray, regions: Sequence[Region], sample_rate: int = timebase.SAMPLE_RATE
) -> np.ndarray:
    """Original outside ``regions`` (bit-exact), generated inside, with equal-power crossfades
    of up to CROSSFADE_SECONDS that lie wholly inside each region."""
    out = original.copy()
    for region in regions:
        gain_in = _crossfade(region, original.shape[1], sample_rate)
        gain_out = np.sqrt(np.clip(1.0 - gain_in**2, 0.0, 1.0))
        span = slice(region.start, region.end)
        out[:, span] = gain_in * generated[:, span] + gain_out * original[:, span]
    return out


def place_new_audio(
    original: np.ndarray,
    generated: np.ndarray,
    regions: Sequence[Region],
    sample_rate: int = timebase.SAMPLE_RATE,
    crossfade: bool = True,
) -> np.ndarray:
    """``original`` [2, n] outside ``regions``, bit-exact; inside, ``generated`` [2, n] matched in
    RMS to the kept audio around each region (:func:`sa3core.level.match_gains`), crossfaded in as
    :func:`splice` does (``crossfade=False``: cut in, as a continuation after its input is), and
    held under the ceiling with a gain on the new audio alone
    (:func:`sa3core.level.hold_under_ceiling`). float32 [2, n]."""
    gains = level.match_gains(original, generated, regions, sample_rate)
    kept = np.asarray(original, dtype=np.float32).copy()
    new = np.zeros(kept.shape, dtype=np.float64)
    for region, gain in zip(regions, gains):
        span = slice(region.start, region.end)
        gain_in = _crossfade(region, kept.shape[1], sample_rate) if crossfade else np.ones(region.end - region.start)
        kept[:, span] *= np.sqrt(np.clip(1.0 - gain_in**2, 0.0, 1.0)).astype(np.float32)
        new[:, span] = gain * gain_in * np.asarray(generated[:, span], dtype=np.float64)
    return level.hold_under_ceiling(kept, new, regions, sample_rate)
