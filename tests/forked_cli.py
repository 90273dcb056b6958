"""The real ``sa3`` command in a fresh process forked from a warm one: what ``run_sa3`` runs.

``python -m sa3`` spends 3-4 s of a 2-core machine importing torch and sa3 before it parses its
arguments, and the suite runs the command about a hundred times. A zygote process (one per test
process, started at the first call) imports those modules once and then forks one child per
command. The child sets its own argv, working directory, environment and standard streams and runs
the console command's own entry point (:func:`sa3.cli.entry`, the fast exit included). It is a
separate process with its own exit status, as a subprocess is: a crash, an ``os._exit`` or a
signal ends it alone, and the zygote is never changed by it. What the child does not repeat is the
interpreter's start and those imports; ``tests/cli/test_entry_points.py`` runs ``python -m sa3``
and the installed ``sa3`` script the plain way.

The zygote has only imported modules (no torch parallel region has run), so each child starts
OpenMP and torch's thread pools fresh.

Protocol (one command at a time, JSON lines over the zygote's stdin and stdout): the test process
sends ``{"argv", "cwd", "env", "stdout", "stderr"}``; the zygote answers ``{"pid"}`` once the child
runs and ``{"status"}`` (:func:`os.waitstatus_to_exitcode`) when it ended. Past its timeout the
test process kills the child by its pid and still reads the status.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# imported once in the zygote: the start-up cost its children skip. Nothing here may read the
# environment at import: a child's environment is its own (huggingface_hub, which transformers
# imports, reads HF_HOME and HF_HUB_CACHE at import; serve() refuses to start with it loaded)
PRELOAD = ["numpy", "torch", "soundfile", "sa3.cli", "sa3core.pipeline", "sa3core.released.backend"]
READS_ENVIRONMENT_AT_IMPORT = ["huggingface_hub", "transformers"]


def _child(request: dict) -> None:
    """In the forked child: the command's streams, directory, environment and argv, then ``sa3``."""
    import io

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for path, fd in ((request["stdout"], 1), (request["stderr"], 2)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    sys.argv = [str(REPO / "sa3" / "__main__.py"), *request["argv"]]
    from sa3.cli import entry

    try:
        entry()
        code = 0
    except SystemExit as stop:  # the exit status as the interpreter maps it
        code = stop.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:  # an uncaught error: its traceback and status 1, as at the top level
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def serve() -> None:
    """The zygote's loop (``python -m tests.forked_cli``): import, then fork one child per request."""
    for name in PRELOAD:
        __import__(name)
    loaded = [name for name in READS_ENVIRONMENT_AT_IMPORT if name in sys.modules]
    if loaded:
        raise SystemExit(f"the zygote imported {loaded}: its children would not see their own environment")
    requests, answers = sys.stdin, sys.stdout
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)
            finally:
                os._exit(1)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


class Zygote:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forked_cli"], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.lock = threading.Lock()
        assert self._read(None) == {"ready": True}
        atexit.register(self.close)

    def _read(self, timeout: float | None) -> dict | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sa3 zygote ended (status {self.process.wait()})")
        return json.loads(line)

    def run(self, request: dict, timeout: float) -> int | None:
        """The child's exit status; None where it ran past ``timeout`` and was killed."""
        with self.lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self._read(None)["pid"]
            answer = self._read(timeout)
            if answer is None:
                os.kill(pid, signal.SIGKILL)
                self._read(None)
                return None
            return answer["status"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


_zygote: Zygote | None = None


def run(
    args: list, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``sa3 *args`` in a child of the warm zygote: what ``subprocess.run(..., capture_output=True,
    text=True)`` returns, and ``subprocess.TimeoutExpired`` past ``timeout`` (the child killed)."""
    global _zygote
    if _zygote is None or _zygote.process.poll() is not None:
        _zygote = Zygote()
    argv = [str(a) for a in args]
    command = [sys.executable, "-m", "sa3", *argv]
    with tempfile.TemporaryDirectory(prefix="sa3-cli-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        out.touch()
        err.touch()
        request = {
            "argv": argv, "cwd": str(cwd or os.getcwd()),
            "env": dict(os.environ if env is None else env), "stdout": str(out), "stderr": str(err),
        }  # fmt: skip
        status = _zygote.run(request, timeout)
        if status is None:
            raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess(command, status, out.read_text(), err.read_text())


if __name__ == "__main__":
    serve()
