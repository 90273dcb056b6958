"""Record the official constructors' parameters and literal defaults as data.

    python scripts/released/official_defaults.py --official DIR [--out tests/fixtures/released/official_defaults.json]

DIR is a checkout of the official Stable Audio 3 code (Stability-AI/stable-audio-3); its files are
read with ``ast`` (nothing is imported or run). The JSON maps ``file:Class`` to ``{parameter:
default}`` (null where a parameter has no default or its default is not a literal), for the
constructors that sa3core/released's config dataclasses stand for; tests/released/test_config.py
and test_same.py check every dataclass field against it. make_fixtures.py writes it too.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

CONSTRUCTORS = [
    ("dit.py", "DiffusionTransformer"),
    ("transformer.py", "ContinuousTransformer"),
    ("transformer.py", "TransformerBlock"),
    ("transformer.py", "Attention"),
    ("transformer.py", "FeedForward"),
    ("transformer.py", "RMSNorm"),
    ("conditioners.py", "NumberConditioner"),
    ("conditioners.py", "T5GemmaConditioner"),
    ("autoencoders.py", "TransformerResamplingBlock"),
    ("autoencoders.py", "SAMEEncoder"),
    ("autoencoders.py", "SAMEDecoder"),
    ("pretransforms.py", "PatchedPretransform"),
    ("bottleneck.py", "SoftNormBottleneck"),
]


def constructor_defaults(source: str, cls: str) -> dict:
    """The constructor's parameters -> literal defaults (None when it has none)."""
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args.args[1:] + init.args.kwonlyargs
    defaults = [None] * (len(init.args.args) - 1 - len(init.args.defaults)) + init.args.defaults
    defaults += init.args.kw_defaults
    return {a.arg: (ast.literal_eval(d) if d is not None else None) for a, d in zip(args, defaults)}


def write_defaults(official: Path, out: Path) -> None:
    models = Path(official) / "stable_audio_3" / "models"
    table = {f"{file}:{cls}": constructor_defaults((models / file).read_text(), cls) for file, cls in CONSTRUCTORS}
    Path(out).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="checkout of the official code")
    parser.add_argument("--out", default="tests/fixtures/released/official_defaults.json")
    args = parser.parse_args()
    write_defaults(Path(args.official), Path(args.out))
    print(f"wrote {args.out} ({len(CONSTRUCTORS)} constructors)")


if __name__ == "__main__":
    main()
