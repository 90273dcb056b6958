"""The CPUs this process may use: what thread counts default to (torch-free, cheap to import)."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical cores this process may use (hyper-thread siblings counted once), capped by the
    affinity mask; the usable CPUs where /proc/cpuinfo does not say."""
    allowed = usable_cpus()
    try:
        cores, current = set(), {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("physical id", "core id"):
                current[key] = value.strip()
            elif not line.strip() and current:
                cores.add((current.get("physical id"), current.get("core id")))
                current = {}
        if current:
            cores.add((current.get("physical id"), current.get("core id")))
        physical = len(cores) if cores else allowed
    except OSError:
        physical = allowed
    return max(1, min(allowed, physical))
