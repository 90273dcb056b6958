"""Keep freed memory in the process between sampler steps (glibc's malloc only).

glibc serves every allocation above its mmap threshold (128 KiB at start, raised dynamically
as blocks are freed) with a fresh ``mmap`` and returns it with ``munmap`` on free, and trims the
heap's top whenever more than its trim threshold is free. A DiT step or a SAME decode window
allocates activations of several MB each, so every step faulted its pages in again. On the
released small model (random weights of the real shapes, one torch thread, this project's
2-core machine at load 2) the first 30 s generate of a process took 9.93 s without and 8.79 s
with the thresholds below, its SAME-S decode 3.06 s and 2.67 s.

:func:`keep_freed_memory` sets the mmap threshold to its maximum (32 MiB on 64-bit: larger
blocks still go back to the system at once) and the trim threshold to 1 GiB, so the heap keeps
what a step freed for the next one. The peak resident memory does not grow (the same blocks
are reused); memory freed after the peak is returned only when more than 1 GiB is free at the
heap's top. The ``sa3`` command calls it at start; a program embedding :mod:`sa3core` may call
it or set the two environment variables. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; True where they were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
