"""An independent evaluation set of real recordings (``sa3 data build-real -o DIR``).

The training corpus is rendered by sa3 itself (FluidSynth, procedural effects, hedgewars
effects), so its held-out split shares the corpus's instruments, rooms and mixes with the
training data. This set does not: it takes recorded and produced audio from Debian packages
that the corpus never uses (``training.corpus.sources`` lists those; the two lists must stay
apart, which a test checks):

- ``lmms-common``: the LMMS sample library (drum hits, basses, instruments, pads, loops, effects),
- ``extremetuxracer-data`` and ``frozen-bubble-data``: game music tracks and sound effects.

Every clip is cut to at most ``max_seconds``; music tracks at a seeded offset inside the track,
everything else from its start. Clips are interleaved by kind (music, loop, one-shot, sfx) in a
seeded order and numbered, so the first N files in name order (what ``sa3 eval --folder DIR
--items N`` takes) cover every kind. ``manifest.jsonl`` names the package, version, licence
and source file of every clip; ``LICENCES.md`` lists the packages.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from sa3core.config import from_attributes
from sa3core.errors import Sa3Error

KINDS = ("music", "loop", "one-shot", "sfx")
INSTALL_HINT = "install them with scripts/install-eval-deps (Debian packages, needs root)"
SILENT_PEAK = 1e-3  # -60 dBFS: a clip quieter than this carries nothing to score
MIN_SECONDS = 0.05


@dataclass(frozen=True)
class Collection:
    """One folder of a reserved package, and the kind of sound its files are."""

    package: str
    licence: str  # SPDX identifier, from /usr/share/doc/<package>/copyright
    copyright: str
    folder: str  # relative to the root (``/`` on an installed system)
    kind: str
    suffixes: tuple[str, ...] = (".ogg", ".wav", ".flac")
    contains: str = ""  # only file names containing this ("" = all)
    excludes: str = ""  # no file names containing this


LMMS = ("lmms-common", "GPL-2+", "LMMS developers (Files: * of the package's copyright)")
ETR = ("extremetuxracer-data", "GPL-2+", "1999-2001 Jasmin F. Patry (Tuxracer); Extreme Tux Racer contributors")
FROZEN = ("frozen-bubble-data", "GPL-2", "2000-2010 The Frozen-Bubble Team; 2012 Karthik Thakore")
LMMS_SAMPLES = "usr/share/lmms/samples"
COLLECTIONS = (
    *(Collection(*LMMS, f"{LMMS_SAMPLES}/{name}", "loop") for name in ("beats", "bassloops")),
    *(
        Collection(*LMMS, f"{LMMS_SAMPLES}/{name}", "one-shot")
        for name in ("drums", "basses", "instruments", "latin", "stringsnpads")
    ),
    *(Collection(*LMMS, f"{LMMS_SAMPLES}/{name}", "sfx") for name in ("effects", "misc")),
    # left out: lmms samples/shapes and samples/waveforms (single-cycle synthetic waveforms)
    Collection(*ETR, "usr/share/games/etr/music", "music"),
    Collection(*ETR, "usr/share/games/etr/sounds", "sfx"),
    Collection(*FROZEN, "usr/share/games/frozen-bubble/snd", "music", contains="zik"),
    Collection(*FROZEN, "usr/share/games/frozen-bubble/snd", "sfx", excludes="zik"),
)
PACKAGES = tuple(dict.fromkeys(c.package for c in COLLECTIONS))


@dataclass
class RealSetConfig:
    out_dir: str
    seed: int = 0
    max_seconds: float = 10.0
    items: int | None = None  # None = every usable clip
    overwrite: bool = False
    progress: bool = True
    root: str = "/"  # where the packages are installed


@dataclass
class RealSetReport:
    items: int
    seconds: float
    by_kind: dict[str, int]
    skipped: list[str]
    wall_seconds: float


def _files(collection: Collection, root: Path) -> list[Path]:
    folder = root / collection.folder
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in collection.suffixes and p.is_file())
    if collection.contains:
        paths = [p for p in paths if collection.contains in p.name]
    if collection.excludes:
        paths = [p for p in paths if collection.excludes not in p.name]
    return paths


def check_installed(root: str | os.PathLike = "/") -> None:
    """Raise a one-line Sa3Error naming every reserved package whose files are missing."""
    missing = sorted({c.package for c in COLLECTIONS if not (Path(root) / c.folder).is_dir()})
    if missing:
        raise Sa3Error(f"the evaluation set needs Debian packages {', '.join(missing)}; {INSTALL_HINT}")


def plan(seed: int, root: str | os.PathLike = "/") -> list[tuple[Collection, Path]]:
    """Every candidate file, interleaved by kind in a seeded order (same seed, same order)."""
    check_installed(root)
    rng = random.Random(seed)
    by_kind: dict[str, list[tuple[Collection, Path]]] = {kind: [] for kind in KINDS}
    for collection in COLLECTIONS:
        by_kind[collection.kind] += [(collection, path) for path in _files(collection, Path(root))]
    for entries in by_kind.values():
        rng.shuffle(entries)
    order = []
    for rank in range(max(len(entries) for entries in by_kind.values())):
        order += [by_kind[kind][rank] for kind in KINDS if rank < len(by_kind[kind])]
    return order


def _cut(audio, kind: str, max_samples: int, rng: random.Random):
    """Music: a window at a seeded offset in the middle part of the track; the rest: the start."""
    spare = audio.shape[1] - max_samples
    if spare <= 0:
        return audio, 0
    offset = int(rng.uniform(0.1, 0.6) * spare) if kind == "music" else 0
    return audio[:, offset : offset + max_samples], offset


def build_real_set(config: RealSetConfig) -> RealSetReport:
    """Write the clips, ``manifest.jsonl`` and ``LICENCES.md`` to ``config.out_dir``."""
    import numpy as np
    import soundfile as sf
    from tqdm import tqdm

    from sa3core.audio import save_audio, to_model_audio
    from sa3core.timebase import SAMPLE_RATE, seconds_to_samples
    from training.corpus.sources import package_version

    if config.max_seconds <= 0:
        raise Sa3Error(f"--max-seconds {config.max_seconds:g} must be above 0")
    if config.items is not None and config.items < 1:
        raise Sa3Error(f"--items {config.items} must be at least 1")
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise Sa3Error(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise Sa3Error(f"--out {str(out)!r} is not empty; pass --overwrite to build the set again there")
    order = plan(config.seed, config.root)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.flac"):  # --overwrite: a smaller set must not keep the last one's extra clips
        old.unlink()
    versions = {package: package_version(package) for package in PACKAGES}
    max_samples = seconds_to_samples(config.max_seconds)
    rows, skipped, by_kind = [], [], dict.fromkeys(KINDS, 0)
    started = time.monotonic()
    target = config.items or len(order)
    bar = tqdm(total=target, unit="clip", disable=not config.progress)
    for collection, path in order:
        if len(rows) == target:
            break
        rng = random.Random(f"{config.seed}:{collection.package}:{path.name}")
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            audio = to_model_audio(data.T, rate, what=str(path))
        except (Sa3Error, sf.LibsndfileError, RuntimeError) as err:
            skipped.append(f"{path}: {err}")
            continue
        audio, offset = _cut(audio, collection.kind, max_samples, rng)
        if audio.shape[1] < seconds_to_samples(MIN_SECONDS) or float(np.abs(audio).max()) < SILENT_PEAK:
            skipped.append(f"{path}: silent or shorter than {MIN_SECONDS} s")
            continue
        name = f"{len(rows):04d}-{collection.kind}-{collection.package.split('-')[0]}-{path.stem}.flac"
        save_audio(out / name, audio, bit_depth="24", overwrite=True)
        rows.append(
            {
                "path": name,
                "kind": collection.kind,
                "seconds": round(audio.shape[1] / SAMPLE_RATE, 4),
                "offset_seconds": round(offset / SAMPLE_RATE, 4),
                "package": collection.package,
                "version": versions[collection.package],
                "licence": collection.licence,
                "source": "/" + str(path.relative_to(config.root)),
                "source_sample_rate": rate,
            }
        )
        by_kind[collection.kind] += 1
        bar.update(1)
    bar.close()
    if not rows:
        raise Sa3Error("no usable clips were found in the evaluation packages (all silent or unreadable)")
    tmp = out / ".manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, out / "manifest.jsonl")
    (out / "LICENCES.md").write_text(licences_text(versions))
    return RealSetReport(len(rows), sum(row["seconds"] for row in rows), by_kind, skipped, time.monotonic() - started)


def licences_text(versions: dict[str, str]) -> str:
    lines = [
        "# Licences of the recordings in this evaluation set\n",
        "For evaluation only: sa3 never trains on these packages (sa3core/eval/realset.py).\n",
    ]
    for package in PACKAGES:
        used = [c for c in COLLECTIONS if c.package == package]
        folders = ", ".join(f"/{c.folder} ({c.kind})" for c in used)
        lines.append(
            f"\n## {package} {versions.get(package, '')}\n\n- licence: {used[0].licence}\n"
            f"- copyright: {used[0].copyright}\n- files used: {folders}\n"
        )
    return "".join(lines)


def register(actions) -> None:
    parser = actions.add_parser(
        "build-real",
        help="build the independent evaluation set of real recordings (never trained on)",
        description="Collect recorded and produced audio from Debian packages the training corpus never uses "
        f"({', '.join(PACKAGES)}), cut to clips at 44.1 kHz stereo, for `sa3 eval --folder DIR`. "
        "Install the packages once with scripts/install-eval-deps.",
    )
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="folder to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="clip order and music offsets (default 0)")
    parser.add_argument("--items", type=int, help="stop after this many clips (default: every usable one)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="longest clip in seconds (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="build again in a non-empty folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = from_attributes(RealSetConfig, args, out_dir=args.out, progress=not args.quiet)
    report = build_real_set(config)
    kinds = ", ".join(f"{kind} {count}" for kind, count in report.by_kind.items())
    print(f"{report.items} clips, {report.seconds / 60:.1f} min of audio ({kinds}) in {report.wall_seconds:.0f} s")
    if report.skipped:
        print(f"skipped {len(report.skipped)} files (silent, too short or unreadable); see below")
        for line in report.skipped:
            print(f"  {line}")
    print(f"evaluate: sa3 eval --folder {args.out} --items {report.items} --skip generation")
    return 0
