"""``sa3 export onnx|coreml``: portable model files for onnxruntime and Core ML (docs/export.md).

Every export checks itself before it finishes (ONNX: reloads each file and compares to torch
at two lengths) and fails with one line if the numbers differ.
"""

from __future__ import annotations

import sys
import time
import warnings


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export the model to ONNX or Core ML")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target, help_text in (
        ("onnx", "ONNX files per model part + manifest, for `--backend onnx` and C++ hosts"),
        ("coreml", "Core ML .mlpackage files (ML program) for macOS / iOS"),
    ):
        sub = targets.add_parser(target, help=help_text)
        sub.add_argument("--model", help="model folder (default: the model shipped with sa3)")
        sub.add_argument("-o", "--output", required=True, help="output directory (must be empty unless --force)")
        sub.add_argument("--force", action="store_true", help="write into a non-empty output directory")
        sub.add_argument(
            "--random", metavar="PRESET", help="dev only: export a randomly initialised model of this preset"
        )
        sub.add_argument(
            "--text-encoder", default="hash", help="text encoder of a --random model (default hash; or minilm)"
        )
        if target == "onnx":
            from export.onnx_export import DEFAULT_OPSET

            sub.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
        sub.set_defaults(func=run_export)


# What each target imports beyond sa3's own requirements, and the extra that installs it.
TARGET_NEEDS = {
    "onnx": (("onnx", "onnxruntime", "onnxscript"), "export"),
    "coreml": (("coremltools",), "export-coreml"),
}


def check_target_modules(target: str) -> None:
    """A one-line Sa3Error naming the missing package and its extra, before any model loads."""
    import importlib

    from sa3core.errors import Sa3Error

    modules, extra = TARGET_NEEDS[target]
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            raise Sa3Error(
                f"sa3 export {target} needs {module!r}; install it with `pip install sa3[{extra}]` "
                f"(in a checkout: `.venv/bin/pip install -e '.[{extra}]'`)"
            ) from None


def run_export(args) -> int:
    check_target_modules(args.target)
    from export.onnx_export import load_for_export
    from sa3core.released.checkpoint import is_released_folder

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter; real problems fail the self-check
        if args.model is not None and is_released_folder(args.model):
            manifest = _export_released(args)
        else:
            manifest = _export_sa3(args, load_for_export)
    for part, spec in manifest.parts.items():
        checked = (
            f"max |diff| vs torch {spec.checked_max_abs_diff:.2g}" if spec.checked_max_abs_diff >= 0 else "spec only"
        )
        print(f"  {spec.file:<24} {part:<14} {checked}")
    print(
        f"exported {len(manifest.parts)} parts to {args.output} in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return 0


def _export_sa3(args, load_for_export):
    autoencoder, dit, settings = load_for_export(args.model, args.random, args.text_encoder)
    if args.target == "onnx":
        from export.onnx_export import export_onnx

        return export_onnx(autoencoder, dit, settings, args.output, opset=args.opset, force=args.force)
    from export.coreml_export import export_coreml

    return export_coreml(autoencoder, dit, settings, args.output, force=args.force)


def _export_released(args):
    """A released Stable Audio 3 folder (model_config.json): export/released_export.py."""
    from sa3core.errors import Sa3Error

    if args.random is not None:
        raise Sa3Error("--random makes an sa3 model; drop it to export the released folder given with --model")
    if args.target == "onnx":
        from export.released_export import export_released_onnx

        return export_released_onnx(args.model, args.output, opset=args.opset, force=args.force)
    from export.released_coreml import export_released_coreml

    return export_released_coreml(args.model, args.output, force=args.force)
