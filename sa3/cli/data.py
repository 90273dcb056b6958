"""``sa3 data ACTION``: corpus building and pre-encoding.

Each action lives in its own module exposing ``register(subparsers)``; listed here.
"""

from __future__ import annotations

import importlib

DATA_ACTIONS = ["training.corpus.cli", "training.data_cli", "sa3.eval.realset"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="build a training corpus, pre-encode it to latents")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name in DATA_ACTIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name or name.startswith(str(err.name) + "."):
                continue
            raise
        module.register(actions)
