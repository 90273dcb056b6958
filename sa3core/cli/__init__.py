"""The ``sa3`` command. Each subcommand lives in its own module with a ``register(subparsers)``.

Errors a person caused (:class:`Sa3Error`) print one line and exit with status 2;
Ctrl-C exits with 130 and leaves no half-written output (outputs are written atomically).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import Sa3Error

# Subcommand modules, in the order `sa3 --help` lists them.
COMMANDS = ["generate", "codec", "serve", "render", "export", "train", "data", "eval", "bench", "info"]
# The module that registers each command (a module may register several).
MODULE_OF = {
    **{name: name for name in COMMANDS if name != "codec"},
    "inpaint": "generate",
    "continue": "generate",
    "encode": "codec",
    "decode": "codec",
    "keys": "serve",
}


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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


if __name__ == "__main__":
    sys.exit(main())
