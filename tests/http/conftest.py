"""A real `sa3 serve --http` on loopback (the embedded default model, ZeroMQ beside it), and the
clients' ways of talking to it: JSON over HTTP/1.1, base64 WAV files, raw sockets."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from tests.bridge.conftest import server_env
from tests.conftest import REPO

STARTUP_SECONDS = 180  # importing torch and loading the default model on a busy 2-core machine


class HttpServerProcess:
    """`python -m sa3 serve --http 127.0.0.1:0 ...` with stderr collected line by line."""

    def __init__(self, *args: str, http: str = "127.0.0.1:0", bind: str = "tcp://127.0.0.1:*") -> None:
        command = [sys.executable, "-m", "sa3", "serve", "--bind", bind, "--http", http, "--verbose", *args]
        env = server_env()
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.url = self.endpoint = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if match := re.search(r"listening on (\S+)", line):
                self.endpoint = match.group(1)
            if match := re.search(r"HTTP on (http://\S+)", line):
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> HttpServerProcess:
        self._ready.wait(STARTUP_SECONDS)
        if self.url is None:
            self.stop()
            raise AssertionError("sa3 serve --http did not start:\n" + self.stderr())
        host, port = re.fullmatch(r"http://([^:]+):(\d+)", self.url).groups()
        self.host, self.port = host, int(port)
        return self

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="package")
def server():
    """One server for the package: the embedded default model, HTTP and ZeroMQ on free loopback ports."""
    process = HttpServerProcess("--queue", "24", "--result-ttl", "900").wait_ready()
    yield process
    process.stop()


class Reply:
    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def call(server, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 60) -> Reply:
    """One HTTP/1.1 request; ``body`` a dict (sent as JSON), bytes or None."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def wav_base64(audio: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> str:
    """float [channels, frames] -> base64 of a WAV file as a DAW writes it."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, rate, subtype=subtype, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pcm16_of(text: str) -> np.ndarray:
    """The 16-bit samples [frames, channels] of a base64 WAV we sent, as integers."""
    data, _ = sf.read(io.BytesIO(base64.b64decode(text)), dtype="int16", always_2d=True)
    return data


def read_wav(text: str) -> tuple[np.ndarray, int, dict]:
    """base64 WAV -> (int16 [frames, channels], rate, the fmt chunk's fields) read by hand, as a
    client that checks the bytes would."""
    raw = base64.b64decode(text, validate=True)
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert raw[12:16] == b"fmt " and int.from_bytes(raw[16:20], "little") == 16
    fmt = dict(zip(("tag", "channels", "rate", "byte_rate", "block", "bits"), struct.unpack("<HHIIHH", raw[20:36])))
    assert raw[36:40] == b"data"
    size = int.from_bytes(raw[40:44], "little")
    assert size == len(raw) - 44
    return np.frombuffer(raw[44:], "<i2").reshape(-1, fmt["channels"]), fmt["rate"], fmt


def poll_until_done(
    server, session_id: str, every: float = 0.3, timeout: float = 300, consume: bool = False
) -> tuple[dict, list[dict]]:
    """Poll as the clients do until a terminal reply; returns it and every in-progress reply."""
    seen, deadline = [], time.monotonic() + timeout
    path = f"/poll_status/{session_id}" + ("?consume=1" if consume else "")
    while time.monotonic() < deadline:
        reply = call(server, "GET", path)
        assert reply.status == 200, reply.body[:300]
        body = reply.json
        if body["status"] in ("completed", "failed"):
            return body, seen
        seen.append(body)
        time.sleep(every)
    raise AssertionError(f"session {session_id} did not finish in {timeout} s; last: {seen[-1:]}")


def raw_health_probe(host: str, port: int) -> tuple[bool, float, bytes]:
    """gary4juce's Windows probe: a raw socket, 400 ms to connect, the bytes it writes, 1000 ms to
    read; online when the answer is 2xx, framed (Content-Length or chunked), and its JSON
    ``status`` is not unhealthy, failed, down or error. Returns (online, seconds, response)."""
    started = time.monotonic()
    sock = socket.create_connection((host, port), timeout=0.4)
    try:
        request = (
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode())
        response, deadline = b"", started + 1.0
        while time.monotonic() < deadline and len(response) < 1024 * 1024:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            response += chunk
            if _probe_online(response, allow_unframed=False):
                return True, time.monotonic() - started, response
        return _probe_online(response, allow_unframed=True), time.monotonic() - started, response
    finally:
        sock.close()


def _probe_online(response: bytes, allow_unframed: bool) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    parts = head.split(b"\r\n")[0].split(b" ")
    if len(parts) < 2 or not parts[1].isdigit() or not 200 <= int(parts[1]) < 300:
        return False
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        size_text, _, rest = body.partition(b"\r\n")
        body = rest[: int(size_text, 16)]
    elif b"content-length" in headers:
        if len(body) < int(headers[b"content-length"]):
            return False
    elif not allow_unframed:
        return False
    if not body.strip():
        return False
    try:
        status = str(json.loads(body).get("status", "")).strip().lower()
    except ValueError:
        return True  # a non-empty body that is not JSON reads as online
    return status not in ("unhealthy", "failed", "down", "error")
