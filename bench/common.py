"""Helpers shared by the benchmarks: timing, peak memory of a child process, the machine, JSON.

Timing (:func:`measure`): ``warmup`` untimed calls, then ``repeats`` timed ones; the result
holds the median wall time and the median process CPU time (``time.process_time``: user +
system time of all this process's threads). On a quiet machine with N busy threads CPU time
is about N x wall time; on shared cores wall time also counts the time spent waiting for other
jobs, CPU time mostly does not, so ratios of CPU times stay meaningful when wall times do not.

Peak memory: a fresh ``python -m ...`` subprocess (:func:`run_child`) that reports its own
``VmHWM`` (:func:`peak_rss_mib`, the high-water mark of its resident set from
/proc/self/status). The child's ``ru_maxrss`` from ``os.wait4`` comes back too, but only as an
upper bound: Linux carries the high-water mark across fork and exec, so it is at least the
parent's peak at the time it started the child.

Every JSON file a bench writes (:func:`write_json`) holds ``machine`` (CPU model, cores,
threads, torch version, bf16 support, load average at the start and the end), the command
line, and the bench's own ``results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sa3core.cpus import physical_cores, usable_cpus  # noqa: F401 (the benches' names for them)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() where that is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_supported() -> bool:
    """True where the CPU has native bf16 matmuls (AVX-512 bf16 or AMX), so bf16 autocast pays off:
    the test sa3's backends make (:func:`sa3core.backends.cpu_has_bf16`)."""
    from sa3core.backends import cpu_has_bf16

    return cpu_has_bf16()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """What a reader needs to compare numbers: CPU, cores, threads, versions, current load."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bf16_supported(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def set_threads(threads: int) -> int:
    """torch intra-op threads = ``threads`` (0: physical cores); returns the number set."""
    threads = threads or physical_cores()
    torch.set_num_threads(threads)
    return threads


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Medians (seconds) of the timed runs; ``walls``/``cpus`` keep every run."""

    wall_s: float
    cpu_s: float
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else [round(x, 5) for x in v]) for k, v in asdict(self).items()}


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Timing:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus), walls, cpus)


# ----------------------------------------------------------------------------- child processes
def status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmHWM``, ``VmRSS``) in MiB; None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB: VmHWM (ru_maxrss where /proc is missing)."""
    peak = status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, args: list[str], timeout: float | None = None) -> tuple[float, str]:
    """Run ``python -m module *args`` from the repo root; returns (ru_maxrss MiB, stdout).
    The first is an upper bound of the child's peak (see the module docstring); for the
    child's own peak, have it print :func:`peak_rss_mib`.

    Raises RuntimeError with the child's stderr tail when it fails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=out, stderr=err, text=True)
        started = time.monotonic()
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({process.returncode}): {stderr[-2000:]}")
    return usage.ru_maxrss / 1024, stdout


# ----------------------------------------------------------------------------- CLI and output
def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every bench takes: --quick, --out, --threads, --repeats."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=(doc or name).splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run (seconds, not minutes)")
    p.add_argument("--out", default=f"runs/bench/{name}.json", help="JSON output (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: physical cores)")
    p.add_argument("--repeats", type=int, default=0, help="timed runs per point (default: 3, --quick 1)")
    return p


def repeats(args) -> int:
    return args.repeats or (1 if args.quick else 3)


def write_json(path: str | Path, name: str, results, machine_at_start: dict, **extra) -> Path:
    """Write ``{bench, command, machine, results, ...}``; the machine's load is sampled again at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "bench": name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {**machine_at_start, "load_average_end": load_average()},
        **extra,
        "results": results,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain text table: ``columns`` are (key, header, format spec); missing values print '-'."""
    widths = []
    cells = []
    for key, header, spec in columns:
        column = [format(r[key], spec) if r.get(key) is not None else "-" for r in rows]
        widths.append(max([len(header)] + [len(c) for c in column]))
        cells.append(column)
    lines = ["  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True))]
    for i in range(len(rows)):
        lines.append("  ".join(c[i].rjust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def describe(info: dict) -> str:
    """One line about the machine for the top of a printed table."""
    return (
        f"{info['cpu_model']}, {info['physical_cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), avx512_bf16={info['avx512_bf16']}, load {info['load_average']}"
    )


def cpu_class() -> str:
    """What decides bf16 speed on this CPU: ``amx`` (Intel AMX tiles: bf16 matmuls at 5-7x fp32),
    ``avx512-bf16`` (AVX-512 bf16 dot products, about 3x fp32; AMD Zen 4 among others) or
    ``other`` (no native bf16). The CPU classes of this project's machines give different ratios."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "amx"
    return "avx512-bf16" if "avx512_bf16" in flags else "other"


def write_doc_section(name: str, text: str, per_cpu_class: bool = False) -> Path:
    """Replace what stands between ``<!-- name:start -->`` and ``<!-- name:end -->`` in
    docs/benchmarks.md with ``text`` (``--write-docs`` of the benches that keep a table there).
    ``per_cpu_class``: the section is ``name.<cpu_class()>``, one table per CPU class."""
    if per_cpu_class:
        name = f"{name}.{cpu_class()}"
    doc = REPO / "docs" / "benchmarks.md"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = doc.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{doc} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    return doc


def publish(name: str, text: str, json_path: Path, write_docs: bool, per_cpu_class: bool = False) -> None:
    """A bench's last words: its markdown table on stdout, the table into docs/benchmarks.md with
    ``--write-docs`` (:func:`write_doc_section`), and where its JSON went on stderr."""
    print(text)
    if write_docs:
        write_doc_section(name, text, per_cpu_class)
    print(f"wrote {json_path}", file=sys.stderr)


def start_serve(*options: str) -> tuple[subprocess.Popen, str]:
    """A real ``sa3 serve`` on a free loopback port with ``options``, once it says it listens:
    (the process, its ZeroMQ endpoint). Its stderr is drained in a thread from then on."""
    command = [sys.executable, "-m", "sa3", "serve", "--bind", "tcp://127.0.0.1:*", *options]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if match := re.search(r"listening on (\S+)", line):
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, match.group(1)
    raise SystemExit(f"sa3 serve did not start (exit code {process.wait()})")


class Int8CacheForChildren:
    """An int8 weight cache folder of the bench's own (:mod:`sa3core.modules.int8_cache`) for the
    sa3 processes it starts (``SA3_CACHE_DIR`` in this process's environment, which they inherit),
    filled first where the default precision is int8 and ``fill``: ``model``'s layers packed in a
    process of their own, as a user's first command with a model does once. ``fill_s`` is that
    process's wall time (load included), None where nothing was filled. ``cleanup()`` removes it."""

    def __init__(self, model: Path, threads: int, fill: bool = True) -> None:
        from sa3core.released.backend import default_int8

        self._folder = tempfile.TemporaryDirectory(prefix="sa3-bench-cache-")
        os.environ["SA3_CACHE_DIR"] = self._folder.name
        os.environ.pop("SA3_INT8_CACHE", None)
        self.fill_s: float | None = None
        released = (Path(model) / "model_config.json").is_file()
        if fill and released and default_int8(torch.device("cpu"), None):
            code = (
                "import sys, torch; torch.set_num_threads(int(sys.argv[2])); "
                "from sa3core.released.backend import load; load(sys.argv[1]).prepare()"
            )
            started = time.time()
            result = subprocess.run([sys.executable, "-c", code, str(model), str(threads)], cwd=REPO,
                                    env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)  # fmt: skip
            if result.returncode != 0:
                raise SystemExit(f"filling the int8 weight cache failed:\n{result.stderr[-3000:]}")
            self.fill_s = round(time.time() - started, 1)
            print(f"int8 weight cache filled in {self.fill_s} s (load and pack, a process of its own)", flush=True)

    def cleanup(self) -> None:
        self._folder.cleanup()
