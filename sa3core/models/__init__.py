"""Assembled models. Importing this package registers every model kind in sa3core.checkpoint.MODELS."""

import importlib

from . import same  # noqa: F401  (registers "same")

for _name in ("dit",):  # built by another part of the project; absent in partial builds
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{_name}":
            raise
