"""A real `sa3 serve` process on loopback (random tiny model, hash text encoder) for each test module."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.conftest import REPO, SA3, sigint_as_at_a_terminal

STARTUP_SECONDS = 120  # importing torch and building the model on a busy 2-core machine


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a test's `sa3 serve` runs in: no default LoRA folder of this machine's
    (SA3_LORA_DIR unset, XDG_DATA_HOME at a folder that holds none), so what it serves is what the
    test says; a test that wants a folder passes --lora-dir."""
    env = dict(os.environ if base is None else base, PYTHONWARNINGS="ignore::DeprecationWarning", PYTHONUNBUFFERED="1")
    env.pop("SA3_LORA_DIR", None)
    env["XDG_DATA_HOME"] = NO_DATA_HOME
    return env


NO_DATA_HOME = tempfile.mkdtemp(prefix="sa3-tests-data-")  # empty: no sa3/loras in it


class DaemonProcess:
    """`python -m sa3 serve ...` on a free loopback port; stderr is collected line by line."""

    def __init__(self, *args: str, bind: str = "tcp://127.0.0.1:*", model: str = "random:tiny") -> None:
        command = [sys.executable, "-m", "sa3", "serve", "--bind", bind, "--model", model, "--verbose", *args]
        env = server_env()
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.endpoint = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = re.search(r"listening on (\S+)", line)
            if match:
                self.endpoint = match.group(1)
                self._ready.set()
        self._ready.set()  # the process ended (maybe before listening)

    def wait_ready(self) -> DaemonProcess:
        self._ready.wait(STARTUP_SECONDS)
        if self.endpoint is None:
            self.stop()
            raise AssertionError("daemon did not start:\n" + "\n".join(self.lines))
        return self

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_daemon():
    """Start daemons inside a test; all are stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(*args: str, **options) -> DaemonProcess:
        daemon = DaemonProcess(*args, **options)
        started.append(daemon)
        return daemon.wait_ready()

    yield start
    for daemon in started:
        daemon.stop()


def wait_for(condition, timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def free_endpoint() -> str:
    """A loopback endpoint with a port nothing listens on now, for daemons restarted on one port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def start_sa3(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real `sa3` command in a subprocess that a test can signal (run_sa3 waits for its end)."""
    env = server_env(env)
    return subprocess.Popen(
        [*SA3, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )  # fmt: skip


def wait_running(endpoint: str, timeout: float = 60.0) -> str:
    """The id of the job the daemon at ``endpoint`` runs, once its first sampler step is done."""
    from bridge.client import Client

    found = []
    with Client(endpoint, silence=30.0) as watcher:

        def started() -> bool:
            running = watcher.status()["running"]
            if running is not None and watcher.status(running)["job"]["step"] >= 1:
                found.append(running)
            return bool(found)

        wait_for(started, timeout, every=0.05)
    return found[0]


class OldDaemon:
    """A ROUTER on loopback that answers hello as a daemon of protocol ``version`` and records the
    type of every message it gets: what a client sends to a daemon too old for a field."""

    def __init__(self, version: str) -> None:
        import zmq

        self.version = version
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from bridge import protocol as P

        while not self.stop.is_set():
            if not self.router.poll(50):
                continue
            identity, raw, *_ = self.router.recv_multipart()
            header, encoding = P.decode_header(raw)
            self.seen.append(header["type"])
            if header["type"] == "hello":
                reply = {"v": self.version, "type": "capabilities", "request_id": header.get("request_id"),
                         "default_steps": 8}  # fmt: skip
                self.router.send_multipart([identity, P.encode_header(reply, encoding)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.router.close(linger=0)
        self.context.term()
