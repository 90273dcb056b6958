"""Render a validated sheet: generate, seamless loops, effect chains with tails, loudness,
tagged atomic writes, resumable through a manifest, one failed job never stopping the rest.

Per take: model audio -> (loop) crossfade the overhang onto the start -> effect chain with
its tail policy -> loudness normalisation with a true-peak ceiling -> file written to a
temporary name, RIFF chunks appended (WAV), renamed into place -> manifest entry.

A run that was killed (even ``kill -9``) resumes: its temporary files are named
``.sa3-render-tmp-PID-*``, and the next run removes those whose process is gone (or that are over
an hour old); a take is finished when its file exists and carries its take hash, recorded in
the manifest or, if the kill came between the rename and the manifest, in the file's own
comment (files are renamed into place whole, so one under its name is complete). A job
renders only the seeds with takes left to make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from sa3core import timebase
from sa3core.audio import FORMATS, load_audio, save_audio
from sa3core.errors import Sa3Error
from sa3core.files import publish
from sa3core.level import NEAR_SILENT_DBTP, is_near_silent

from .chain import build_chain
from .loops import apply_with_tail, make_seamless
from .loudness import integrated_loudness, normalise, true_peak_db
from .riff import acid_chunk, append_chunks, info_chunk
from .sheet import Job, Sheet

RENDER_FORMAT = 1  # bump when a change to rendering should invalidate finished outputs
MANIFEST_NAME = ".sa3-render-manifest.json"
REPORT_NAME = "render-report.json"
LOUDNESS_WARN_LU = 0.5  # report a take whose loudness missed its target by more than this
TEMP_PREFIX = ".sa3-render-tmp-"  # + PID + "-": every temporary file or folder a render makes
STALE_TEMP_SECONDS = 3600.0  # a temporary lives for one take's write; one this old is left over


@dataclass
class OutputResult:
    """One output file's outcome; ``status`` is rendered, near-silent (written, but its true peak
    is under :data:`sa3core.level.NEAR_SILENT_DBTP`), skipped or failed."""

    job: str
    file: str
    status: str
    samples: int = 0
    seconds: float = 0.0
    lufs: float | None = None
    true_peak_db: float | None = None
    time_s: float = 0.0
    error: str = ""
    warning: str = ""


# ---------------------------------------------------------------------------------- models


class InProcessRenderer:
    """The model in this process; loaded on first use, so a fully finished sheet loads nothing.

    ``pipeline`` hands over a Pipeline already in memory (its identity is then its name only,
    so renders are matched by name, not by weights).
    """

    def __init__(
        self, model: str | None = None, backend: str = "torch", pipeline=None, fp32: bool = False, threads=None
    ) -> None:
        self.model, self.backend, self._pipeline, self.fp32 = model, backend, pipeline, fp32
        self.threads = threads  # the onnx sessions' threads (torch's are set per process by the command)
        self.identity = model_identity(model) if pipeline is None else f"pipeline:{pipeline.settings.name}"
        if fp32:  # float32 matmuls make other samples than the default: other takes
            self.identity += ":fp32"
        self._models: dict[str, InProcessRenderer] = {}  # the sheet's per-job models, each loaded on first use

    def for_job(self, job: Job) -> InProcessRenderer:
        """The renderer of the job's own ``model`` (a folder or a released name), else this one.
        Resolving it loads nothing; a name not in the Hugging Face cache is a one-line Sa3Error.
        Each model a sheet names stays loaded once used (memory: the models the sheet names)."""
        if job.model is None:
            return self
        if job.model not in self._models:
            from sa3core.hub import resolve_model

            self._models[job.model] = InProcessRenderer(
                str(resolve_model(job.model)), self.backend, fp32=self.fp32, threads=self.threads
            )
        return self._models[job.model]

    @property
    def pipeline(self):
        if self._pipeline is None:
            from sa3core.pipeline import Pipeline

            options = {"bf16": False} if self.fp32 else {}
            if self.threads is not None:
                options["threads"] = self.threads
            self._pipeline = Pipeline.load(self.model, backend=self.backend, **options)
        return self._pipeline

    @contextlib.contextmanager
    def _adapted(self, loras: list[tuple[str, float]]):
        """The pipeline with the job's LoRA files at their strengths: the set stays attached
        (unmerged) while the next jobs name the same files in the same order, and is swapped
        when they name others; strengths are the job's."""
        pipeline = self.pipeline
        files = [Path(ref) for ref, _ in loras]
        attached = [Path(f.path) for f in pipeline.loras.files] if pipeline.loras is not None else []
        if files != attached:
            pipeline.drop_loras()
            if files:
                for ref in files:
                    if not ref.is_file():
                        raise Sa3Error(
                            f"no LoRA file {str(ref)!r}; give a path (relative to the sheet) to a .safetensors"
                        )
                pipeline.use_loras([(ref, 1.0) for ref in files], merge=False)
        with pipeline.lora_strengths([strength for _, strength in loras] if loras else None):
            yield pipeline

    def generate(self, prompt, samples, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()):
        with self._adapted(list(loras)) as pipeline:
            return pipeline.generate(prompt, samples, steps, cfg, seed, variations, progress, bpm, meter)

    def inpaint(
        self, audio, prompt, regions, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        from sa3core.pipeline import Region

        spans = [Region(start, end) for start, end in regions]
        with self._adapted(list(loras)) as pipeline:
            return pipeline.inpaint(audio, prompt, spans, steps, cfg, seed, variations, progress, bpm, meter)

    def continue_(
        self, audio, prompt, samples, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        with self._adapted(list(loras)) as pipeline:
            return pipeline.continue_(audio, prompt, samples, steps, cfg, seed, variations, progress, bpm, meter)

    def transform(
        self, audio, prompt, level, steps, cfg, seed, variations, progress=None, bpm=None, meter=None, loras=()
    ):
        with self._adapted(list(loras)) as pipeline:
            return pipeline.transform(audio, prompt, level, steps, cfg, seed, variations, progress, bpm, meter)

    def recipe(self, job: Job) -> dict[str, Any]:
        """What made the job's takes besides prompt, seed and tempo, the model's defaults filled in."""
        spec = job.spec
        samples = job.samples + job.overhang if spec.mode == "generate" else None
        recipe = self.pipeline.recipe(spec.prompt, spec.steps, spec.cfg, samples=samples)
        recipe.pop("model")  # the comment names the model by its identity
        recipe.pop("loras", None)  # the job's own, below (the pipeline's may be the last job's)
        if spec.mode == "transform":
            recipe["init_noise_level"] = spec.init_noise_level
        if job.loras:
            recipe["loras"] = lora_words(job.loras)
        return recipe


def lora_words(loras: list[tuple[str, float]]) -> str:
    """``name@strength,...`` for a take's comment."""
    return ",".join(f"{Path(ref).stem}@{strength:g}" for ref, strength in loras)


def model_identity(model: str | os.PathLike | None) -> str:
    """What a render depends on of the model. An sa3 folder: a hash of its files (config and
    weights, a few MB). A released folder (``model_config.json``): a hash of its small files
    (configs, tokenizer) and of each weights file's name, size and modification time, not of its
    contents: those are GBs, read on every run otherwise (a weights file replaced in place with the
    same size and time would go unnoticed; a pull or copy changes the time)."""
    from sa3core.pipeline import default_model_dir

    folder = Path(model) if model is not None else default_model_dir()
    if (folder / "model_config.json").is_file() and not (folder / "model.json").exists():
        return f"{folder.name}:{_released_identity(folder)}"
    if not (folder / "model.json").exists():
        raise Sa3Error(
            f"model {str(folder)!r} is neither an sa3 model folder (model.json) nor a released one (model_config.json)"
        )
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".onnx"):
            digest.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return f"{folder.name}:{digest.hexdigest()[:16]}"


def _released_identity(folder: Path) -> str:
    """Configs and tokenizer files by content, ``*.safetensors`` by name, size and mtime (see model_identity)."""
    digest = hashlib.sha256(b"released-v1")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()  # follows the Hugging Face cache's symlinks to the blobs
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        if path.suffix == ".safetensors":
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------- manifest


def take_hash(job: Job, seed: int, output: str, identity: str) -> str:
    """Hash of everything that decides a take's samples and file: a change means re-render."""
    import pedalboard

    spec = dataclasses.asdict(job.spec)
    spec.pop("name")  # renaming a job does not change its audio
    spec.pop("source")  # the source's content counts, not where it lies
    spec.pop("model")  # the model's identity counts (below), not how the sheet names it
    spec.pop("loras")  # the adapters' contents count (below), not where they lie
    payload = {
        "format": RENDER_FORMAT,
        "spec": spec,
        "seed": seed,
        "output": output,
        "source_sha256": job.source_sha256,
        "model": identity,
        "pedalboard": pedalboard.__version__,
    }
    if job.loras:  # only then: hashes of takes without adapters stay as they were
        payload["loras"] = [[_lora_identity(ref), strength] for ref, strength in job.loras]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _lora_identity(ref: str) -> str:
    """A LoRA file by its content (a few MB at most); a daemon's adapter by its name."""
    path = Path(ref)
    if not path.is_file():
        return f"name:{ref}"
    stat = path.stat()
    return _content_hash(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    """A file's content hash, read once per version of the file (every take of a job asks)."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Manifest:
    """``.sa3-render-manifest.json`` in the output folder: output -> hash and measurements."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text()).get("outputs", {})
            except (json.JSONDecodeError, AttributeError):
                self.entries = {}  # a damaged manifest only costs re-rendering

    def fresh(self, output: Path, key: str, digest: str) -> bool:
        entry = self.entries.get(key)
        return output.exists() and entry is not None and entry.get("hash") == digest

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry
        _write_json(self.path, {"format": RENDER_FORMAT, "outputs": self.entries})


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------- leftovers


def _temp_prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-"


_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temps(folders) -> int:
    """Remove the temporary files and folders a killed render left in ``folders``: only names
    of :data:`TEMP_PREFIX` form, and only those whose process is gone or that are older than
    :data:`STALE_TEMP_SECONDS` (a render running beside this one keeps its own). Returns how many."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not made yet
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                if _process_alive(int(match.group(1))) and age < STALE_TEMP_SECONDS:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue  # its own process removed it meanwhile
    return removed


def recorded_comment(path: Path) -> str:
    """The comment tag of the audio file ``path`` (what :func:`write_take` writes there); "" when
    it has none or is no audio file sa3 can read."""
    try:
        with sf.SoundFile(str(path)) as handle:
            return handle.comment or ""
    except (sf.LibsndfileError, RuntimeError, OSError):
        return ""


def recorded_hash(path: Path) -> str | None:
    """The take hash (its first 16 hex digits) a render wrote into ``path``, else None."""
    match = re.fullmatch(r"sa3 render: .* hash=([0-9a-f]{16})", recorded_comment(path))
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------- rendering


def _model_audio(job: Job, renderer, seed: int, variations: int, progress=None) -> np.ndarray:
    """[variations, 2, n] from the model for one base seed, with the loop overhang if any."""
    spec = job.spec
    common = dict(steps=spec.steps, cfg=spec.cfg, seed=seed, variations=variations, progress=progress)
    if job.loras:  # renderers without LoRA support are never handed a job with adapters
        common["loras"] = job.loras
    if spec.bpm is not None:  # the sheet's tempo: the model keeps its beat, downbeat at sample 0
        common.update(bpm=spec.bpm, meter=spec.meter)
    if spec.mode == "generate":
        return renderer.generate(spec.prompt, job.samples + job.overhang, **common)
    source = load_audio(job.source)  # read now, not at validation: it may have changed since
    if spec.mode == "inpaint":
        return renderer.inpaint(source, spec.prompt, job.regions, **common)
    if spec.mode == "transform":
        return renderer.transform(source, spec.prompt, spec.init_noise_level, **common)
    return renderer.continue_(source, spec.prompt, job.samples, **common)


def finish_take(job: Job, audio: np.ndarray, base_dir: Path) -> tuple[np.ndarray, float, float]:
    """Loop crossfade, effect chain with tail, loudness: returns (audio [2, n], LUFS, dBTP)."""
    spec = job.spec
    if spec.loop:
        audio = make_seamless(audio, job.samples)
    if spec.chain:
        audio = apply_with_tail(build_chain(spec.chain, base_dir), audio, job.tail, spec.tail_max)
    circular = spec.loop or job.tail == "fold"
    if spec.loudness is not None:
        audio, result = normalise(audio, spec.loudness, spec.true_peak, circular=circular)
        lufs, peak = result.lufs, result.true_peak_db
    else:
        lufs, peak = integrated_loudness(audio), true_peak_db(audio, circular)
    if spec.mode == "generate" and job.tail != "keep" and audio.shape[1] != job.samples:
        raise AssertionError(f"internal: {job.name} came out {audio.shape[1]} samples, not {job.samples}")
    return audio, lufs, peak


def _recipe_words(job: Job, recipe: dict[str, Any] | None) -> str:
    """``key=value`` words of what made a take (the renderer's recipe; without one, the sheet's
    steps and cfg where it sets them), then the sheet's tempo."""
    spec = job.spec
    fields = dict(recipe) if recipe is not None else {"steps": spec.steps, "cfg": spec.cfg}
    if spec.bpm is not None:
        fields.update(bpm=spec.bpm, meter=spec.meter)

    def shown(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return format(value, "g") if isinstance(value, float) else str(value)

    return " ".join(f"{key}={shown(value)}" for key, value in fields.items() if value is not None)


def write_take(
    job: Job, audio: np.ndarray, path: Path, seed: int, identity: str, digest: str, recipe: dict | None = None
) -> None:
    """Write atomically: audio and chunks go to a temporary file that is renamed into place.
    The comment carries what makes the take again (``recipe``: the renderer's, defaults filled in)."""
    spec = job.spec
    comment = f"sa3 render: seed={seed} model={identity} {_recipe_words(job, recipe)} job={job.name} hash={digest[:16]}"
    is_wav = FORMATS[path.suffix.lower()] == "WAV"
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private folder named for this process holds every temporary of the write (save_audio's
    # own included), so whatever a kill leaves is one name clean_stale_temps recognises.
    work = Path(tempfile.mkdtemp(prefix=_temp_prefix(), dir=path.parent))
    tmp = work / f"take{path.suffix}"
    try:
        # WAV: the INFO list is written by us below (soundfile's would duplicate it).
        tags = None if is_wav else {"title": spec.prompt[:1000], "comment": comment, "software": "sa3 render"}
        save_audio(tmp, audio, timebase.SAMPLE_RATE, spec.bit_depth, overwrite=True, tags=tags)
        if is_wav:
            chunks = [(b"LIST", info_chunk({"INAM": spec.prompt, "ICMT": comment, "ISFT": "sa3 render"}))]
            if job.beats is not None:
                chunks.append((b"acid", acid_chunk(spec.loop, job.beats, job.meter, spec.bpm, job.root_note)))
            append_chunks(tmp, chunks)
        publish(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _outputs(job: Job, out_dir: Path) -> list[tuple[int, str, Path]]:
    return [(take.seed, take.output, out_dir / take.output) for take in job.takes]


def _error_line(err: BaseException) -> str:
    if isinstance(err, Sa3Error):
        return str(err).splitlines()[0]
    return f"{type(err).__name__}: {err} (at {traceback.extract_tb(err.__traceback__)[-1].name})"


def _entry(job: Job, digest: str, samples: int, lufs: float | None, peak: float | None) -> dict[str, Any]:
    """A take's manifest entry."""
    seconds = timebase.samples_to_seconds(samples)
    return {"hash": digest, "job": job.name, "samples": samples, "seconds": seconds, "lufs": lufs, "true_peak_db": peak}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finished(job: Job, manifest: Manifest, path: Path, key: str, digest: str) -> bool:
    """Whether the take ``key`` is finished (module doc). One only the file's comment vouches
    for (a kill between its rename and the manifest) is measured and recorded now."""
    if manifest.fresh(path, key, digest):
        return True
    if not path.is_file() or recorded_hash(path) != digest[:16]:
        return False
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(data.T)  # (2, samples)
    lufs, peak = integrated_loudness(audio), true_peak_db(audio, job.spec.loop or job.tail == "fold")
    manifest.record(key, _entry(job, digest, audio.shape[1], _finite(lufs), _finite(peak)))
    return True


def render_job(
    job: Job, renderer, out_dir: Path, base_dir: Path, manifest: Manifest, force: bool, progress=None
) -> list[OutputResult]:
    """Render one job's unfinished takes, skipping the finished ones; never raises for the job's own failure.

    The model runs once per base seed that has a take left to make; it makes all of that seed's
    variations (a take's audio depends on the batch it was sampled in), and only the missing ones
    are written."""
    outputs = _outputs(job, out_dir)
    if hasattr(renderer, "for_job"):
        try:
            renderer = renderer.for_job(job)  # the job's own model, if it names one
        except Sa3Error as err:
            return [OutputResult(job.name, key, "failed", error=_error_line(err)) for _, key, _ in outputs]
    digests = [take_hash(job, seed, key, renderer.identity) for seed, key, _ in outputs]
    finished = [not force and _finished(job, manifest, path, key, d) for (_, key, path), d in zip(outputs, digests)]
    results: dict[int, OutputResult] = {}
    for n, (_, key, _) in enumerate(outputs):
        if finished[n]:
            entry = manifest.entries[key]
            results[n] = OutputResult(
                job.name, key, "skipped", entry["samples"], entry["seconds"], entry["lufs"], entry["true_peak_db"]
            )
            if _near_silent(entry["true_peak_db"]):
                results[n].warning = _near_silent_warning(entry["true_peak_db"])
    started = time.perf_counter()
    try:
        by_seed: dict[int, list[int]] = {}
        for n, take in enumerate(job.takes):
            by_seed.setdefault(take.seed - (n % job.spec.variations), []).append(n)
        for base_seed, indices in by_seed.items():
            if all(finished[n] for n in indices):
                continue
            takes = _model_audio(job, renderer, base_seed, len(indices), progress)
            recipe = renderer.recipe(job) if hasattr(renderer, "recipe") else None
            for n, audio in zip(indices, takes):
                if finished[n]:
                    continue
                seed, key, path = outputs[n]
                take_started = time.perf_counter()
                audio, lufs, peak = finish_take(job, np.asarray(audio, dtype=np.float32), base_dir)
                write_take(job, audio, path, seed, renderer.identity, digests[n], recipe)
                lufs_value, peak_value = _finite(lufs), _finite(peak)
                manifest.record(key, _entry(job, digests[n], int(audio.shape[1]), lufs_value, peak_value))
                seconds = timebase.samples_to_seconds(audio.shape[1])
                elapsed = time.perf_counter() - take_started
                result = OutputResult(
                    job.name, key, "rendered", int(audio.shape[1]), seconds, lufs_value, peak_value, elapsed
                )
                target = job.spec.loudness
                if target is not None and lufs_value is not None and abs(lufs_value - target) > LOUDNESS_WARN_LU:
                    result.warning = (
                        f"reached {lufs_value:.1f} LUFS, not the {target:g} target: the {job.spec.true_peak:g} dBTP "
                        "ceiling allows no more without extreme limiting"
                    )
                if _near_silent(peak_value):  # written, but no usable sound: say so, not "rendered"
                    result.status, result.warning = "near-silent", _near_silent_warning(peak_value)
                results[n] = result
        # Model time is shared by the takes rendered now: spread it over them for the table.
        rendered = [r for r in results.values() if r.status in ("rendered", "near-silent")]
        total = time.perf_counter() - started
        for result in rendered:
            result.time_s = total / len(rendered)
    except Exception as err:  # one job's failure is reported; the batch goes on
        message = _error_line(err)
        for n, (_, key, _) in enumerate(outputs):
            if n not in results:
                results[n] = OutputResult(job.name, key, "failed", error=message, time_s=time.perf_counter() - started)
    return [results[n] for n in sorted(results)]


def _near_silent(peak_db: float | None) -> bool:
    """Whether a take of this true peak (None: digital silence) is near-silent."""
    return peak_db is None or is_near_silent(peak_db)


def _near_silent_warning(peak_db: float | None) -> str:
    peak = "-inf" if peak_db is None else f"{peak_db:.1f}"
    return f"near-silent: true peak {peak} dBTP, under {NEAR_SILENT_DBTP:g} dBTP; try other seeds or a fuller prompt"


def check_outputs_free(sheet: Sheet, out_dir: Path, force: bool) -> list[str]:
    """Outputs that exist but were not written by a render into this folder (refused without --force).

    A file the manifest does not list counts as the render's when its comment says a render of
    the same job wrote it (a kill between the file's rename and the manifest leaves one)."""
    if force:
        return []
    manifest = Manifest(out_dir)
    problems = []
    for job in sheet.jobs:
        for _, key, path in _outputs(job, out_dir):
            if path.exists() and key not in manifest.entries and not _written_for(job, path):
                problems.append(
                    f"{sheet.path}:{job.line}: job {job.index + 1} ({job.name}): output: {str(path)!r} exists and was not written by sa3 render; pass --force to replace it"
                )
    return problems


def _written_for(job: Job, path: Path) -> bool:
    comment = recorded_comment(path)
    return comment.startswith("sa3 render: ") and f" job={job.name} hash=" in comment


def render_sheet(
    sheet: Sheet,
    out_dir: Path,
    renderer,
    force: bool = False,
    show_progress: bool = True,
    on_result: Callable[[OutputResult], None] | None = None,
) -> list[OutputResult]:
    """Render every job of ``sheet`` into ``out_dir``; writes the JSON report; returns all results."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps({out_dir} | {(out_dir / take.output).parent for job in sheet.jobs for take in job.takes})
    manifest = Manifest(out_dir)
    results: list[OutputResult] = []
    bar = tqdm(sheet.jobs, desc="render", unit="job", disable=not show_progress)
    for job in bar:
        bar.set_postfix_str(job.name)

        def progress(step: int, total: int, name: str = job.name) -> None:
            bar.set_postfix_str(f"{name} step {step}/{total}")

        job_results = render_job(job, renderer, out_dir, sheet.path.parent, manifest, force, progress)
        for result in job_results:
            if result.status == "failed":
                bar.write(f"sa3 render: job {job.name!r} failed: {result.error}")
            elif result.warning:
                bar.write(f"sa3 render: warning: {result.file}: {result.warning}")
            if on_result:
                on_result(result)
        results += job_results
    bar.close()
    _write_json(
        out_dir / REPORT_NAME,
        {
            "sheet": str(sheet.path),
            "model": renderer.identity,
            "rendered": sum(r.status == "rendered" for r in results),
            "near_silent": sum(r.status == "near-silent" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "outputs": [dataclasses.asdict(r) for r in results],
        },
    )
    return results


def summary_table(results: list[OutputResult]) -> str:
    """A plain-text table: file, length, LUFS, peak dBTP, time taken, status."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("file", "length s", "LUFS", "peak dBTP", "time s", "status")]
    for r in results:
        status = r.status if r.status != "failed" else f"FAILED: {r.error}"
        rows.append(
            (
                r.file,
                num(r.seconds if r.samples else None, ".3f"),
                num(r.lufs, ".1f"),
                num(r.true_peak_db, ".1f"),
                num(r.time_s if r.status != "skipped" else None, ".2f"),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row[:5], widths)))
        + "  "
        + row[5]
        for row in rows
    ]
    counts = {s: sum(r.status == s for r in results) for s in ("rendered", "near-silent", "skipped", "failed")}
    silent = f"{counts['near-silent']} near-silent, " if counts["near-silent"] else ""
    lines.append(f"{counts['rendered']} rendered, {silent}{counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)
