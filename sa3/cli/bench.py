"""``sa3 bench NAME [options]``: run one of the benchmarks in bench/ (docs/benchmarks.md).

Each name maps to a module ``bench.<module>`` whose ``main()`` parses the remaining options
(``sa3 bench NAME --help`` lists them); ``sa3 bench all`` runs the suite (bench/run_all.py).
The bench/ folder sits next to sa3core in a source checkout; it is not part of an installed
wheel, so the command says so when it is missing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sa3core.errors import Sa3Error
from sa3core.registry import Registry

BENCHES: Registry[str] = Registry("benchmark")
for _name, _module in (
    ("length_scaling", "length_scaling"),
    ("steps", "steps"),
    ("efficiency", "efficiency"),
    ("memory", "memory"),
    ("backends", "backends"),
    ("daemon", "daemon_overhead"),
    ("http_overhead", "http_overhead"),
    ("dit_speed", "dit_speed"),
    ("codec_speed", "codec_speed"),
    ("codec_search", "codec_search"),
    ("train_throughput", "train_throughput"),
    ("lora_train", "lora_train"),
    ("lora_step", "lora_step"),
    ("plugin_block", "plugin_block"),
    ("default_model", "default_model"),
    ("versus_official", "versus_official"),
    ("precision", "precision"),
    ("exact_length", "exact_length"),
    ("int8_linears", "int8_linears"),
    ("threads", "threads"),
    ("linear_kernels", "linear_kernels"),
    ("daemon_bars", "daemon_bars"),
    ("released_onnx", "released_onnx"),
    ("released_shapes", "released_shapes"),
    ("all", "run_all"),
):
    BENCHES.register(_name)(_module)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="speed, scaling and memory benchmarks (docs/benchmarks.md)")
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(BENCHES.names())}")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark (NAME --help)")
    parser.set_defaults(func=run)


def run(args) -> int:
    module_name = f"bench.{BENCHES.get(args.name)}"
    # bench/ sits next to sa3core in a source checkout; a console script's sys.path has neither
    # that folder nor the working directory, so `sa3 bench` from the repository root found nothing.
    checkout = str(Path(__file__).resolve().parents[2])
    if (Path(checkout) / "bench" / "__init__.py").exists() and checkout not in sys.path:
        sys.path.insert(0, checkout)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name in ("bench", module_name):
            raise Sa3Error(
                f"benchmark {args.name!r} needs {module_name} from an sa3 source checkout; run sa3 from the repository root"
            ) from None
        raise
    # Every bench parses sys.argv when called without arguments (some take no argv parameter).
    saved = sys.argv
    sys.argv = [f"sa3 bench {args.name}", *args.options]
    try:
        return int(module.main() or 0)
    finally:
        sys.argv = saved
