"""Request limits shared by every way in: the ``sa3`` commands, render sheets and the daemon.

One table and one set of messages, so a request the CLI takes the daemon takes too (and the
other way round): ``bridge/protocol.py`` announces these as its defaults and checks its fields
with :func:`check_range`. Each check raises :class:`Sa3Error` with one line that names the
value and the range; ``name`` is the field as the person wrote it (``--seed``, ``seed``,
``field 'seed'``). Lengths are limited by :data:`sa3core.timebase.MAX_SECONDS`.
"""

from __future__ import annotations

import math

from .errors import Sa3Error

MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit on the wire and in the plugin's state
MAX_VARIATIONS = 8  # takes from one request (the batch is that wide)
MAX_STEPS = 100  # sampler steps; the shipped model uses 15
MAX_CFG = 20.0  # classifier-free guidance scale (1 = off)
MAX_SCALE_LOCK_DB = 48.0  # dB per sampler step; the shipped model uses 12
MAX_REGIONS = 64  # inpaint regions in one request
MAX_PROMPT_CHARS = 2000
MAX_LORAS = 8  # LoRA adapters stacked on one request


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Sa3Error unless ``low <= value <= high`` (NaN is out of every range)."""
    if not low <= value <= high:
        raise Sa3Error(f"{name} is {_show(value)}; use {_show(low)} to {_show(high)}")


def check_seed(seed: int, name: str = "seed") -> int:
    """A seed of 0 to :data:`MAX_SEED` (no wrapping: -5 is an error, not seed 4294967291)."""
    check_range(name, seed, 0, MAX_SEED)
    return seed


def check_variations(variations: int, name: str = "variations") -> int:
    check_range(name, variations, 1, MAX_VARIATIONS)
    return variations


def check_steps(steps: int | None, name: str = "steps") -> int | None:
    """Sampler steps, 1 to :data:`MAX_STEPS`; None (the model's own) passes."""
    if steps is not None:
        check_range(name, steps, 1, MAX_STEPS)
    return steps


def check_cfg(cfg: float | None, name: str = "cfg") -> float | None:
    """Guidance scale, 0 to :data:`MAX_CFG`; None (the model's own) passes."""
    if cfg is not None:
        check_range(name, cfg, 0.0, MAX_CFG)
    return cfg


def check_scale_lock(db: float | None, name: str = "scale_lock_db") -> float | None:
    """Scale lock in dB per step, 0 (off) to :data:`MAX_SCALE_LOCK_DB`; None (the model's) passes."""
    if db is not None:
        check_range(name, db, 0.0, MAX_SCALE_LOCK_DB)
    return db


def check_prompt(prompt: str, name: str = "prompt") -> str:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise Sa3Error(f"{name} has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompt


def check_region_count(count: int, name: str = "regions") -> int:
    if not 1 <= count <= MAX_REGIONS:
        raise Sa3Error(f"{name}: {count} regions; give 1 to {MAX_REGIONS}")
    return count


def _show(value: float) -> str:
    """Whole numbers as they are (4294967295, not 4.29497e+09; 20.0 as 20), others short."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_init_noise_level(level: float, name: str = "init_noise_level") -> float:
    """Audio-to-audio's starting noise: above 0 (the input as it is) and at most 1 (only its length kept)."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level <= 1:
        raise Sa3Error(
            f"{name} is {_show(level)}; use a number above 0 and at most 1 "
            "(near 0 keeps the input, 1 keeps only its length; 0.9 is the usual)"
        )
    return float(level)
