"""The ``sa3`` command. Each subcommand lives in its own module with a ``register(subparsers)``.

Errors a person caused (:class:`Sa3Error`) print one line and exit with status 2;
Ctrl-C exits with 130 and leaves no half-written output (outputs are written atomically).
The console command (``sa3``, ``python -m sa3core``) goes through :func:`entry`, which ends the
one-shot rendering commands without the interpreter's teardown.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading
import warnings

from sa3core.allocator import keep_freed_memory
from sa3core.errors import Sa3Error

from .threads import wait_passively

# Subcommand modules, in the order `sa3 --help` lists them.
COMMANDS = ["generate", "codec", "serve", "render", "export", "train", "data", "eval", "bench", "model", "info"]
# The module that registers each command (a module may register several).
MODULE_OF = {
    **{name: name for name in COMMANDS if name != "codec"},
    "inpaint": "generate",
    "continue": "generate",
    "transform": "generate",
    "encode": "codec",
    "decode": "codec",
    "keys": "serve",
}
# One request, one file, exit: what a producer waits on at the prompt. Their outputs are written
# atomically and closed before the command returns, and they leave no worker threads behind.
FAST_EXIT = frozenset({"generate", "inpaint", "continue", "transform", "encode", "decode"})


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``sa3`` parser with every subcommand, or with only those of the module ``only``.

    Each subcommand module imports what it runs on (the corpus builder imports pedalboard, the
    exporters onnx), so building every subparser for one command cost a cold ``sa3 generate``
    about 0.3 s; :func:`main` registers just the command it was given."""
    parser = argparse.ArgumentParser(
        prog="sa3", description="Fast variable-length text-to-audio (Stable Audio 3 methods)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else [only]:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}":
                continue  # that command is not built yet
            raise
        module.register(subparsers)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one plain line, ``sa3: warning: ...`` (no file, line or source), above a
    progress bar when one is drawn."""
    text = f"sa3: warning: {message}"
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        tqdm.tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    keep_freed_memory()  # before the models allocate: sa3core/allocator.py says why
    warnings.showwarning = show_warning  # warnings raised mid-take too (a cache that cannot be written)
    if not argv or argv[0] != "bench":  # benches set their own OpenMP environment (bench/threads.py)
        wait_passively()  # before torch loads OpenMP: sa3/cli/threads.py says why
    module = MODULE_OF.get(argv[0]) if argv else None  # None: the full parser (help, or a typo it reports)
    parser = build_parser(module)
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except Sa3Error as err:
        print(f"sa3: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sa3: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _other_threads() -> bool:
    """Whether a thread other than this one is alive that the interpreter's exit would join."""
    return any(not t.daemon for t in threading.enumerate() if t is not threading.current_thread())


def entry() -> None:
    """The ``sa3`` console command: :func:`main`, then the exit.

    With torch loaded the interpreter's own teardown (clearing every module, then torch's C++
    static destructors) takes 0.5-0.8 s on 2 cores: a sixth of a cold ``sa3 generate`` of 4 bars,
    spent after the file is written. A :data:`FAST_EXIT` command that returned therefore runs the
    exit handlers (logging, multiprocessing, zmq), flushes the standard streams and leaves with
    ``os._exit``; every other command, an argument error (argparse's ``SystemExit``) or a crash
    takes the ordinary exit, and so does any command that still has threads the ordinary exit
    would wait for (daemon threads, such as the progress bar's monitor, it does not wait for).
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in FAST_EXIT and not _other_threads():
        atexit._run_exitfuncs()  # what the ordinary exit runs first; the slow part is what comes after
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader that went away, or a closed stream: nothing to keep
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
