"""sa3core.allocator: the sa3 command keeps freed activation memory in the heap, so a sampler
step does not fault its pages in again (glibc; the project's machines are Linux)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Three 8 MB blocks allocated and freed, over and over, like a step's activations.
PROBE = """
import resource, sys
from sa3core.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory() and keep_freed_memory()  # set once, the second call a no-op
import numpy as np
def step():
    a = np.ones(1_000_000); b = np.ones(1_000_000); c = np.ones(1_000_000)
    del a, b, c
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return int(result.stdout)


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain, kept = page_faults("plain"), page_faults("kept")
    assert plain > 20 * 1000  # glibc's defaults: the blocks go back to the system and fault in again
    assert kept < plain / 20, (kept, plain)


def test_the_sa3_command_sets_it_at_start():
    probe = (
        "import contextlib, io, sa3.cli, sa3core.allocator as allocator\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    sa3.cli.main(['--help'])\n"
        "print(allocator._done)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("True")
