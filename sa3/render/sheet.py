"""Prompt sheets: parsing and validation, with every problem reported before anything renders.

A sheet is YAML (a top-level ``jobs:`` list, optionally ``defaults:`` merged into every job)
or CSV (one job a row, a header row of the same keys). The keys of a job are the fields of
:class:`JobSpec`. Problems are collected, each naming the sheet line (YAML: the line of the
offending key or item; CSV: the row's line) and the field, and raised together as
:class:`SheetError`.
"""

from __future__ import annotations

import hashlib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from sa3core import limits, timebase
from sa3core.audio import FORMATS, SUBTYPES
from sa3core.config import from_dict
from sa3core.errors import Sa3Error

from .chain import EffectError, build_effect
from .loops import TAILS
from .reading import READERS, RawJob, close_match, hint
from .riff import parse_root_note

MODES = ("generate", "inpaint", "continue", "transform")
MAX_TAKES = 256


@dataclass
class JobSpec:
    """One job as written in a sheet. Defaults live here and only here."""

    prompt: str = ""
    name: str = ""  # default: the output's file stem, else job1, job2, ...
    mode: str = "generate"  # generate | inpaint | continue | transform
    seconds: float | None = None  # length (continue: of the new audio)
    bars: float | None = None  # length in bars at bpm and meter, instead of seconds
    bpm: float | None = None  # quarter notes per minute
    meter: str = "4/4"
    seed: Any = 0  # one seed or a list of seeds
    variations: int = 1  # takes per seed: variation k of seed s is seed s + k
    steps: int | None = None  # sampler steps (default: the model's)
    cfg: float | None = None  # guidance scale (default: the model's)
    source: str | None = None  # inpaint/continue/transform: audio file, relative to the sheet
    regions: list = field(default_factory=list)  # inpaint: ["5.1:9.1", "12.0:14.5"]
    chain: list = field(default_factory=list)  # effects: [{type: Reverb, room_size: 0.4}, {vst3: PATH, params: {}}]
    tail: str = ""  # cut | keep | fold; default fold for loops, cut otherwise
    tail_max: float = 8.0  # seconds of effect tail at most (keep and fold)
    loop: bool = False  # seamless loop: the end crossfades into the start, length unchanged
    crossfade: float = 0.05  # seconds of overhang crossfaded onto the start of a loop
    loudness: float | None = None  # target integrated loudness in LUFS (none: leave the level)
    true_peak: float = -1.0  # ceiling in dBTP when normalising
    root_note: Any = None  # acid root note: MIDI number or name like C4
    output: str = ""  # file under the output folder; {name}, {seed}, {take} fill in; default {name}.wav
    bit_depth: Any = "24"  # 16 | 24 | float (a number or text)
    model: str | None = (
        None  # a released model's name (small-music) or a folder, relative to the sheet; default: --model
    )
    init_noise_level: float = 0.9  # transform: how much of the source noise replaces, 0 < level <= 1
    # LoRA adapters in order: ["style.safetensors:0.7", {file: x, strength: 1}]
    loras: list = field(default_factory=list)


@dataclass
class Take:
    seed: int
    output: str  # relative to the output folder (or absolute)


@dataclass
class Job:
    """A validated job, ready to render. Lengths are in samples at 44.1 kHz."""

    index: int
    name: str
    line: int
    spec: JobSpec
    samples: int  # output length (generate), new audio (continue), 0 for inpaint (source length)
    meter: timebase.Meter
    takes: list[Take]
    source: Path | None
    source_sha256: str | None
    regions: list[tuple[int, int]]
    tail: str
    overhang: int  # extra samples rendered for a seamless loop
    root_note: int | None
    beats: int | None  # quarter notes, for the acid chunk; None without a tempo
    model: str | None = None  # the job's model: a folder (found from the sheet's) or a name as written; None: --model
    loras: list[tuple[str, float]] = field(
        default_factory=list
    )  # (file found from the sheet's folder, or a name; strength)


@dataclass
class Sheet:
    path: Path
    jobs: list[Job]


class SheetError(Sa3Error):
    """A sheet with problems; ``issues`` holds one line per problem, ``path:line: job: field: what``."""

    def __init__(self, path: Path, issues: list[str]) -> None:
        self.path, self.issues = path, issues
        super().__init__(
            f"sheet {str(path)!r} has {len(issues)} problem(s); nothing was rendered:\n  " + "\n  ".join(issues)
        )


# ---------------------------------------------------------------------------------- checking


def _type_ok(value: Any, hint: Any) -> str | None:
    """None if ``value`` fits ``hint``, else what was expected (for the message)."""
    if hint is Any:
        return None
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None if math.isfinite(value) else "a finite number"
        if option is str and isinstance(value, str):
            return None
        if option is list and isinstance(value, list):
            return None
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
        list: "a list",
        type(None): "empty",
    }
    return " or ".join(names.get(o, str(o)) for o in options if o is not type(None))


def load_sheet(path: str | Path, only: list[str] | None = None) -> Sheet:
    """Read and validate a sheet; raises :class:`SheetError` listing every problem found.

    ``only`` keeps the jobs with those names (an unknown name is a problem too).
    """
    path = Path(path)
    if not path.is_file():
        raise Sa3Error(f"sheet {str(path)!r} does not exist; give a .yaml or .csv prompt sheet")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise Sa3Error(f"sheet {str(path)!r} must be .yaml, .yml or .csv")
    issues: list[str] = []
    hints = typing.get_type_hints(JobSpec)
    # CSV cells of these fields stay text ("C4", "4/4", a prompt that reads like a number).
    text_fields = {name for name, hint_ in hints.items() if hint_ in (str, str | None)} | {"root_note"}
    raw_jobs = reader(path, issues, text_fields)
    jobs: list[Job] = []
    names: list[_Named] = []  # every job's name and outputs, valid or not: a clash counts either way
    for raw in raw_jobs:
        job = _check_job(path, raw.index, raw, hints, issues, names)
        if job is not None:
            jobs.append(job)
    _check_across(path, names, issues)
    if only:
        names = {job.name for job in jobs}
        for name in only:
            if name not in names:
                issues.append(f"{path}: --jobs-only {name!r} is not a job in the sheet{close_match(name, names)}")
        jobs = [job for job in jobs if job.name in set(only)]
    if issues:
        raise SheetError(path, issues)
    return Sheet(path, jobs)


@dataclass
class _Named:
    """What the checks across jobs need of a job, valid or not."""

    index: int
    name: str
    line: int
    takes: list[Take]


def _check_job(path: Path, index: int, raw: RawJob, hints: dict, issues: list[str], names: list[_Named]) -> Job | None:
    label = f"job {index + 1}" + (f" ({raw.values['name']})" if isinstance(raw.values.get("name"), str) else "")
    count = len(issues)

    mistyped: set[str] = set()

    def problem(name: str, message: str, *sub: Any) -> None:
        if name in mistyped:
            return  # already reported as the wrong type; follow-on complaints would only confuse
        where = name + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in sub)
        # A bad value in defaults is reported once, against defaults, not once per job.
        owner = "defaults" if raw.origin.get(name) == ("defaults",) else label
        issue = f"{path}:{raw.line_of(name, *sub)}: {owner}: {where}: {message}"
        if issue not in issues:
            issues.append(issue)

    clean = {}
    for name, value in raw.values.items():
        if name not in hints:
            problem(name, f"unknown key {name!r}{hint(name, hints)}")
        elif (expected := _type_ok(value, hints[name])) is not None:
            problem(name, f"must be {expected}, got {value!r}")
            mistyped.add(name)
        else:
            clean[name] = value
    spec = from_dict(JobSpec, clean, where=label)
    spec.bit_depth = str(spec.bit_depth)  # `bit_depth: 24` means "24"

    def attempt(name: str, fn, *args, sub: tuple = ()):
        try:
            return fn(*args)
        except Sa3Error as err:
            problem(name, str(err), *sub)
            return None

    if spec.mode not in MODES:
        problem("mode", f"mode {spec.mode!r} is not one of {', '.join(MODES)}{close_match(spec.mode, MODES)}")
    if not spec.prompt.strip():
        problem("prompt", "every job needs a prompt (what to make)")
    meter = attempt("meter", timebase.Meter.parse, spec.meter) or timebase.Meter()
    bpm_ok = spec.bpm is None or attempt("bpm", timebase.check_bpm, spec.bpm) is not None

    # Length.
    samples = 0
    if spec.seconds is not None and spec.bars is not None:
        problem("bars", "give seconds or bars, not both")
    elif spec.mode in ("inpaint", "transform") and (spec.seconds is not None or spec.bars is not None):
        problem(
            "seconds" if spec.seconds is not None else "bars",
            f"{spec.mode} keeps the source's length; leave seconds/bars out",
        )
    elif spec.bars is not None:
        if spec.bpm is None:
            if "bpm" not in mistyped:
                problem("bars", "bars need a tempo: add bpm (and meter, default 4/4)")
        elif bpm_ok:
            samples = attempt("bars", timebase.bars_to_samples, spec.bars, spec.bpm, meter) or 0
    elif spec.seconds is not None:
        if spec.seconds <= 0:
            problem("seconds", f"length {spec.seconds!r} s must be longer than zero")
        elif (samples := timebase.seconds_to_samples(spec.seconds)) == 0:
            problem("seconds", f"length {spec.seconds!r} s is shorter than one sample")
    elif spec.mode not in ("inpaint", "transform") and not {"seconds", "bars", "mode"} & mistyped:
        problem("seconds", "the job needs a length: seconds, or bars with bpm")
    if samples:
        what = "length" if spec.bars is None else f"{spec.bars:g} bars at {spec.bpm:g} bpm in {meter}"
        attempt(
            "bars" if spec.bars is not None else "seconds", timebase.check_duration, samples, timebase.MAX_SECONDS, what
        )

    # Loop.
    overhang = 0
    if spec.loop:
        overhang = timebase.seconds_to_samples(spec.crossfade) if spec.crossfade > 0 else 0
        if spec.mode != "generate":
            problem("loop", f"seamless loops are rendered with mode generate, not {spec.mode}")
        elif overhang < 1:
            problem("crossfade", f"a loop crossfade of {spec.crossfade!r} s is too short; use e.g. 0.05")
        elif samples and overhang > samples // 2:
            problem("crossfade", f"crossfade {spec.crossfade:g} s is over half the loop's length; shorten it")
    tail = spec.tail or ("fold" if spec.loop else "cut")
    if tail not in TAILS:
        problem("tail", f"tail {spec.tail!r} is not one of {', '.join(TAILS)}{close_match(spec.tail, TAILS)}")
    elif spec.loop and tail == "keep":
        problem("tail", "a loop cannot keep its tail (the file would be longer than the loop); use fold or cut")
    if not 0 < spec.tail_max <= 60:
        problem("tail_max", f"tail_max {spec.tail_max!r} s must be above 0 and at most 60")

    # Takes.
    seeds = spec.seed if isinstance(spec.seed, list) else [spec.seed]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        problem("seed", f"seed must be a whole number or a list of them, got {spec.seed!r}")
        seeds = [0]
    elif bad := [s for s in seeds if not 0 <= s <= limits.MAX_SEED]:
        attempt("seed", limits.check_seed, bad[0])
        seeds = [0]
    elif len(set(seeds)) != len(seeds):
        problem("seed", f"seed list {spec.seed!r} repeats a seed; each take needs its own")
        seeds = sorted(set(seeds))
    # The limits of the CLI and the daemon (sa3core.limits): a sheet renders the same either way.
    attempt("variations", limits.check_variations, spec.variations)
    if len(seeds) * max(spec.variations, 1) > MAX_TAKES:
        problem("seed", f"{len(seeds) * spec.variations} takes is more than {MAX_TAKES}; split the job")
    attempt("steps", limits.check_steps, spec.steps)
    attempt("cfg", limits.check_cfg, spec.cfg)
    attempt("prompt", limits.check_prompt, spec.prompt)

    model = None
    if spec.model is not None:
        if not spec.model.strip():
            problem("model", "model is empty; name a released model (e.g. small-music) or a model folder, or drop it")
        else:  # a folder next to the sheet wins; anything else is a name the renderer resolves (or its daemon serves)
            folder = Path(spec.model).expanduser()
            folder = folder if folder.is_absolute() else path.parent / folder
            model = str(folder) if folder.exists() else spec.model

    loras = _check_loras(spec.loras, path, problem)
    if spec.mode == "transform":
        attempt("init_noise_level", limits.check_init_noise_level, spec.init_noise_level)
    elif spec.init_noise_level != 0.9:
        problem("init_noise_level", f"init_noise_level is for mode transform, not {spec.mode}")

    # Source and regions.
    source, source_sha, regions = _check_source(spec, path, problem, attempt, meter, mistyped)

    # Chain: built for real, so unknown effects, bad parameters and plugins that do not load show now.
    for i, item in enumerate(spec.chain):
        try:
            build_effect(item, path.parent)
        except EffectError as err:
            if err.key and isinstance(item, dict) and err.key in item:
                problem("chain", str(err), i, err.key)
            else:
                problem("chain", str(err), i)

    # Loudness.
    if spec.loudness is not None and not -70 <= spec.loudness <= 0:
        problem("loudness", f"target {spec.loudness!r} LUFS is out of range; use -70 to 0 (e.g. -14)")
    if not -20 <= spec.true_peak <= 0:
        problem("true_peak", f"ceiling {spec.true_peak!r} dBTP is out of range; use -20 to 0 (e.g. -1)")
    root_note = None if spec.root_note is None else attempt("root_note", parse_root_note, spec.root_note)
    if root_note is not None and spec.bpm is None and "bpm" not in mistyped:
        problem("root_note", "the root note is stored in the WAV acid chunk with the tempo; add bpm")

    # Outputs.
    name = spec.name or (Path(spec.output).stem if spec.output and "{" not in spec.output else f"job{index + 1}")
    takes = _takes(spec, name, seeds, problem)
    names.append(_Named(index, name, raw.line, takes))
    beats = None
    if spec.bpm is not None and bpm_ok and samples:
        beats = max(1, round(timebase.samples_to_seconds(samples) * spec.bpm / 60.0))
    if len(issues) > count:
        return None
    return Job(
        index,
        name,
        raw.line,
        spec,
        samples,
        meter,
        takes,
        source,
        source_sha,
        regions,
        tail,
        overhang,
        root_note,
        beats,
        model,
        loras,
    )


def _check_loras(items: Any, path: Path, problem) -> list[tuple[str, float]]:
    """A job's ``loras``: each ``"FILE[:STRENGTH]"`` or ``{file: FILE, strength: S}`` (``name`` for
    an adapter a daemon serves). A file next to the sheet (or an absolute path) is taken as that
    file; anything else stays a name, which a daemon resolves in its LoRA folder."""
    from sa3core.limits import MAX_LORAS
    from sa3core.lora import check_strength, parse_spec

    if not isinstance(items, list):
        problem("loras", f"loras must be a list of adapters, e.g. [style.safetensors:0.7], not {items!r}")
        return []
    if len(items) > MAX_LORAS:
        problem("loras", f"{len(items)} adapters is more than {MAX_LORAS}; merge some or split the job")
        return []
    loras = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, str) and item.strip():
                ref, strength = parse_spec(item.strip())
            elif (
                isinstance(item, dict)
                and set(item) <= {"file", "name", "strength"}
                and len({"file", "name"} & set(item)) == 1
            ):
                ref = Path(str(item.get("file", item.get("name"))))
                strength = check_strength(item.get("strength", 1.0), f"strength of {str(ref)!r}")
            else:
                problem("loras", f"adapter {item!r}: write FILE[:STRENGTH] or {{file: FILE, strength: S}}", i)
                continue
        except Sa3Error as err:
            problem("loras", str(err), i)
            continue
        found = ref.expanduser() if ref.expanduser().is_absolute() else path.parent / ref
        loras.append((str(found) if found.is_file() else str(ref), strength))
    return loras


def _check_source(
    spec: JobSpec, path: Path, problem, attempt, meter, mistyped: set[str]
) -> tuple[Path | None, str | None, list]:
    from sa3core.pipeline import Region

    if spec.mode not in MODES or "mode" in mistyped:
        return None, None, []  # reported already; what source a mode needs is unknown
    if spec.mode == "generate":
        if spec.source is not None:
            problem("source", "a source file is for mode inpaint, continue or transform; set mode or drop source")
        if spec.regions:
            problem("regions", "regions are for mode inpaint")
        return None, None, []
    if spec.source is None:
        problem("source", f"mode {spec.mode} needs a source audio file")
        return None, None, []
    source = Path(spec.source).expanduser()
    source = source if source.is_absolute() else path.parent / source
    if not source.is_file():
        problem("source", f"source file {str(source)!r} does not exist")
        return None, None, []
    try:
        info = sf.info(str(source))
    except (sf.LibsndfileError, RuntimeError):
        problem("source", f"{str(source)!r} is not an audio file sa3 can read (WAV, FLAC, AIFF, OGG)")
        return None, None, []
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    seconds = info.frames / info.samplerate
    regions = []
    if spec.mode == "continue" and spec.regions:
        problem("regions", "continue extends the source at its end; regions are for mode inpaint")
    if spec.mode == "transform" and spec.regions:
        problem("regions", "transform makes the whole source again; regions are for mode inpaint")
    if spec.mode == "inpaint":
        if not spec.regions:
            problem(
                "regions",
                'inpaint needs regions to regenerate, e.g. regions: ["5.1:9.1"] (bars, with bpm) or ["2.0:4.5"]',
            )
        for i, text in enumerate(spec.regions if "bpm" not in mistyped else []):  # bar.beat needs the tempo
            if not isinstance(text, str):
                problem("regions", f"region {text!r} must be text START:END; quote it in YAML", i)
                continue
            span = attempt("regions", timebase.parse_region, text, spec.bpm, meter, sub=(i,))
            if span is None:
                continue
            if span[1] > seconds + 1e-9:
                problem(
                    "regions", f"region {text!r} ends at {span[1]:.3f} s, past the source's end ({seconds:.3f} s)", i
                )
                continue
            region = Region.from_seconds(*span)
            for j, other in enumerate(regions):
                if region.start < other[1] and other[0] < region.end:
                    problem("regions", f"region {text!r} overlaps region {j + 1}; merge them", i)
            regions.append((region.start, region.end))
    return source, digest, regions


def _takes(spec: JobSpec, name: str, seeds: list[int], problem) -> list[Take]:
    template = spec.output or "{name}.wav"
    pairs = [(seed + k, n) for n, (seed, k) in enumerate((s, k) for s in seeds for k in range(max(spec.variations, 1)))]
    if len(pairs) > 1 and "{take}" not in template and "{seed}" not in template:
        stem, dot, ext = template.rpartition(".")
        template = f"{stem}-{{take}}.{ext}" if dot else f"{template}-{{take}}"
    takes = []
    for seed, n in pairs:
        try:
            output = template.format(name=name, seed=seed, take=n + 1)
        except (KeyError, IndexError, ValueError) as err:
            problem("output", f"{template!r} has an unknown placeholder ({err}); use {{name}}, {{seed}}, {{take}}")
            return []
        suffix = Path(output).suffix.lower()
        if suffix not in FORMATS:
            problem("output", f"{output!r} has an unknown extension; use one of {', '.join(FORMATS)}")
            return []
        takes.append(Take(seed, output))
    if spec.bit_depth not in SUBTYPES:
        problem("bit_depth", f"bit depth {spec.bit_depth!r} is not one of {', '.join(SUBTYPES)}")
    elif takes and FORMATS[Path(takes[0].output).suffix.lower()] == "FLAC" and SUBTYPES[spec.bit_depth] == "FLOAT":
        problem("bit_depth", "FLAC cannot hold float samples; use 16 or 24, or write a .wav")
    return takes


def _check_across(path: Path, jobs: list[_Named], issues: list[str]) -> None:
    seen_names: dict[str, _Named] = {}
    seen_outputs: dict[str, _Named] = {}
    for job in jobs:
        if job.name in seen_names:
            issues.append(
                f"{path}:{job.line}: job {job.index + 1}: name: {job.name!r} is also job {seen_names[job.name].index + 1}'s name; names must be unique"
            )
        seen_names.setdefault(job.name, job)
        for take in job.takes:
            key = str(Path(take.output))
            if key in seen_outputs and seen_outputs[key] is not job:
                issues.append(
                    f"{path}:{job.line}: job {job.index + 1} ({job.name}): output: {take.output!r} is also written by job {seen_outputs[key].index + 1}"
                )
            seen_outputs.setdefault(key, job)
