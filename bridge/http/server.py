"""Where the HTTP front end listens, who may use it, and its life inside ``sa3 serve``.

Loopback only by default: ``--http PORT`` (or ``localhost:PORT``) listens on 127.0.0.1 and, where
the machine has IPv6, on ::1 (gary4juce probes 127.0.0.1 but sends jobs to ``localhost``, which
may resolve to ::1). A host reachable from other machines needs ``--http-token-file FILE``: its
token is then required as ``Authorization: Bearer TOKEN`` from every client not on this machine
(the plugins on this machine send none and need none). Behind a reverse proxy on this machine
every request looks local, so put the proxy's own authentication in front.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sa3core.errors import Sa3Error

from ..daemon import is_loopback_host
from . import DEFAULT_ADDRESS
from .app import App, HttpSession

log = logging.getLogger("sa3.serve")

MAX_BODY_BYTES = 256 * 1024**2  # 300 s of 48 kHz stereo float WAV, base64, fits
THREADS = 8  # request threads: twenty polling clients and a health probe never wait long
CHANNEL_TIMEOUT = 120  # seconds an idle connection stays open
MIN_TOKEN_CHARS = 16
ABANDON_SECONDS = 60.0  # a waiting or running job nobody has polled for this long is cancelled
LINGER_SECONDS = 10.0  # at shutdown, how long finished results wait for their clients' last poll
RECENT_SECONDS = 30.0  # results that finished this recently and are unpolled are worth waiting for


def parse_address(text: str) -> tuple[list[str], int, bool]:
    """``[HOST:]PORT`` -> (hosts to listen on, port, whether only this machine can reach them).
    ``PORT`` alone, ``localhost`` and 127.0.0.1 mean 127.0.0.1 plus ::1 where there is IPv6."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise Sa3Error(
            f"--http {text!r}: the port must be a number, like --http 8006 or --http 127.0.0.1:8006"
        ) from None
    if not 0 <= port <= 65535:
        raise Sa3Error(f"--http {text!r}: port {port} is outside 0-65535")
    if host in ("", "localhost", "127.0.0.1"):
        return ["127.0.0.1", "::1"], port, True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise Sa3Error(f"--http {text!r}: give the host as an address (127.0.0.1, 0.0.0.0, ::1, ...)") from None
    return [str(address)], port, is_loopback_host(str(address))


@dataclass
class HttpConfig:
    http: str = DEFAULT_ADDRESS  # [HOST:]PORT
    http_token_file: str | None = None  # required for a host other machines can reach

    def check(self) -> str | None:
        """Refuse bad settings before any model loads; returns the token, if any."""
        _, _, local = parse_address(self.http)
        token = read_token(self.http_token_file) if self.http_token_file else None
        if not local and token is None:
            raise Sa3Error(
                f"refusing to serve HTTP on {self.http!r} without a token: other machines can reach it; "
                "pass --http-token-file FILE (a secret of 16+ characters) or use --http 127.0.0.1:PORT"
            )
        return token


def read_token(path: str) -> str:
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise Sa3Error(f"--http-token-file {path!r} cannot be read ({type(err).__name__})") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise Sa3Error(
            f"--http-token-file {path!r}: its first line must be a token of {MIN_TOKEN_CHARS}+ characters without spaces "
            '(make one with: python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return token


class HttpServer:
    """The HTTP front end over ``engine``: :meth:`start` binds and serves on threads of its own,
    :meth:`close` stops; the daemon calls :meth:`housekeeping` every second."""

    def __init__(self, engine, config: HttpConfig) -> None:
        self.engine = engine
        self.config = config
        self.token = config.check()
        self.app = App(engine, self.token)
        self.listening: list[tuple[str, int]] = []
        self._server = None
        self._thread: threading.Thread | None = None
        self._map: dict = {}

    def _bind(self) -> list[socket.socket]:
        hosts, port, _ = parse_address(self.config.http)
        sockets: list[socket.socket] = []
        for index, host in enumerate(hosts):
            optional = index > 0  # ::1 beside 127.0.0.1: only where the machine has IPv6
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                if optional:
                    continue
                raise
            try:
                if os.name != "nt":  # elsewhere SO_REUSEADDR would let a second server take the port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                sock.listen(128)
            except OSError as err:
                sock.close()
                if optional:
                    continue
                for other in sockets:
                    other.close()
                raise Sa3Error(
                    f"cannot serve HTTP on {host}:{port}: {err.strerror or err}; is another SA3 backend "
                    "there? stop it or pick another --http PORT"
                ) from None
            port = sock.getsockname()[1]  # port 0 picked one: the others take the same
            sockets.append(sock)
        return sockets

    def start(self) -> None:
        import waitress

        sockets = self._bind()
        self.listening = [sock.getsockname()[:2] for sock in sockets]
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" under load is no news
        self._server = waitress.create_server(
            self.app,
            map=self._map,
            sockets=sockets,
            threads=THREADS,
            max_request_body_size=MAX_BODY_BYTES,
            channel_timeout=CHANNEL_TIMEOUT,
            ident="sa3",
            expose_tracebacks=False,
        )
        self._thread = threading.Thread(target=self._server.run, name="sa3-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.listening[0]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    def describe(self) -> str:
        """The line ``sa3 serve`` prints once HTTP listens (tools wait for ``HTTP on URL``)."""
        others = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.listening[1:])
        also = f"also {others}; " if others else ""
        lock = "token required from other machines" if self.token else "this machine only"
        folder = self.engine.loras
        loras = f"{len(folder.adapters)} LoRA(s) in {folder.folder}" if folder.folder else "no LoRA folder"
        return f"HTTP on {self.url} ({also}SA3 HTTP contract, docs/http.md; {lock}; {loras})"

    def housekeeping(self, now: float | None = None) -> None:
        """Cancel waiting or running HTTP jobs nobody has polled for :data:`ABANDON_SECONDS`: their
        client has gone, and the queue should not wait for it."""
        now = time.monotonic() if now is None else now
        for job in self.engine.jobs("http"):
            session: HttpSession = job.client
            if not job.ended and not job.cancel.is_set() and now - session.last_polled > ABANDON_SECONDS:
                log.info("job %s: no poll for %.0f s; cancelled", job.id, now - session.last_polled)
                try:
                    self.engine.cancel(job, "abandoned")
                except Exception:  # it ended meanwhile
                    pass

    def linger(self) -> None:
        """At shutdown: wait (at most :data:`LINGER_SECONDS`) for the clients of results that
        finished in the last :data:`RECENT_SECONDS` to poll them once."""
        deadline = time.monotonic() + LINGER_SECONDS

        def unpolled() -> bool:
            now = time.monotonic()
            return any(
                job.ended and not job.client.polled_after_end and now - (job.finished_at or now) < RECENT_SECONDS
                for job in self.engine.jobs("http")
            )

        while unpolled() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        from waitress import wasyncore

        if self._server is None:
            return
        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)
        if self._thread is not None:
            self._thread.join(5)
