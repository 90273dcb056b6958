"""Two floors: the model library (``sa3core``) imports nothing from the applications above it
(``sa3`` = cli, render, eval; ``bridge``, ``export``, ``training``, ``bench``), which import
downward only. Checked statically (every import statement and ``import_module`` string in the
library) and at run time (importing every library module loads no application module)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "sa3core"
APPLICATIONS = {"sa3", "bridge", "export", "training", "bench", "scripts", "tests"}


def upward_imports(path: Path) -> list[str]:
    """``module:line name`` for every import in ``path`` that reaches an application."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.count(".") == 1:
            head = node.value.split(".")[0]  # a module path kept as data, e.g. a lazy registry entry
            if head in APPLICATIONS - {"tests", "scripts"} and node.value.replace(".", "").replace("_", "").isalnum():
                names = [node.value]
        for name in names:
            entry = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name.split(".")[0] in APPLICATIONS and entry not in found:
                found.append(entry)
    return sorted(found, key=lambda entry: int(entry.split(":")[1].split(" ")[0]))


def test_the_checker_finds_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nfrom . import timebase\nfrom bridge.client import x\n"
        "def f():\n    import export.graphs\n    importlib.import_module('sa3.cli')\nLAZY = {'onnx': 'export.onnx_backend'}\n"
    )
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = upward_imports(bad)
    finally:
        REPO = saved
    assert [f.split(" ")[1] for f in found] == ["bridge.client", "export.graphs", "sa3.cli", "export.onnx_backend"]


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_the_library_imports_no_application(path):
    assert upward_imports(path) == []


def test_importing_the_whole_library_loads_no_application():
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in LIBRARY.rglob("*.py")
    )
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from sa3core.backends import BACKENDS\n"
        "BACKENDS.get('onnx')\n"  # the lazily registered backend lives in the library too
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(APPLICATIONS)!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
