"""A plain CMake configure of the repository works with whatever is installed: each target whose
dependencies are missing is skipped, and the configure output names it and why (issue 26, item 11).

Configure only (no build), in a fresh build folder, about a second each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

ALL_TARGETS = ("sa3_core", "sa3shim", "sa3_alloc_check", "sa3_plugin")


def configure(build: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`cmake -S <repo> -B build ARGS`; the targets the generated build system has (none on failure),
    read from CMake's file API (generator independent)."""
    query = build / ".cmake" / "api" / "v1" / "query" / "codemodel-v2"
    query.parent.mkdir(parents=True)
    query.touch()
    result = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), *args], capture_output=True, text=True, timeout=120
    )
    reply = build / ".cmake" / "api" / "v1" / "reply"
    if result.returncode != 0 or not reply.is_dir():
        return result, set()
    codemodel = json.loads(next(reply.glob("codemodel-v2-*.json")).read_text())
    names = {t["name"] for configuration in codemodel["configurations"] for t in configuration["targets"]}
    return result, names & set(ALL_TARGETS)


pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@pytest.mark.parametrize(
    "disabled,skipped,why",
    [
        ("pybind11", {"sa3shim"}, "pybind11 not found"),
        ("JUCE", {"sa3_plugin"}, "JUCE 7 not found"),
        ("PkgConfig", set(ALL_TARGETS), "libzmq"),  # no core: nothing can build, and it says so
    ],
)
def test_configure_skips_a_target_whose_dependency_is_missing(tmp_path, disabled, skipped, why):
    # The interpreter running the tests has pybind11 (the shim's tests need it), so only the
    # disabled package decides what is skipped.
    python = f"-DPython_EXECUTABLE={sys.executable}"
    result, targets = configure(tmp_path / "build", f"-DCMAKE_DISABLE_FIND_PACKAGE_{disabled}=TRUE", python)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert targets == set(ALL_TARGETS) - skipped, output[-3000:]
    for target in skipped:
        lines = [line for line in output.splitlines() if f"sa3: skipping {target}" in line]
        assert lines, output[-3000:]
    assert why in " ".join(output.split())  # CMake wraps warnings; the reason reads as one line
    assert "sa3: building" in output
