"""Run the whole benchmark suite, each bench in a fresh process: ``python -m bench.run_all``.

Order: efficiency, length_scaling, steps, memory, backends (bench/backends.py, when the export
side has it), daemon (bench/daemon_overhead.py). Each writes ``OUT_DIR/<name>.json`` and its
printed table goes to this process's output as it runs; ``OUT_DIR/all.json`` lists what ran,
the exit status, the wall time and the load average before and after each. A failing bench
is reported and the suite goes on; the exit status is 1 when any failed.

``--quick`` passes ``--quick`` (and small daemon settings) to every bench: the CI-sized suite.
``--only NAME ...`` / ``--skip NAME ...`` choose benches; options after ``--`` are not supported:
run a bench on its own (``sa3 bench NAME ...``) for anything else.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from . import common

SUITE = ["efficiency", "length_scaling", "steps", "memory", "backends", "daemon"]
MODULES = {"daemon": "daemon_overhead"}


def command(name: str, out_dir: Path, quick: bool, threads: int) -> list[str] | None:
    """The child command line for ``name``, or None when that bench is not in this checkout."""
    module = MODULES.get(name, name)
    if not (common.REPO / "bench" / f"{module}.py").exists():
        return None
    argv = [sys.executable, "-m", f"bench.{module}", "--out", str(out_dir / f"{name}.json")]
    if name == "daemon":  # daemon_overhead has its own options (it predates bench/common.py)
        if quick:
            argv += ["--lengths", "1", "--repeats", "1", "--clients", "2", "--duration", "5", "--steps", "1"]
        return argv + (["--threads", str(threads)] if threads else [])
    if quick:
        argv.append("--quick")
    return argv + (["--threads", str(threads)] if threads else [])


def main(argv: list[str] | None = None) -> int:
    p = common.parser("run_all", __doc__)
    p.set_defaults(out="runs/bench")
    p.add_argument("--only", nargs="+", choices=SUITE, help="run only these benches")
    p.add_argument("--skip", nargs="+", choices=SUITE, default=[], help="leave these out")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = common.machine()
    print(common.describe(info), flush=True)
    ran = []
    for name in args.only or SUITE:
        if name in args.skip:
            continue
        argv_child = command(name, out_dir, args.quick, args.threads)
        if argv_child is None:
            print(f"== {name}: not in this checkout, skipped", flush=True)
            ran.append({"bench": name, "status": "missing"})
            continue
        print(f"== {name}: {' '.join(argv_child[1:])}", flush=True)
        load_before, started = common.load_average(), time.perf_counter()
        status = subprocess.run(argv_child, cwd=common.REPO).returncode
        ran.append(
            {
                "bench": name,
                "status": "ok" if status == 0 else f"failed ({status})",
                "json": str(out_dir / f"{name}.json"),
                "wall_s": round(time.perf_counter() - started, 1),
                "load_before": load_before,
                "load_after": common.load_average(),
            }
        )
    print(common.table(ran, [("bench", "bench", ""), ("status", "status", ""), ("wall_s", "wall s", ".0f")]))
    written = common.write_json(out_dir / "all.json", "run_all", ran, info, quick=args.quick)
    print(f"wrote {written}")
    return 0 if all(r["status"] in ("ok", "missing") for r in ran) else 1


if __name__ == "__main__":
    raise SystemExit(main())
