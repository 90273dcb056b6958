"""``sa3 info [--model PATH|NAME]``: what sa3 runs on and which model it would use."""

from __future__ import annotations

import json
import os
import platform
import warnings


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, threads and the model sa3 would use")
    parser.add_argument("--model", help="model folder or released model name to describe (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from sa3core import __version__, timebase
    from sa3core.backends import BACKENDS
    from sa3core.hub import resolve_model
    from sa3core.pipeline import DEFAULT_MODEL_DIR, Pipeline

    folder = resolve_model(args.model)  # a folder, or a released model's name resolved from the Hugging Face cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline = Pipeline.load(folder)
    backend = pipeline.backend
    params = {
        "autoencoder": sum(p.numel() for p in backend.autoencoder.parameters()),
        "dit": sum(p.numel() for p in backend.dit.parameters()),
    }
    info = {
        "sa3": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": getattr(backend, "precision", "float32"),
        "int8_cache": _int8_cache(),
        "openmp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "unset (the OpenMP runtime's default)",
        "backends": BACKENDS.names(),
        "model": str(folder or DEFAULT_MODEL_DIR),
        "model_name": pipeline.settings.name,
        "text_encoder": pipeline.settings.text_encoder,
        "sampler": f"{pipeline.settings.sampler}, {pipeline.settings.steps} steps, cfg {pipeline.settings.cfg:g}",
        "parameters": params,
        "max_seconds": pipeline.settings.max_seconds,
        "sample_rate": timebase.SAMPLE_RATE,
        "latent_frames_per_second": round(timebase.frames_per_second(), 4),
        "warnings": [str(w.message) for w in caught],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "parameters":
            value = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(map(str, value)) or "-"
        print(f"{key:>26}: {value}")
    return 0


def _int8_cache() -> str:
    """Where the int8 weight cache is and what it holds (sa3core/modules/int8_cache.py)."""
    from sa3core.modules.int8_cache import Int8Cache

    cache = Int8Cache.default()
    if cache is None:
        return "off (SA3_INT8_CACHE)"
    return f"{cache.folder} ({cache.size_bytes() / 1e6:.0f} MB of {cache.limit_bytes / 2**30:g} GiB)"
