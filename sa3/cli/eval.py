"""``sa3 eval``: measure a model (autoencoder vs Opus, prompt adherence, inpainting borders,
Fréchet distance, diversity); prints a table and writes every number to JSON (docs/eval.md).

Everything typed is checked before the model loads or any audio is read.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from sa3core.config import from_attributes
from sa3core.errors import Sa3Error


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="measure a model's quality (codec, adherence, inpainting, FD)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model", help="model folder or released model name, e.g. small-music (default: the model shipped with sa3)"
    )
    model.add_argument(
        "--random-model", metavar="PRESET", help="evaluate a randomly initialised model of a preset (smoke checks)"
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--corpus", metavar="DIR", help="corpus folder from `sa3 data build` (manifest.jsonl)")
    data.add_argument("--folder", metavar="DIR", help="a folder of audio files as the real clips (no captions)")
    parser.add_argument("--split", default="test", help="corpus split to use (default test)")
    parser.add_argument("--items", type=int, default=8, help="real clips / prompts to use (default 8)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--cfg", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; prompt i uses seed + i (default 0)")
    parser.add_argument("--seeds", type=int, default=4, help="generations of one prompt for diversity (default 4)")
    parser.add_argument("--inpaint-items", type=int, default=4, help="clips to inpaint (default 4)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="cut clips / cap lengths here (default 10)")
    parser.add_argument(
        "--codec-search",
        type=int,
        default=0,
        metavar="STEPS",
        help="also score the autoencoder with latents searched that many steps (`sa3 encode --search`; "
        "~70 s per 10 s clip at 30 steps on 2 cores; default 0: off)",
    )
    parser.add_argument("--opus-kbps", default="12,24,48", help="Opus bitrates, comma-separated (default 12,24,48)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to leave out: autoencoder, opus, adherence, inpainting, frechet, "
        "diversity, or the groups reconstruction / generation",
    )
    parser.add_argument("-o", "--output", help="JSON report to write (default: none, table only)")
    parser.add_argument("--overwrite", action="store_true", help="replace the report if it exists")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice; 1 is fastest on busy machines)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _bitrates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise Sa3Error(f"--opus-kbps {text!r} must be numbers separated by commas, e.g. 12,24,48") from None
    if not values or any(not 6 <= v <= 510 for v in values):
        raise Sa3Error(f"--opus-kbps {text!r}: Opus bitrates run from 6 to 510 kbps")
    return values


def run(args) -> int:
    from ..eval.runner import EvalSettings, expand_skip, format_table, run_eval

    output = Path(args.output) if args.output else None
    if output is not None:
        if output.exists() and not args.overwrite:
            raise Sa3Error(f"report {str(output)!r} exists; pass --overwrite to replace it")
        if not output.parent.is_dir():
            raise Sa3Error(f"the folder of report {str(output)!r} does not exist; create it first")
    if args.steps is not None and args.steps < 1:
        raise Sa3Error(f"--steps {args.steps} must be at least 1")
    if args.codec_search < 0:
        raise Sa3Error(f"--codec-search {args.codec_search} must be 0 (off) or a number of steps, e.g. 30")
    if args.threads < 0:
        raise Sa3Error(f"--threads {args.threads} must be 0 (torch's choice) or more")
    for name in ("corpus", "folder"):
        value = getattr(args, name)
        if value and not Path(value).is_dir():
            raise Sa3Error(f"--{name} {value!r} is not a folder")
    if args.model:  # a folder, or a released model's name resolved from the Hugging Face cache
        from sa3core.hub import resolve_model

        args.model = str(resolve_model(args.model))
        if not Path(args.model).is_dir():
            raise Sa3Error(f"--model {args.model!r} is not a folder")
    settings = from_attributes(
        EvalSettings, args, opus_kbps=_bitrates(args.opus_kbps), skip=expand_skip(args.skip.split(","))
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        report = run_eval(settings, progress=not args.quiet)
    print(f"model {report['model']['name']} ({report['model']['sampler']}, {report['model']['steps']} steps)")
    print(format_table(report))
    if output is not None:
        from sa3core.checkpoint import atomic_write

        text = json.dumps(report, indent=2) + "\n"
        atomic_write(output, lambda tmp: Path(tmp).write_text(text))
        print(f"report written to {output}", file=sys.stderr)
    return 0
