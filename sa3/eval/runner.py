"""The evaluation run behind `sa3 eval`: data, sections, report.

``run_eval(settings, pipeline=None) -> report dict`` runs the sections in ``SECTION_ORDER``
(minus ``settings.skip``) and returns every number with the settings used; ``format_table``
turns a report into the printed table. Sections are functions in ``SECTIONS`` taking the
shared :class:`EvalContext`; each returns ``{"summary": {...}, "items": [...]}``.

Real clips come from a corpus folder (``manifest.jsonl``, one split) or a folder of audio
files; prompts come from the corpus items' captions and tags, or from ``BUILTIN_PROMPTS``
when there is no corpus.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sa3core import timebase
from sa3core.audio import load_audio
from sa3core.errors import Sa3Error
from sa3core.registry import Registry

from . import embed, metrics, music

REPORT_FORMAT = 1
SECTION_ORDER = ("autoencoder", "opus", "adherence", "inpainting", "frechet", "diversity")
SKIP_GROUPS = {
    "generation": ("adherence", "inpainting", "frechet", "diversity"),
    "reconstruction": ("autoencoder", "opus"),
}
NEEDS_REAL = ("autoencoder", "opus", "inpainting", "frechet", "diversity")
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")
INPAINT_REGION = (0.35, 0.65)  # the regenerated span, as fractions of the clip
JUMP_FLAG_RATIO = 10.0  # a border whose flux exceeds 10x the region's median is counted as a jump


@dataclass
class EvalSettings:
    """Everything that decides the numbers; stored in the report as given."""

    model: str | None = None  # model folder; None = the shipped default
    random_model: str | None = None  # preset of a randomly initialised model (smoke checks)
    corpus: str | None = None
    split: str = "test"
    folder: str | None = None
    items: int = 8
    steps: int | None = None  # None = the model's default
    cfg: float | None = None
    seed: int = 0
    seeds: int = 4  # generations of one prompt for the diversity measure
    inpaint_items: int = 4
    max_seconds: float = 10.0  # real clips are cut to this; generated lengths are capped at it
    opus_kbps: tuple[float, ...] = (12.0, 24.0, 48.0)
    codec_search: int = 0  # > 0: also score encodes searched this many steps (sa3core.codec_search)
    embedder: str = embed.DEFAULT_EMBEDDER
    skip: tuple[str, ...] = ()


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # float32 [2, samples], cut to max_seconds
    caption: str = ""
    tags: dict = field(default_factory=dict)


@dataclass
class PromptCase:
    """A prompt and what its output should show (None = not asked for)."""

    prompt: str
    samples: int
    key: music.Key | None = None
    bpm: float | None = None
    beats_per_bar: int | None = None
    one_shot: bool = False
    pulse_bpm: float | None = None  # compound meters (6/8, 9/8, 12/8): the dotted-quarter beat, bpm * 2/3


# (prompt, key, mode, bpm, meter, kind); loops last 4 bars, one-shots 1.5 s
BUILTIN_PROMPTS = (
    ("Warm Rhodes chord loop in A minor, 90 bpm, 4 bars", "A", "minor", 90.0, "4/4", "loop"),
    ("Bright piano chord loop in C major, 120 bpm, 4 bars", "C", "major", 120.0, "4/4", "loop"),
    ("Lush string waltz loop in D major, 3/4, 150 bpm, 4 bars", "D", "major", 150.0, "3/4", "loop"),
    ("Punchy house drum groove at 124 bpm, 4 bars", None, None, 124.0, "4/4", "loop"),
    ("Jazz waltz drum loop at 140 bpm in 3/4, 4 bars", None, None, 140.0, "3/4", "loop"),
    ("Clean electric guitar arpeggio loop in G major, 110 bpm, 4 bars", "G", "major", 110.0, "4/4", "loop"),
    ("Soft pad and bass loop in F minor, 100 bpm, 4 bars", "F", "minor", 100.0, "4/4", "loop"),
    ("Single grand piano note one-shot, C4, natural decay", None, None, None, None, "one-shot"),
)


def expand_skip(names) -> tuple[str, ...]:
    """``["opus", "generation"]`` -> the section names to skip; unknown names are an Sa3Error."""
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in SKIP_GROUPS:
            out.extend(SKIP_GROUPS[name])
        elif name in SECTION_ORDER:
            out.append(name)
        else:
            known = ", ".join([*SECTION_ORDER, *SKIP_GROUPS])
            raise Sa3Error(f"--skip {name!r} is not a section; choose from {known}")
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------- data
def _manifest_clips(settings: EvalSettings) -> list[Clip]:
    folder = Path(settings.corpus)
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        raise Sa3Error(f"no corpus at {str(folder)!r} (manifest.jsonl missing); build one with `sa3 data build -o DIR`")
    rows, splits = [], set()
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise Sa3Error(f"{str(manifest)!r} line {number} is not JSON: {err}") from None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise Sa3Error(f'{str(manifest)!r} line {number} has no "path"; rebuild the corpus with `sa3 data build`')
        splits.add(row.get("split", "train"))
        if row.get("split", "train") == settings.split:
            rows.append(row)
    if not rows:
        present = ", ".join(sorted(splits)) or "none"
        raise Sa3Error(f"corpus {str(folder)!r} has no items in split {settings.split!r} (splits present: {present})")
    limit = timebase.seconds_to_samples(settings.max_seconds)
    clips = []
    for row in rows[: settings.items]:
        tags = row.get("tags") or {}
        audio = load_audio(folder / row["path"])[:, :limit]
        clips.append(Clip(row["path"], audio, row.get("caption", ""), tags if isinstance(tags, dict) else {}))
    return clips


def _folder_clips(settings: EvalSettings) -> list[Clip]:
    folder = Path(settings.folder)
    if not folder.is_dir():
        raise Sa3Error(f"--folder {str(folder)!r} is not a folder of audio files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise Sa3Error(f"--folder {str(folder)!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    limit = timebase.seconds_to_samples(settings.max_seconds)
    kinds = _folder_kinds(folder)
    clips = []
    for path in paths[: settings.items]:
        name = str(path.relative_to(folder))
        clips.append(Clip(name, load_audio(path)[:, :limit], tags={"kind": kinds[name]} if name in kinds else {}))
    return clips


def _folder_kinds(folder: Path) -> dict[str, str]:
    """``path -> kind`` from a ``manifest.jsonl`` in the folder (`sa3 data build-real` writes one)."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return {}
    kinds = {}
    for line in manifest.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return {}  # not a manifest of ours: no kinds, no error
        if isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("kind"), str):
            kinds[row["path"]] = row["kind"]
    return kinds


def _by_kind(clips: list[Clip], items: list[dict], summarise) -> dict:
    """Per kind of clip (loop, one-shot, ...), where the clips name two kinds or more: ``summarise(rows)``."""
    kind_of = {clip.name: clip.tags.get("kind") for clip in clips}
    kinds = sorted({kind for kind in kind_of.values() if kind})
    if len(kinds) < 2:
        return {}
    return {kind: summarise([item for item in items if kind_of.get(item["clip"]) == kind]) for kind in kinds}


def cases_from_clips(clips: list[Clip], max_seconds: float) -> list[PromptCase]:
    """Prompts from corpus captions; targets from the tags (key only for major/minor modes)."""
    cases = []
    for clip in clips:
        tags = clip.tags
        key = music.Key.parse(tags["key"], tags.get("mode", "major")) if tags.get("key") else None
        rhythmic = tags.get("kind") in ("loop", "piece") and tags.get("bpm")
        beats = pulse = None
        if rhythmic and tags.get("meter"):
            meter = timebase.Meter.parse(tags["meter"])
            beats = int(meter.quarters_per_bar) if meter.quarters_per_bar in (3.0, 4.0) else None
            if meter.denominator == 8 and meter.numerator % 3 == 0:
                pulse = float(tags["bpm"]) * 2.0 / 3.0
        samples = min(clip.audio.shape[1], timebase.seconds_to_samples(max_seconds))
        bpm = float(tags["bpm"]) if rhythmic else None
        cases.append(PromptCase(clip.caption, samples, key, bpm, beats, tags.get("kind") == "one-shot", pulse))
    return cases


def builtin_cases(max_seconds: float) -> list[PromptCase]:
    cases = []
    for prompt, tonic, mode, bpm, meter, kind in BUILTIN_PROMPTS:
        seconds = timebase.bars_to_seconds(4, bpm, meter) if bpm else 1.5
        samples = timebase.seconds_to_samples(min(seconds, max_seconds))
        beats = int(timebase.Meter.parse(meter).quarters_per_bar) if meter else None
        key = music.Key.parse(tonic, mode) if tonic else None
        cases.append(PromptCase(prompt, samples, key, bpm, beats, kind == "one-shot"))
    return cases


# ---------------------------------------------------------------------- context
class EvalContext:
    """Shared, lazily computed inputs of the sections (each is computed at most once)."""

    def __init__(self, settings: EvalSettings, pipeline=None, progress: bool = True) -> None:
        self.settings = settings
        self.progress = progress
        self._pipeline = pipeline
        self._clips: list[Clip] | None = None
        self._generated: list[np.ndarray] | None = None
        self._real_embeddings: np.ndarray | None = None

    def bar(self, iterable, desc: str, total: int | None = None):
        return tqdm(iterable, desc=desc, total=total, disable=not self.progress, leave=False)

    @property
    def pipeline(self):
        if self._pipeline is None:
            from sa3core.pipeline import Pipeline

            if self.settings.random_model:
                self._pipeline = Pipeline.random(self.settings.random_model, seed=0, text_encoder="hash")
            else:
                self._pipeline = Pipeline.load(self.settings.model)
        return self._pipeline

    @property
    def clips(self) -> list[Clip]:
        if self._clips is None:
            if self.settings.corpus:
                self._clips = _manifest_clips(self.settings)
            elif self.settings.folder:
                self._clips = _folder_clips(self.settings)
            else:
                self._clips = []
        return self._clips

    @property
    def cases(self) -> list[PromptCase]:
        if self.settings.corpus:
            return cases_from_clips(self.clips, self.settings.max_seconds)
        return builtin_cases(self.settings.max_seconds)[: self.settings.items]

    def generate(self, case: PromptCase, seed: int, variations: int = 1) -> np.ndarray:
        s = self.settings
        return self.pipeline.generate(case.prompt, case.samples, s.steps, s.cfg, seed=seed, variations=variations)

    @property
    def generated(self) -> list[np.ndarray]:
        """One generation per prompt case (seed = settings.seed + case index), shared by sections."""
        if self._generated is None:
            cases = self.cases
            self._generated = [
                self.generate(case, self.settings.seed + i)[0]
                for i, case in self.bar(enumerate(cases), "generate", len(cases))
            ]
        return self._generated

    @property
    def real_embeddings(self) -> np.ndarray:
        if self._real_embeddings is None:
            self._real_embeddings = embed.embed([c.audio for c in self.clips], self.settings.embedder, self.progress)
        return self._real_embeddings


SECTIONS: Registry = Registry("eval section")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def _rate(flags) -> dict:
    flags = [bool(f) for f in flags if f is not None]
    return {"rate": (sum(flags) / len(flags)) if flags else None, "count": sum(flags), "judged": len(flags)}


# ---------------------------------------------------------------------- sections
def _reconstruction_scores(reference: np.ndarray, estimate: np.ndarray) -> dict:
    return {
        "log_mel_l1": metrics.log_mel_l1(reference, estimate),
        "mrstft": metrics.mrstft_distance(reference, estimate),
        "si_sdr_db": metrics.si_sdr(reference, estimate),
    }


RECONSTRUCTION_KEYS = ("log_mel_l1", "mrstft", "si_sdr_db")


def _summarise(items: list[dict], keys=RECONSTRUCTION_KEYS) -> dict:
    return {key: _mean(item[key] for item in items) for key in keys}


@SECTIONS.register("autoencoder")
def autoencoder_section(ctx: EvalContext) -> dict:
    """SAME encode -> decode of each real clip, compared with the clip.

    With a corpus, the key and tempo estimators also run on each reconstruction of a labelled
    clip (``recon_key``, ``recon_tempo``): what the codec alone keeps of what the prompts ask,
    the ceiling for generated audio, to read against the same estimators on the clips themselves
    (``adherence (real)``).

    With ``codec_search`` > 0 each clip is also encoded by that many steps of analysis-by-synthesis
    (sa3core.codec_search) and decoded the same way: ``search`` in the summary, ``search_*`` in
    the items. What the decoder can render; not what generated audio gets.
    """
    backend = ctx.pipeline.backend
    search = ctx.settings.codec_search
    if search and getattr(backend, "autoencoder", None) is None:
        raise Sa3Error("--codec-search needs the torch backend (it differentiates through the decoder)")
    from sa3core.codec_search import search_latents

    cases = ctx.cases if ctx.settings.corpus else [None] * len(ctx.clips)
    items, judged, searched = [], [], []
    for clip, case in ctx.bar(list(zip(ctx.clips, cases)), "autoencoder"):
        with torch.inference_mode():
            latents = backend.encode_audio(torch.from_numpy(clip.audio)[None])
            decoded = backend.decode_latents(latents)[0, :, : clip.audio.shape[1]].cpu().numpy()
        items.append({"clip": clip.name, "seconds": clip.audio.shape[1] / timebase.SAMPLE_RATE})
        items[-1].update(_reconstruction_scores(clip.audio, decoded.astype(np.float32)))
        if search:
            audio = torch.from_numpy(clip.audio)[None].to(latents.device)
            better = search_latents(backend.autoencoder, audio, search, latents=latents)
            with torch.inference_mode():
                redecoded = backend.decode_latents(better)[0, :, : clip.audio.shape[1]].cpu().numpy()
            searched.append(_reconstruction_scores(clip.audio, redecoded.astype(np.float32)))
            items[-1].update({f"search_{k}": v for k, v in searched[-1].items()})
        if case is not None:
            judged.append(_judge(decoded[:, : case.samples].astype(np.float32), case))
            items[-1].update({k: judged[-1][k] for k in ("key_found", "bpm_found") if k in judged[-1]})
    latent_kbps = timebase.LATENT_CHANNELS * timebase.frames_per_second() * 32 / 1000  # float32 latents
    summary = {**_summarise(items), "latent_kbps_float32": latent_kbps}
    if searched:
        summary["search"] = {**_summarise(searched), "steps": search}
    if judged:
        summary["recon_key"] = _rate(j.get("key_correct") for j in judged)
        summary["recon_tempo"] = _rate(j.get("tempo_correct") for j in judged)
    result = {"summary": summary, "items": items}
    searched_keys = tuple(f"search_{key}" for key in RECONSTRUCTION_KEYS) if searched else ()
    by_kind = _by_kind(
        ctx.clips, items, lambda rows: {**_summarise(rows), **_summarise(rows, searched_keys), "clips": len(rows)}
    )
    if by_kind:
        result["by_kind"] = by_kind
    return result


@SECTIONS.register("opus")
def opus_section(ctx: EvalContext) -> dict:
    """The same clips through Opus at each bitrate (codec_ref documents the chain)."""
    from . import codec_ref

    codec_ref.ffmpeg_path()  # fail before any work when ffmpeg is missing
    summary, items = {}, []
    for kbps in ctx.settings.opus_kbps:
        rows = []
        for clip in ctx.bar(ctx.clips, f"opus {kbps:g} kbps"):
            result = codec_ref.opus_roundtrip(clip.audio, kbps)
            rows.append({"clip": clip.name, "kbps": kbps, "lag_samples": result.lag_samples})
            rows[-1].update(_reconstruction_scores(clip.audio, result.audio))
        summary[f"{kbps:g}kbps"] = {**_summarise(rows), "max_abs_lag_samples": max(abs(r["lag_samples"]) for r in rows)}
        items.extend(rows)
    result = {"summary": summary, "items": items, "ffmpeg": codec_ref.ffmpeg_version()}
    by_kind = _by_kind(
        ctx.clips,
        items,
        lambda rows: {
            f"{kbps:g}kbps": _summarise([r for r in rows if r["kbps"] == kbps]) for kbps in ctx.settings.opus_kbps
        },
    )
    if by_kind:
        result["by_kind"] = by_kind
    return result


def _judge(audio: np.ndarray, case: PromptCase) -> dict:
    out: dict = {"samples": int(audio.shape[-1]), "asked_samples": case.samples}
    out["exact_length"] = audio.shape[-1] == case.samples
    if case.key is not None:
        found = music.estimate_key(audio)
        out.update(key=str(case.key), key_found=str(found) if found else None)
        out.update(key_correct=found == case.key, key_close=music.key_close(found, case.key))
    if case.bpm is not None:
        tempo = music.estimate_tempo(audio)
        targets = [case.bpm] + ([case.pulse_bpm] if case.pulse_bpm else [])
        out.update(bpm=case.bpm, bpm_found=tempo)
        out.update(
            tempo_correct=any(music.tempo_correct(tempo, bpm) for bpm in targets),
            tempo_octave_correct=any(music.tempo_correct(tempo, bpm, octave_errors=True) for bpm in targets),
        )
        if case.beats_per_bar is not None and music.tempo_correct(tempo, case.bpm, octave_errors=True):
            # on the asked quarter-note grid, judged only where the output keeps that grid
            meter = music.estimate_meter(audio, case.bpm)
            out.update(beats_per_bar=case.beats_per_bar, beats_per_bar_found=meter)
            out["meter_correct"] = None if meter is None else meter == case.beats_per_bar
    if case.one_shot:
        ending = metrics.one_shot_ending(audio)
        out.update(tail_relative_db=ending.relative_db, tail_dbfs=ending.tail_dbfs, clean_ending=ending.clean)
    return out


def _adherence_summary(items: list[dict]) -> dict:
    return {
        "key": _rate(i.get("key_correct") for i in items),
        "key_close": _rate(i.get("key_close") for i in items),
        "tempo": _rate(i.get("tempo_correct") for i in items),
        "tempo_octave": _rate(i.get("tempo_octave_correct") for i in items),
        "meter": _rate(i.get("meter_correct") for i in items),
        "one_shot_clean_ending": _rate(i.get("clean_ending") for i in items),
        "exact_length": _rate(i.get("exact_length") for i in items),
    }


@SECTIONS.register("adherence")
def adherence_section(ctx: EvalContext) -> dict:
    """Key, tempo, meter, one-shot endings and lengths of generations for each prompt case.

    Where the prompts come from a corpus, the same estimators also run on the real clips
    (``real``): the estimators' own accuracy on labelled audio, the ceiling to read against.
    """
    cases = ctx.cases
    items = [{"prompt": c.prompt, **_judge(audio, c)} for c, audio in zip(cases, ctx.generated)]
    result = {"summary": _adherence_summary(items), "items": items}
    if ctx.settings.corpus:
        real = [{"clip": clip.name, **_judge(clip.audio[:, : c.samples], c)} for clip, c in zip(ctx.clips, cases)]
        result["real"] = {"summary": _adherence_summary(real), "items": real}
    return result


@SECTIONS.register("inpainting")
def inpainting_section(ctx: EvalContext) -> dict:
    """Regenerate the middle 30 % of real clips: preserved audio bit-exact, border jumps."""
    s = ctx.settings
    items = []
    from sa3core.pipeline import Region

    for index, clip in ctx.bar(list(enumerate(ctx.clips[: s.inpaint_items])), "inpainting"):
        total = clip.audio.shape[1]
        start, end = (int(total * f) for f in INPAINT_REGION)
        out = ctx.pipeline.inpaint(clip.audio, clip.caption, [Region(start, end)], s.steps, s.cfg, seed=s.seed + index)[
            0
        ]
        exact = bool(
            np.array_equal(out[:, :start], clip.audio[:, :start]) and np.array_equal(out[:, end:], clip.audio[:, end:])
        )
        jumps = [metrics.border_jump(out, start, end, b).ratio for b in (start, end)]
        baseline = [metrics.border_jump(clip.audio, start, end, b).ratio for b in (start, end)]
        items.append(
            {"clip": clip.name, "region": [start, end], "preserved_exact": exact, "length_exact": out.shape[1] == total,
             "border_ratios": jumps, "original_border_ratios": baseline}
        )  # fmt: skip
    ratios = [r for item in items for r in item["border_ratios"]]
    baseline = [r for item in items for r in item["original_border_ratios"]]
    summary = {
        "preserved_exact": _rate(i["preserved_exact"] for i in items),
        "border_ratio_median": float(np.median(ratios)) if ratios else None,
        "border_ratio_max": float(np.max(ratios)) if ratios else None,
        "original_border_ratio_median": float(np.median(baseline)) if baseline else None,
        "jumps_flagged": _rate(r > JUMP_FLAG_RATIO for r in ratios),
    }
    return {"summary": summary, "items": items}


@SECTIONS.register("frechet")
def frechet_section(ctx: EvalContext) -> dict:
    """Fréchet distance between embeddings of the generations and of the real clips."""
    real = ctx.real_embeddings
    generated = embed.embed(ctx.generated, ctx.settings.embedder, ctx.progress)
    if len(real) < 2 or len(generated) < 2:
        raise Sa3Error("the Fréchet distance needs at least 2 real clips and 2 prompts; raise --items")
    summary = {"frechet": embed.frechet_distance(generated, real), "generated": len(generated), "real": len(real)}
    if len(real) >= 4:  # a noise floor: two halves of the real clips against each other
        half = len(real) // 2
        summary["frechet_real_halves"] = embed.frechet_distance(real[:half], real[half : 2 * half])
    return {"summary": summary, "embedder": ctx.settings.embedder, "dim": int(real.shape[1])}


@SECTIONS.register("diversity")
def diversity_section(ctx: EvalContext) -> dict:
    """Mean pairwise embedding distance over seeds of one prompt / the same between real clips."""
    s = ctx.settings
    if s.seeds < 2:
        raise Sa3Error(f"--seeds {s.seeds}: diversity needs at least 2 generations")
    case = ctx.cases[0]
    takes = ctx.generate(case, s.seed, variations=s.seeds)
    spread = embed.mean_pairwise_distance(embed.embed(list(takes), s.embedder, ctx.progress))
    real = embed.mean_pairwise_distance(ctx.real_embeddings) if len(ctx.clips) >= 2 else None
    summary = {"seed_distance": spread, "real_distance": real, "ratio": spread / real if real else None}
    return {"summary": summary, "prompt": case.prompt, "seeds": s.seeds}


# ---------------------------------------------------------------------- run
def run_eval(settings: EvalSettings, pipeline=None, progress: bool = True) -> dict:
    """Run every section not skipped; returns the report (JSON-ready, see module doc)."""
    skip = expand_skip(settings.skip)
    sections = [name for name in SECTION_ORDER if name not in skip]
    if not sections:
        raise Sa3Error("every section is skipped; nothing to measure")
    if settings.corpus and settings.folder:
        raise Sa3Error("give either --corpus DIR or --folder DIR, not both")
    if settings.items < 1:
        raise Sa3Error(f"--items {settings.items} must be at least 1")
    needing = [name for name in sections if name in NEEDS_REAL]
    if needing and not (settings.corpus or settings.folder):
        raise Sa3Error(
            f"{', '.join(needing)} need real clips: give --corpus DIR (and --split) or --folder DIR, "
            f"or --skip {','.join(needing)}"
        )
    if "opus" in sections:
        from .codec_ref import ffmpeg_path

        ffmpeg_path()  # a missing ffmpeg is reported before any other work
    ctx = EvalContext(settings, pipeline, progress)
    report: dict = {"format": REPORT_FORMAT, "settings": dataclasses.asdict(settings), "sections": {}, "seconds": {}}
    for name in sections:
        started = time.perf_counter()
        report["sections"][name] = SECTIONS.get(name)(ctx)
        report["seconds"][name] = round(time.perf_counter() - started, 2)
    report["model"] = {"name": ctx.pipeline.settings.name, "sampler": ctx.pipeline.settings.sampler,
                       "steps": settings.steps or ctx.pipeline.settings.steps}  # fmt: skip
    report["clips"] = [c.name for c in ctx.clips]
    report["environment"] = {"torch": torch.__version__, "numpy": np.__version__}
    return json_safe(report)


def json_safe(value):
    """Replace inf/nan (which JSON lacks) by the strings "inf", "-inf", "nan"; tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _cell(value) -> str:
    if isinstance(value, dict) and "rate" in value:
        rate = value["rate"]
        return "n/a (0 judged)" if rate is None else f"{rate:.2f} ({value['count']}/{value['judged']})"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def format_table(report: dict) -> str:
    """Rows of ``section  metric  value`` for every summary number in the report."""
    rows = []

    def add(label: str, values: dict) -> None:  # a nested group (e.g. one Opus bitrate) gives a row per entry
        for metric, value in values.items():
            if isinstance(value, dict) and "rate" not in value:
                rows.extend((label, f"{metric} {inner}", _cell(v)) for inner, v in value.items())
            else:
                rows.append((label, metric, _cell(value)))

    for name, section in report["sections"].items():
        add(name, section["summary"])
        for metric, value in section.get("real", {}).get("summary", {}).items():
            rows.append((f"{name} (real)", metric, _cell(value)))
        for kind, values in section.get("by_kind", {}).items():
            add(f"{name} [{kind}]", values)
    widths = [max(len(r[i]) for r in rows) for i in range(2)] if rows else [0, 0]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)
