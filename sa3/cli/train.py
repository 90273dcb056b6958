"""``sa3 train STAGE --config FILE --out DIR [--resume]``; ``sa3 train lora --base MODEL --data FOLDER --out DIR``."""

from __future__ import annotations

import importlib

from sa3core.errors import Sa3Error

# Flags of the lora stage: (flag, config key path, type, help). They override the YAML file's keys.
LORA_FLAGS = (
    ("--base", "base", str, "released base model (small-music-base, small-sfx-base, medium-base) or its folder"),
    (
        "--data",
        "data",
        str,
        "folder of audio files (captions: captions.csv / .jsonl, .txt beside a file, or file names)",
    ),
    ("--rank", "lora.rank", int, "adapter rank (default 16)"),
    ("--alpha", "lora.alpha", float, "adapter alpha; the scale is alpha / rank (default: the rank)"),
    ("--adapter-type", "lora.adapter_type", str, "lora, dora-rows (default), dora-cols, bora, or each with -xs"),
    ("--include", "lora.include", str, "adapt only layers whose name contains one of these patterns"),
    ("--exclude", "lora.exclude", str, "do not adapt layers whose name contains one of these patterns"),
    ("--lr", "loop.lr", float, "learning rate (default 1e-4)"),
    ("--steps", "loop.steps", int, "optimizer steps (default 10000)"),
    ("--batch-size", "loop.batch_size", int, "clips per step and process (default 1)"),
    ("--checkpoint-every", "loop.checkpoint_every", int, "steps between checkpoints and adapter files (default 500)"),
    ("--seed", "loop.seed", int, "seed of every random draw (default 42)"),
)
LISTS = ("--include", "--exclude")


def register(subparsers) -> None:
    from training import STAGE_MODULES

    parser = subparsers.add_parser(
        "train", help="train a model stage (autoencoder, flow, distill, adversarial) or a LoRA (lora)"
    )
    parser.add_argument("stage", choices=sorted(STAGE_MODULES), help="which stage to train")
    parser.add_argument("--config", help="YAML file of overrides for the stage's config")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, final weights")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    lora = parser.add_argument_group("lora stage (docs/lora.md); each overrides its key in --config")
    for flag, _, kind, text in LORA_FLAGS:
        extra = {"nargs": "+", "metavar": "PATTERN"} if flag in LISTS else {}
        lora.add_argument(flag, type=kind, default=None, help=text, dest=_dest(flag), **extra)
    parser.set_defaults(func=run)


def _dest(flag: str) -> str:
    return "lora_flag_" + flag.lstrip("-").replace("-", "_")


def lora_overrides(args) -> dict:
    """The lora flags given, as a nested dict of config keys (``{"loop": {"lr": 1e-3}}``)."""
    overrides: dict = {}
    for flag, path, _, _ in LORA_FLAGS:
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        *parents, key = path.split(".")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    return overrides


def run(args) -> int:
    from training import STAGE_MODULES, TRAINERS

    overrides = lora_overrides(args)
    if overrides and args.stage != "lora":
        flag = next(f for f, *_ in LORA_FLAGS if getattr(args, _dest(f), None) is not None)
        raise Sa3Error(f"{flag} is an option of `sa3 train lora`, not of the {args.stage} stage; use --config")
    try:
        importlib.import_module(STAGE_MODULES[args.stage])
    except ModuleNotFoundError as err:
        if err.name == STAGE_MODULES[args.stage]:
            raise Sa3Error(f"training stage {args.stage!r} is not available in this build") from None
        raise
    trainer = TRAINERS.get(args.stage)
    if args.stage == "lora":
        trainer(args.config, args.out, args.resume, overrides=overrides)
    else:
        trainer(args.config, args.out, args.resume)
    return 0
