"""Weights and config travel together: one safetensors file per model part.

The file's metadata holds ``sa3_format`` (refused if unknown), the part's ``kind`` (a name
in :data:`MODELS`) and its config as JSON. Nothing is ever unpickled, so a file a user
hands in can carry no code.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import config as cfg
from .errors import Sa3Error
from .files import publish
from .registry import Registry

FORMAT_VERSION = 1


class ModelKind(NamedTuple):
    config_class: type
    module_class: type


MODELS: Registry[ModelKind] = Registry("model kind")

# Modules whose import registers the built-in kinds; imported on first load so that a file
# can be loaded without the caller knowing which model class it holds.
BUILTIN_KIND_MODULES = ("sa3core.models.same", "sa3core.models.dit")


def _register_builtin_kinds() -> None:
    import importlib

    for name in BUILTIN_KIND_MODULES:
        importlib.import_module(name)


# The torch.nn.init functions a module's constructor may call to draw its starting weights.
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)
_init_lock = threading.Lock()


@contextlib.contextmanager
def _weights_left_undrawn():
    """Build modules without drawing random starting weights (the torch.nn.init functions
    return their tensor untouched): for a model whose every weight is loaded right after.

    Drawing the DiT's and the autoencoder's weights only to overwrite them took 0.2 s of a cold
    ``sa3 generate``. :func:`load_model` refuses a file that misses any weight, so nothing
    undrawn survives; buffers computed in constructors (DFT bases, filters) are unaffected.
    The functions are swapped process-wide, so loads take a lock."""
    from torch.nn import init

    with _init_lock:
        saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in _INIT_FUNCTIONS:
                setattr(init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, function in saved.items():
                setattr(init, name, function)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(path: str | os.PathLike, kind: str, model: torch.nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (which has a ``config`` dataclass attribute) as safetensors + JSON metadata."""
    path = Path(path)
    _register_builtin_kinds()
    MODELS.get(kind)
    metadata = {
        "sa3_format": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(cfg.to_dict(model.config)),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise Sa3Error(f"model file {str(path)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise Sa3Error(f"{str(path)!r} is not a safetensors model file: {err}") from None
    version = meta.get("sa3_format")
    if version != str(FORMAT_VERSION):
        raise Sa3Error(
            f"{str(path)!r} has sa3 format {version!r}; this sa3 reads format {FORMAT_VERSION} (re-export it with this version)"
        )
    return {
        "kind": meta.get("kind", ""),
        "config": json.loads(meta.get("config", "{}")),
        "extra": json.loads(meta.get("extra", "{}")),
    }


def load_model(path: str | os.PathLike, expect_kind: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a model part; returns (module in eval mode, extra metadata)."""
    meta = read_metadata(path)
    if expect_kind is not None and meta["kind"] != expect_kind:
        raise Sa3Error(f"{str(path)!r} holds a {meta['kind']!r} model, not a {expect_kind!r}")
    _register_builtin_kinds()
    kind = MODELS.get(meta["kind"])
    config = cfg.from_dict(kind.config_class, meta["config"], where=f"{path} config")
    with _weights_left_undrawn():
        model = kind.module_class(config)
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise Sa3Error(f"{str(path)!r} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), meta["extra"]
