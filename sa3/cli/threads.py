"""``--threads N`` of the commands that run a model in this process (generate, inpaint, continue,
transform, render).

The default is one thread per physical core (torch's choice, and the onnx backend's). Fewer
threads leave cores to what else runs, a DAW playing back among them. The same thread count gives
the same take bit for bit; another count can move its last bits (MKL splits some small matrix
products across threads differently: up to about 2e-5 on the shipped model's 1 s takes, far
below hearing; ``tests/cli/test_threads.py`` holds it to 1e-4). What the count does to speed on
this machine: ``sa3 bench threads`` (docs/benchmarks.md). Every ``sa3`` command but ``bench``
also lets OpenMP's idle threads sleep at once (:func:`wait_passively`).
"""

from __future__ import annotations

import argparse
import os
import sys

from sa3core.cpus import usable_cpus
from sa3core.errors import Sa3Error

HELP = (
    "CPU threads for the model (default: one per physical core); fewer leave cores free for a DAW "
    "playing meanwhile (another count can move the take's last bits, far below hearing)"
)


def wait_passively() -> bool:
    """Have OpenMP's idle threads sleep at once instead of spinning (``OMP_WAIT_POLICY=PASSIVE``)
    unless the environment names a policy already; True where this process now runs with it.

    A parallel region ends at a barrier where each thread waits for the slowest one. When another
    program keeps a core busy (a DAW playing back), the waiting thread spins on a core that
    program needs, so the descheduled one comes back later: on the released small shapes beside
    one busy core of two, an 8 s take took 52.9 s with libgomp's default (spin a while, then
    sleep), 34.5 s passive and 31.4 s on one thread; on idle cores passive was no slower
    (`sa3 bench threads --wait-policies --busy 1`, docs/benchmarks.md). OpenMP reads the variable
    once, when torch loads it, so this works only before torch is imported (False after)."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N", help=HELP)


def check(threads: int | None, daemon: str | None = None) -> None:
    """One line for a thread count that cannot work; a warning for more threads than CPUs."""
    if threads is None:
        return
    if daemon:
        raise Sa3Error(
            "--threads sets this process's CPU threads; a daemon's are set when it starts (`sa3 serve --threads N`)"
        )
    if threads < 1:
        raise Sa3Error(f"--threads {threads} must be 1 or more")
    cpus = usable_cpus()
    if threads > cpus:
        print(
            f"sa3: warning: --threads {threads} is more than the {cpus} CPUs this process may use; "
            "threads beyond the cores make it slower, not faster",
            file=sys.stderr,
        )


def apply(threads: int | None, backend: str) -> dict:
    """Set torch's thread count (every backend runs some torch); the backend options that carry
    it to the onnx sessions (``{"threads": N}``, or nothing for torch)."""
    if threads is None:
        return {}
    import torch

    torch.set_num_threads(threads)
    return {} if backend == "torch" else {"threads": threads}
