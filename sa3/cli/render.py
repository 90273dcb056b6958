"""``sa3 render SHEET``: render a prompt sheet (YAML or CSV) of jobs into a folder.

The whole sheet is validated first, and every problem printed with its sheet line and
field (exit 2) before the model loads. Then each job renders in turn; a failed job is
reported and the rest go on (exit 1 if any failed); finished outputs are skipped on re-runs
unless --force.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from sa3core.errors import Sa3Error

from . import show_warning, threads


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render a prompt sheet of jobs (YAML or CSV) with effects and loudness"
    )
    parser.add_argument("sheet", help="prompt sheet: .yaml with a jobs: list, or .csv with one job a row")
    parser.add_argument(
        "-o", "--output-dir", help="folder for the files (default: a folder named after the sheet, here)"
    )
    parser.add_argument("--daemon", metavar="ENDPOINT", help="render through a running `sa3 serve` daemon")
    parser.add_argument("--backend", default="torch", help="torch (default) or onnx")
    parser.add_argument(
        "--model", help="model folder or released model name, e.g. small-music (default: the model shipped with sa3)"
    )
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="float32 matmuls even where bf16 is the default (a released model's official numerics); other takes",
    )
    parser.add_argument("--force", action="store_true", help="render every job again, even finished ones")
    parser.add_argument("--jobs-only", nargs="+", metavar="NAME", help="render only the jobs with these names")
    threads.add_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_render)


def _renderer(args):
    threads.check(args.threads, args.daemon)
    if args.daemon:
        from ..render.daemon import DaemonRenderer

        if args.fp32:
            raise Sa3Error("--fp32 applies to in-process rendering; start the daemon with `sa3 serve --fp32` instead")
        return DaemonRenderer(args.daemon)
    from sa3core.hub import resolve_model

    from ..render.runner import InProcessRenderer

    folder = resolve_model(args.model)  # a folder, or a released model's name resolved from the Hugging Face cache
    if args.fp32 and args.backend != "torch":
        raise Sa3Error(f"--fp32 is for the torch backend, not {args.backend!r}")
    options = threads.apply(args.threads, args.backend)
    return InProcessRenderer(None if folder is None else str(folder), backend=args.backend, fp32=args.fp32, **options)


def _check_writable(sheet, out_dir: Path) -> None:
    """Sa3Error unless every take can be written, checked before the model loads: no take's
    output is a folder, and new files can be made in each folder the takes go in (where one does
    not exist yet, in the nearest folder above it that does: render makes the rest)."""
    from sa3core.files import check_writable_folder

    folders = {out_dir}
    for job in sheet.jobs:
        for take in job.takes:
            path = out_dir / take.output
            if path.is_dir():
                raise Sa3Error(f"output {str(path)!r} of job {job.name!r} is a folder; name a file in the sheet")
            folders.add(path.parent)
    for folder in sorted(folders):
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise Sa3Error(f"cannot make the output folder {str(folder)!r}: {str(existing)!r} is a file")
        check_writable_folder(existing)


def _check_models(sheet, renderer) -> None:
    """Sa3Error unless every job's ``model`` resolves (in-process: a folder, or a released name in
    the Hugging Face cache; --daemon: a name the daemon serves), before anything renders."""
    problems = []
    for job in sheet.jobs:
        try:
            renderer.for_job(job)
        except Sa3Error as err:
            problems.append(f"{sheet.path}:{job.line}: job {job.index + 1} ({job.name}): model: {err}")
    if problems:
        for issue in problems:
            print(f"sa3: error: {issue}", file=sys.stderr)
        raise Sa3Error(f"{len(problems)} job model(s) cannot be used; fix them and run again (nothing was rendered)")


def run_render(args) -> int:
    from ..render.runner import REPORT_NAME, check_outputs_free, render_sheet, summary_table
    from ..render.sheet import SheetError, load_sheet

    if not args.daemon:
        from sa3core.backends import BACKENDS

        BACKENDS.check(args.backend)
    try:
        sheet = load_sheet(args.sheet, only=args.jobs_only)
    except SheetError as err:
        for issue in err.issues:
            print(f"sa3: error: {issue}", file=sys.stderr)
        raise Sa3Error(
            f"{len(err.issues)} problem(s) in {args.sheet}; fix them and run again (nothing was rendered)"
        ) from None
    out_dir = Path(args.output_dir) if args.output_dir else Path.cwd() / Path(args.sheet).stem
    if out_dir.exists() and not out_dir.is_dir():
        raise Sa3Error(f"output folder {str(out_dir)!r} is a file; give a folder with -o")
    _check_writable(sheet, out_dir)
    taken = check_outputs_free(sheet, out_dir, args.force)
    if taken:
        for issue in taken:
            print(f"sa3: error: {issue}", file=sys.stderr)
        raise Sa3Error(
            f"{len(taken)} output(s) would overwrite files sa3 render did not write; pass --force or change output"
        )
    with warnings.catch_warnings():
        # Shown as they happen (the model loads lazily, mid-batch), as one plain line each.
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = show_warning
        renderer = _renderer(args)
        _check_models(sheet, renderer)
        results = render_sheet(sheet, out_dir, renderer, force=args.force, show_progress=not args.quiet)
    print(summary_table(results))
    print(f"report: {out_dir / REPORT_NAME}")
    return 1 if any(r.status == "failed" for r in results) else 0
