"""``sa3 train STAGE --config FILE --out DIR [--resume]``."""

from __future__ import annotations

import importlib

from sa3core.errors import Sa3Error


def register(subparsers) -> None:
    from training import STAGE_MODULES

    parser = subparsers.add_parser("train", help="train a model stage (autoencoder, flow, distill, adversarial)")
    parser.add_argument("stage", choices=sorted(STAGE_MODULES), help="which stage to train")
    parser.add_argument("--config", help="YAML file of overrides for the stage's config")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, final weights")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.set_defaults(func=run)


def run(args) -> int:
    from training import STAGE_MODULES, TRAINERS

    try:
        importlib.import_module(STAGE_MODULES[args.stage])
    except ModuleNotFoundError as err:
        if err.name == STAGE_MODULES[args.stage]:
            raise Sa3Error(f"training stage {args.stage!r} is not available in this build") from None
        raise
    TRAINERS.get(args.stage)(args.config, args.out, args.resume)
    return 0
