"""``sa3 serve``: the server process and its ZeroMQ front end (docs/protocol.md is its specification).

The jobs themselves run in the :class:`~bridge.engine.Engine` (its own worker thread), which
every front end shares: this ZeroMQ side and, with ``--http``, the HTTP contract of existing DAW
front ends (bridge/http/, docs/http.md). This module owns the process: signals, housekeeping,
shutdown, and the main loop.

The **socket thread** (the caller of :meth:`Daemon.serve`) owns the ROUTER socket and is the only
thread that touches it: it decodes and checks every message, answers hello, status, heartbeat,
cancel and fetch at once, and submits jobs to the engine. The engine reports progress and endings
as events; one raised on the socket thread is handled at once, one from another thread (the
worker, an HTTP request thread) goes on a queue and wakes the socket loop through a socket pair,
so the socket loop never waits for the model.

Replies to a client that has gone are dropped (ROUTER_MANDATORY + non-blocking sends), and a
queued or running job whose owner the daemon has neither heard from nor reached for
``protocol.ABANDON_SECONDS`` is cancelled, so a vanished client never stalls the queue; finished
jobs stay fetchable for ``result_ttl`` seconds. Every header sent carries ``daemon_id``, made once
per start, so a client can tell a restarted daemon (which has lost its jobs) from the one it knew.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from sa3core import timebase
from sa3core.errors import Sa3Error

from . import protocol as P
from .engine import ComputeThread, Engine, Job
from .keys import ServerKeys
from .loras import LoraFolder, check_folder

log = logging.getLogger("sa3.serve")

POLL_MS = 100  # how often the socket loop looks at signals and expired results when idle
CLIENT_MEMORY_SECONDS = 600.0  # clients heard from this recently are told about a shutdown
SHUTDOWN_POLICIES = ("finish", "cancel")
NO_BIND = "none"  # --bind none: no ZeroMQ endpoint (the HTTP front end alone)


@dataclass
class DaemonConfig:
    bind: str = P.DEFAULT_ENDPOINT  # NO_BIND: serve no ZeroMQ endpoint
    max_seconds: float | None = None  # None: the model's own limit
    queue: int = 16  # waiting jobs (the running one not counted)
    result_ttl: float = 600.0  # seconds a finished job stays fetchable
    on_shutdown: str = "finish"  # the running job on SIGINT/SIGTERM: "finish" or "cancel"
    curve_keys: str | None = None  # folder from `sa3 keys generate`; required off loopback
    lora_dir: str | None = None  # the LoRA folder both front ends serve adapters from (None: none)

    def check(self) -> ServerKeys | None:
        """Refuse bad settings before any model loads; returns the CURVE keys, if any."""
        if self.on_shutdown not in SHUTDOWN_POLICIES:
            raise Sa3Error(f"--on-shutdown {self.on_shutdown!r} must be finish or cancel")
        if self.queue < 1:
            raise Sa3Error(f"--queue {self.queue} must be at least 1")
        if not self.result_ttl >= 0:
            raise Sa3Error(f"--result-ttl {self.result_ttl} must be 0 or more seconds")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise Sa3Error(f"--max-seconds {self.max_seconds} must be more than zero")
        if self.bind != NO_BIND:
            check_bind(self.bind, self.curve_keys)
        check_folder(self.lora_dir)
        return ServerKeys.from_dir(self.curve_keys) if self.curve_keys else None

    def engine(self, models: dict, compute: ComputeThread | None = None) -> Engine:
        """The job engine these settings describe, for ``models`` (name -> Pipeline, default first),
        with the adapters of ``lora_dir`` checked against them; its jobs run on ``compute`` (the
        thread that loaded the models) when given."""
        loras = LoraFolder(self.lora_dir, models)
        return Engine(
            models, queue=self.queue, result_ttl=self.result_ttl, max_seconds=self.max_seconds, loras=loras,
            compute=compute,
        )  # fmt: skip


def is_loopback(endpoint: str) -> bool:
    """True when only this machine can reach ``endpoint`` (127.0.0.0/8, ::1, localhost, ipc, inproc)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise Sa3Error(f"endpoint {endpoint!r} is not a ZeroMQ endpoint; write it like tcp://127.0.0.1:5557")
    if scheme != "tcp":
        return True
    return is_loopback_host(rest.rsplit(":", 1)[0].strip("[]"))


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; False for '*', names and other addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: possibly reachable from elsewhere


def check_bind(endpoint: str, curve_keys: str | None) -> None:
    if not is_loopback(endpoint) and curve_keys is None:
        raise Sa3Error(
            f"refusing to bind {endpoint!r} without encryption: it is reachable from other machines; "
            "pass --curve-keys DIR (create one with `sa3 keys generate DIR`) or bind tcp://127.0.0.1:PORT"
        )


@dataclass
class ZmqClient:
    """What the ZeroMQ side keeps about a job it submitted: where its messages go."""

    owner: bytes  # the identity that submitted it or last fetched it
    encoding: str
    request_id: Any
    watchers: list = field(default_factory=list)  # cancels to answer: identity, encoding, request_id, step


def _pack_frames(job: Job, audio) -> list[bytes]:
    """The engine's pack for ZeroMQ jobs: one planar float32 frame per take."""
    return [P.pack_audio(take) for take in audio]


# ---------------------------------------------------------------------------- the daemon
class Daemon:
    """``Daemon(engine, config, http=None)``: serves ``engine``'s models over ZeroMQ at
    ``config.bind`` (none with ``bind="none"``) and, when given, the HTTP front end ``http``
    (a :class:`bridge.http.HttpServer`), until SIGINT/SIGTERM or :meth:`request_stop`."""

    def __init__(self, engine: Engine, config: DaemonConfig | None = None, http=None) -> None:
        self.engine = engine
        self.models = engine.models
        self.default_model = engine.default_model
        self.pipeline = engine.pipeline
        self.model_limits = engine.model_limits
        self.limits = engine.limits
        self.config = config = config or DaemonConfig()
        self.keys = config.check()
        self.http = http
        self.endpoint = config.bind
        self.daemon_id = secrets.token_hex(P.DAEMON_ID_HEX // 2)
        self._events: queue.Queue = queue.Queue()
        self._stopping = False
        self._signals = 0
        self._clients: dict[bytes, float] = {}  # identity -> when it was last heard from or reached
        self._socket_thread: int | None = None
        self.router = None
        self._handlers = {
            "hello": self._on_hello,
            "generate": self._on_job,
            "inpaint": self._on_job,
            "continue": self._on_job,
            "transform": self._on_job,
            "cancel": self._on_cancel,
            "fetch": self._on_fetch,
            "status": self._on_status,
            "heartbeat": self._on_heartbeat,
        }
        assert set(self._handlers) == set(P.REQUEST_TYPES)
        engine.listen(self._on_engine_event)

    def _model_of(self, header: dict[str, Any]) -> str:
        """The name of the model a job asks for (its ``model`` field, added in 1.4), else the default."""
        return self.engine.model_named(P.get_field(header, "model", str, None))

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        # A socket pair wakes the socket loop from other threads: unlike a ZeroMQ socket, it may be
        # written from any thread, and zmq.Poller polls it beside the ROUTER.
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self.context = self.auth = None
        if self.config.bind == NO_BIND:
            return
        self.context = zmq.Context()
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable replies raise (and are dropped) instead of vanishing
        largest = max(limits.max_frame_bytes for limits in self.model_limits.values())
        router.setsockopt(zmq.MAXMSGSIZE, largest + 1024)
        router.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.context)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(self.keys.authorized))
            router.curve_secretkey = self.keys.secret
            router.curve_publickey = self.keys.public
            router.curve_server = True
        try:
            router.bind(self.config.bind)
        except zmq.ZMQError as err:
            router.close()
            self._close_context()
            raise Sa3Error(
                f"cannot bind {self.config.bind!r}: {err}; is another daemon there? pick another --bind"
            ) from None
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = router

    def _close_context(self) -> None:
        if self.auth is not None:
            self.auth.stop()
        if self.context is not None:
            self.context.term()

    def serve(self, install_signals: bool = True) -> int:
        """Bind, serve until SIGINT/SIGTERM (or :meth:`request_stop`), shut down; returns 0."""
        self._open()
        if self.http is not None:
            try:
                self.http.start()  # binds now: a port in use fails before anything says it listens
            except BaseException:
                self._close_sockets()
                raise
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.request_stop())
        self._socket_thread = threading.get_ident()
        self.engine.start()
        if self.engine.loras.folder is not None:
            print(f"sa3 serve: {self.engine.loras.summary()}", file=sys.stderr, flush=True)
        if self.router is not None:
            print(
                f"sa3 serve: listening on {self.endpoint} (protocol {P.PROTOCOL_VERSION}, model "
                f"{self.pipeline.settings.name}{self._more_models()}, queue {self.config.queue}, "
                f"max {self.limits.max_seconds:g} s{', CURVE' if self.keys else ''})",
                file=sys.stderr,
                flush=True,
            )
        if self.http is not None:
            print(f"sa3 serve: {self.http.describe()}", file=sys.stderr, flush=True)
        poller = zmq.Poller()
        if self.router is not None:
            poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_in.fileno(), zmq.POLLIN)  # a plain socket: poll() reports it by its fd
        last_housekeeping = 0.0
        while True:
            ready = dict(poller.poll(POLL_MS))
            if self._wake_in.fileno() in ready:
                self._drain_wake()
            self._drain_events()
            if self.router is not None and self.router in ready:
                for _ in range(256):  # bounded burst, so events and signals get a turn
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames[0], frames[1:])
            if self._signals and not self._stopping:
                self._begin_stop()
            if self._signals > 1:
                self.engine.cancel_running("shutdown")
            if time.monotonic() - last_housekeeping > 1.0:
                self._housekeeping()
                last_housekeeping = time.monotonic()
            if self._stopping and self.engine.idle:
                self._drain_events()
                break
        self._finish()
        return 0

    def _drain_wake(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _more_models(self) -> str:
        others = list(self.models)[1:]
        return f" (default; also {', '.join(others)})" if others else ""

    def request_stop(self) -> None:
        """What SIGINT/SIGTERM do: the first stops taking jobs, a second cancels the running one."""
        self._signals += 1

    def _begin_stop(self) -> None:
        self._stopping = True
        policy = "cancel" if self.config.on_shutdown == "cancel" else "finish"
        print(f"sa3 serve: stopping (running job: {policy})", file=sys.stderr, flush=True)
        self.engine.stop_taking(cancel_running=policy == "cancel")  # waiting jobs end now, as events

    def _finish(self) -> None:
        header = {
            "type": "shutdown",
            "reason": "signal",
            "running_job": "cancel" if self.config.on_shutdown == "cancel" or self._signals > 1 else "finish",
        }
        if self.router is not None:
            for identity in list(self._clients):
                self._send(identity, header)
        self.engine.close()
        if self.http is not None:
            self.http.linger()  # HTTP clients poll: let them collect what finished during the stop
            self.http.close()
        self._close_sockets(linger=True)
        print("sa3 serve: stopped", file=sys.stderr, flush=True)

    def _close_sockets(self, linger: bool = False) -> None:
        if self.router is not None:
            if linger:
                self.router.setsockopt(zmq.LINGER, 1000)  # let the last messages leave
            self.router.close()
        self._close_context()
        self._wake_in.close()
        self._wake_out.close()

    # ------------------------------------------------------------------ sending
    def _send(self, identity: bytes, header: dict[str, Any], frames=(), encoding: str = "msgpack") -> bool:
        header = {"v": P.PROTOCOL_VERSION, "daemon_id": self.daemon_id, **header}
        try:
            self.router.send_multipart([identity, P.encode_header(header, encoding), *frames], zmq.NOBLOCK, copy=False)
            # Delivered to a live connection: the client is there even if it sends nothing (a 1.2
            # client or the plugin hears progress and does not ping), so its jobs are not abandoned.
            self._clients[identity] = time.monotonic()
            return True
        except zmq.ZMQError as err:
            # EHOSTUNREACH: the client is gone; EAGAIN: it stopped reading. Either way never wait.
            log.debug("dropped %s for a client: %s", header.get("type"), err)
            return False

    def _error(self, identity: bytes, code: str, message: str, encoding: str, request_id=None, job_id=None) -> None:
        header = {"type": "error", "code": code, "message": message}
        if request_id is not None:
            header["request_id"] = request_id
        if job_id is not None:
            header["job_id"] = job_id
        self._send(identity, header, encoding=encoding)

    def _job_message(self, job: Job, header: dict[str, Any], to: bytes | None = None, frames=()) -> None:
        header = {**header, "job_id": job.id}
        client: ZmqClient = job.client
        if client.request_id is not None:
            header["request_id"] = client.request_id
        self._send(client.owner if to is None else to, header, frames, client.encoding)

    def _send_queued(self, job: Job, to: bytes | None = None) -> None:
        position = self.engine.position(job)
        self._job_message(job, {"type": "queued", "position": position, "mode": job.request.mode}, to)

    def _send_positions(self) -> None:
        """Tell every waiting ZeroMQ job its place (after the queue moved)."""
        for waiting in self.engine.waiting():
            if waiting.front == "zmq":
                self._send_queued(waiting)

    @staticmethod
    def _cancelled(job: Job) -> dict[str, Any]:
        return {"type": "cancelled", "reason": job.cancel_reason, "step": job.step, "total": job.total}

    def _result_header(self, job: Job) -> dict[str, Any]:
        variations, channels, samples = job.shape
        return {
            "type": "result",
            "mode": job.request.mode,
            "audio": P.AudioInfo(job.request.sample_rate, channels, samples).as_header(),
            "variations": variations,
            "seed": job.request.seed,
            "model": job.model,  # added in 1.4
            "loras": [{"name": adapter.name, "strength": strength} for adapter, strength in job.loras],  # 1.5
            "steps": job.steps_used,
            "cfg": job.cfg_used,
            "seconds_elapsed": job.seconds_elapsed,
        }

    def _send_ending(self, job: Job, to: bytes | None = None) -> None:
        if job.state == "done":
            self._job_message(job, self._result_header(job), to, job.result)
        elif job.state == "cancelled":
            self._job_message(job, self._cancelled(job), to)
        else:
            code, message = job.error
            self._job_message(job, {"type": "error", "code": code, "message": message}, to)

    # ------------------------------------------------------------------ receiving
    def _handle(self, identity: bytes, frames: list[bytes]) -> None:
        """One client message; every failure becomes an error reply, never an exception."""
        self._clients[identity] = time.monotonic()
        encoding, request_id = "msgpack", None
        try:
            if not frames:
                raise P.ProtocolError("bad_frames", "message has no header frame")
            header, encoding = P.decode_header(frames[0], self.limits.max_header_bytes)
            request_id = P.request_id_of(header)
            kind = header["type"]
            if kind not in self._handlers:
                raise P.ProtocolError("unknown_type", f"message type {kind[:40]!r} is unknown; see docs/protocol.md")
            P.check_version(header)
            if kind not in P.JOB_MODES and len(frames) > 1:
                raise P.ProtocolError("bad_frames", f"{kind} takes no audio frames, got {len(frames) - 1}")
            self._handlers[kind](identity, header, frames[1:], encoding, request_id)
        except P.ProtocolError as err:
            self._error(identity, err.code, err.message, encoding, request_id)
        except Sa3Error as err:
            self._error(identity, "invalid_request", str(err), encoding, request_id)
        except Exception as err:  # a bug must not take the daemon down with it
            log.exception("internal error on a %d-frame message", len(frames))
            self._error(identity, "internal", f"{type(err).__name__} in the daemon; see its log", encoding, request_id)

    def _reply(self, identity, header, encoding, request_id) -> None:
        if request_id is not None:
            header["request_id"] = request_id
        self._send(identity, header, encoding=encoding)

    def _on_hello(self, identity, header, frames, encoding, request_id) -> None:
        P.get_field(header, "v", str)
        limits, settings = self.limits, self.pipeline.settings
        capabilities = {
            "type": "capabilities",
            "model": settings.name,
            "sample_rate": timebase.SAMPLE_RATE,
            "sample_rates": list(timebase.HOST_SAMPLE_RATES),
            "channels": timebase.CHANNELS,
            "modes": list(P.JOB_MODES),
            "max_seconds": limits.max_seconds,
            "max_variations": limits.max_variations,
            "max_steps": limits.max_steps,
            "max_regions": limits.max_regions,
            "max_prompt_chars": limits.max_prompt_chars,
            "max_loras": limits.max_loras,  # added in 1.5
            "max_header_bytes": limits.max_header_bytes,
            "max_frame_bytes": limits.max_frame_bytes,
            "queue_limit": self.config.queue,
            "result_ttl": self.config.result_ttl,
            "default_steps": settings.steps,
            "default_cfg": settings.cfg,
            "models": [self._describe(name) for name in self.models],  # added in 1.4
            "loras": [adapter.describe() for adapter in self.engine.loras.adapters],  # added in 1.5
        }
        self._reply(identity, capabilities, encoding, request_id)

    def _describe(self, name: str) -> dict[str, Any]:
        """One served model as ``capabilities`` lists it (docs/protocol.md 4.1)."""
        pipeline = self.models[name]
        return {
            "name": name,
            "family": pipeline.family.name,
            "default_steps": pipeline.settings.steps,
            "default_cfg": pipeline.settings.cfg,
            "max_seconds": self.model_limits[name].max_seconds,
            "steering": sorted(pipeline.family.hooks),
        }

    def _on_job(self, identity, header, frames, encoding, request_id) -> None:
        if self._stopping:
            raise P.ProtocolError("shutting_down", "the daemon is shutting down and takes no new jobs")
        model = self._model_of(header)
        request = P.parse_job(header, frames, self.model_limits[model])
        client = ZmqClient(identity, encoding, request.request_id)
        job = self.engine.submit(request, model, "zmq", _pack_frames, client)
        self._send_queued(job)

    def _find(self, header) -> Job:
        job_id = P.get_job_id(header)
        job = self.engine.job(job_id, "zmq")
        if job is None:
            raise P.ProtocolError("unknown_job", f"no job {job_id!r} here (never queued, or its result expired)")
        return job

    def _on_cancel(self, identity, header, frames, encoding, request_id) -> None:
        job = self._find(header)
        step = job.step
        if self.engine.cancel(job, "cancel"):  # it was waiting: it has ended (and its owner been told)
            self._reply(identity, {**self._cancelled(job), "job_id": job.id}, encoding, request_id)
            self._send_positions()
        else:
            # Running: answered when it has stopped. Its ended event reaches this thread only after
            # this handler returns, so the watcher is in place before it is read.
            job.client.watchers.append((identity, encoding, request_id, step))

    def _on_fetch(self, identity, header, frames, encoding, request_id) -> None:
        job = self._find(header)
        job.client.owner, job.client.encoding = identity, encoding
        if request_id is not None:
            job.client.request_id = request_id
        if job.ended:
            self._send_ending(job)
        else:
            self._send_queued(job)

    def _server_state(self) -> tuple[str | None, int]:
        running = self.engine.running
        return (running.id if running is not None else None), len(self.engine.waiting())

    def _on_status(self, identity, header, frames, encoding, request_id) -> None:
        running, waiting = self._server_state()
        reply = {
            "type": "status",
            "state": "stopping" if self._stopping else "serving",
            "model": self.pipeline.settings.name,
            "queue_length": waiting,
            "queue_limit": self.config.queue,
            "running": running,
            "jobs_done": self.engine.jobs_done,
            "uptime": time.monotonic() - self.engine.started,
        }
        if header.get("job_id") is not None:
            job = self._find(header)
            reply["job"] = {
                "job_id": job.id,
                "state": job.state,
                "position": self.engine.position(job),
                "step": job.step,
                "total": job.total,
            }
        self._reply(identity, reply, encoding, request_id)

    def _on_heartbeat(self, identity, header, frames, encoding, request_id) -> None:
        running, waiting = self._server_state()
        reply = {"type": "heartbeat", "time": time.time(), "queue_length": waiting, "running": running}
        self._reply(identity, reply, encoding, request_id)

    # ------------------------------------------------------------------ events from the engine
    def _on_engine_event(self, event: str, job: Job, *details) -> None:
        """The engine's listener: handled at once on the socket thread, else queued for it."""
        if threading.get_ident() == self._socket_thread:
            self._handle_event(event, job, *details)
            return
        self._events.put((event, job, *details))
        try:
            self._wake_out.send(b"\0")
        except (BlockingIOError, InterruptedError, OSError):
            pass  # the socket loop has wake-ups pending already (or is closing) and drains the queue

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(*event)

    def _handle_event(self, event: str, job: Job, *details) -> None:
        if self.router is None:
            return
        if event == "started":
            self._send_positions()  # everyone moved up one place
        elif event == "progress" and job.front == "zmq" and job.request.progress:
            step, total = details
            self._job_message(job, {"type": "progress", "step": step, "total": total, "stage": "sampling"})
        elif event == "ended" and job.front == "zmq":
            self._send_ending(job)
            for identity, encoding, request_id, step in job.client.watchers:
                if job.state == "cancelled":
                    reply = {**self._cancelled(job), "job_id": job.id, "requested_at_step": step}
                else:
                    reply = {
                        "type": "error",
                        "code": "job_finished",
                        "message": f"job {job.id} ended before the cancel",
                        "job_id": job.id,
                    }
                self._reply(identity, reply, encoding, request_id)
        elif event == "ended" and job.started_at is None and not self._stopping:
            self._send_positions()  # another front end's job left the queue: those behind it moved up

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self.engine.housekeeping(now)
        self._cancel_abandoned(now)
        if self.http is not None:
            self.http.housekeeping(now)
        for identity, seen in list(self._clients.items()):
            if now - seen > CLIENT_MEMORY_SECONDS:
                del self._clients[identity]

    def _cancel_abandoned(self, now: float) -> None:
        """Cancel queued and running ZeroMQ jobs whose owner has been neither heard from nor reached
        for ``ABANDON_SECONDS`` (a killed client): reason ``abandoned``, so the queue moves on."""

        def abandoned(job: Job) -> bool:
            return job.front == "zmq" and now - self._clients.get(job.client.owner, float("-inf")) > P.ABANDON_SECONDS

        dropped = [job for job in self.engine.waiting() if abandoned(job)]
        for job in dropped + [self.engine.running]:
            if job is None or job.cancel.is_set() or not abandoned(job):
                continue
            log.info("job %s abandoned by its client (%s); cancelling", job.id, job.state)
            try:
                self.engine.cancel(job, "abandoned")
            except P.ProtocolError:
                pass  # it ended meanwhile
        if dropped:
            self._send_positions()  # everyone behind moved up
