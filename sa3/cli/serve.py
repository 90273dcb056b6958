"""``sa3 serve`` (the inference daemon) and ``sa3 keys generate`` (CurveZMQ keys for remote use).

The bind addresses, keys and token are checked before the model loads, so a refused remote bind
costs no time. The ZeroMQ protocol is docs/protocol.md; ``--http`` adds the HTTP contract of
existing SA3 DAW front ends (docs/http.md) over the same job engine.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path

from sa3core.config import from_attributes
from sa3core.errors import Sa3Error

from . import threads

RANDOM_MODEL = re.compile(r"random:(\w+)(?::(\w+))?")  # for tests and benchmarks: random:PRESET[:TEXT_ENCODER]


def register(subparsers) -> None:
    from bridge.http import DEFAULT_ADDRESS
    from bridge.protocol import DEFAULT_ENDPOINT

    serve = subparsers.add_parser("serve", help="run the inference daemon for the plugin, scripts and --daemon")
    serve.add_argument(
        "--bind",
        default=DEFAULT_ENDPOINT,
        help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT}; PORT * picks a free one; none: no ZeroMQ, with --http)",
    )
    serve.add_argument(
        "--http",
        nargs="?",
        const=DEFAULT_ADDRESS,
        metavar="[HOST:]PORT",
        help=f"also serve the HTTP contract of gary4juce and the Ableton extension (docs/http.md); "
        f"alone: {DEFAULT_ADDRESS} (and ::1); a host other machines reach needs --http-token-file",
    )
    serve.add_argument(
        "--http-token-file",
        metavar="FILE",
        help="a file whose first line is a secret token (16+ characters) that HTTP clients on other machines "
        "must send as 'Authorization: Bearer TOKEN'; required to serve HTTP off loopback",
    )
    serve.add_argument(
        "--lora-dir",
        metavar="DIR",
        help="LoRA folder jobs name adapters from, on both front ends (*.safetensors with lora_config metadata); "
        "default: $SA3_LORA_DIR, else $XDG_DATA_HOME/sa3/loras or ~/.local/share/sa3/loras when it exists",
    )
    serve.add_argument(
        "--model",
        action="append",
        help="model folder or released model name, e.g. small-music (default: the shipped model); "
        "random:tiny[:hash] is a random model for tests. Give it again to serve several: the first is "
        "the default, a job names another by its name (a folder's name for a folder); all load at start",
    )
    serve.add_argument(
        "--backend", default="torch", choices=["torch", "onnx"], help="inference backend (default torch)"
    )
    serve.add_argument("--max-seconds", type=float, help="longest audio one job may involve (default: the model's)")
    serve.add_argument("--queue", type=int, default=16, help="jobs that may wait behind the running one (default 16)")
    serve.add_argument(
        "--result-ttl", type=float, default=600.0, help="seconds finished results stay fetchable (default 600)"
    )
    serve.add_argument(
        "--on-shutdown",
        default="finish",
        choices=["finish", "cancel"],
        help="what SIGINT/SIGTERM do to the running job (default finish; a second signal cancels)",
    )
    serve.add_argument("--curve-keys", metavar="DIR", help="CurveZMQ key folder; required to bind off loopback")
    serve.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    serve.add_argument(
        "--fp32",
        action="store_true",
        help="float32 matmuls for every served torch model, even where bf16 is the default (the official numerics)",
    )
    serve.add_argument("--verbose", action="store_true", help="log every job")
    serve.set_defaults(func=run_serve)

    keys = subparsers.add_parser("keys", help="CurveZMQ keys for using `sa3 serve` from other machines")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser("generate", help="create server keys (once) and a client key pair in DIR")
    gen.add_argument("dir", help="key folder (created 0700; files 0600)")
    gen.add_argument("--client", default="client", help="name of the client key pair (default client)")
    gen.set_defaults(func=run_keys_generate)


def _load_pipeline(model: str | None, backend: str, fp32: bool = False):
    from sa3core.hub import resolve_model

    match = RANDOM_MODEL.fullmatch(model or "")
    folder = None if match else resolve_model(model)  # a released model's name: its folder in the HF cache
    from sa3core.pipeline import Pipeline

    options = {"bf16": False} if fp32 else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if match:
            text_encoder = match.group(2) or "hash"
            pipeline = Pipeline.random(match.group(1), seed=0, text_encoder=text_encoder, backend=backend, **options)
        else:
            pipeline = Pipeline.load(folder, backend=backend, **options)
        prepare = getattr(pipeline.backend, "prepare", None)
        if prepare is not None:  # the int8 layers, packed before the daemon listens rather than in its first job
            prepare()
    for warning in caught:
        print(f"sa3 serve: warning: {warning.message}", file=sys.stderr)
    return pipeline


def model_name(model: str | None, pipeline) -> str:
    """What jobs call a served model: a folder's name for a folder, else the name as typed
    (``small-music``, ``random:tiny``); the model's own name when no --model was given."""
    if model is None:
        return pipeline.settings.name
    path = Path(model).expanduser()
    return path.resolve().name if path.exists() else model


def load_models(models: list[str] | None, backend: str, fp32: bool = False) -> dict:
    """Every --model, loaded now, in order (the first is the default): name -> Pipeline.

    All load at start, not on a job's first use: a name or folder that does not work fails here,
    with one line, before the daemon says it listens, not in the middle of a session; capabilities
    can tell each model's family and defaults; and no job waits behind another model's loading
    (seconds to minutes). Memory: the models asked for, each once; a model not asked for never loads."""
    given = list(models or [None])
    names: dict[str, str | None] = {}
    for model in given:  # every one checked before anything loads: a typo costs no time
        if model is not None and not RANDOM_MODEL.fullmatch(model):
            from sa3core.hub import resolve_model

            resolve_model(model)
        name = "" if model is None else model_name(model, None)
        if name in names:
            raise Sa3Error(
                f"--model {model!r} is served as {name!r}, which another --model already is; give each model once "
                "(two folders of the same name: rename one)"
            )
        names[name] = model
    pipelines = {}
    for model in names.values():
        pipeline = _load_pipeline(model, backend, fp32)
        pipelines[model_name(model, pipeline)] = pipeline
    return pipelines


def run_serve(args) -> int:
    from bridge.daemon import NO_BIND, Daemon, DaemonConfig
    from bridge.http.server import HttpConfig, HttpServer
    from sa3core.lora import default_lora_dir

    config = from_attributes(DaemonConfig, args)
    if config.lora_dir is None:
        default = default_lora_dir()
        config.lora_dir = str(default) if default is not None else None
    config.check()  # before the model loads: a refused bind or a missing folder costs no time
    http_config = None
    if args.http is not None:
        http_config = from_attributes(HttpConfig, args)
        http_config.check()
    elif args.http_token_file:
        raise Sa3Error("--http-token-file belongs to the HTTP side; add --http [HOST:]PORT")
    if args.fp32 and args.backend != "torch":
        raise Sa3Error(f"--fp32 sets the torch backend's matmuls; the {args.backend} backend has its own precision")
    if config.bind == NO_BIND and http_config is None:
        raise Sa3Error("--bind none leaves nothing to serve; add --http [HOST:]PORT or bind a ZeroMQ endpoint")
    threads.check(args.threads)  # one line below 1, a warning above the CPUs: as the other commands
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="sa3 serve: %(message)s", stream=sys.stderr
    )
    from bridge.engine import ComputeThread

    compute = ComputeThread()  # loads the models and runs every job: one OpenMP team (see there)
    if args.threads is not None:
        import torch

        compute.call(torch.set_num_threads, args.threads)  # OpenMP's thread count is per thread
    models = compute.call(load_models, args.model, args.backend, args.fp32)
    engine = config.engine(models, compute)
    http = HttpServer(engine, http_config) if http_config is not None else None
    return Daemon(engine, config, http).serve()


def run_keys_generate(args) -> int:
    from bridge.keys import generate

    for role, path in generate(args.dir, args.client).items():
        print(f"wrote {role} keys: {path}")
    return 0
