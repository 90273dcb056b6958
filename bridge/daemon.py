"""``sa3 serve``: the ZeroMQ inference daemon (docs/protocol.md is its specification).

Two threads. The **socket thread** (the caller of :meth:`Daemon.serve`) owns the ROUTER socket
and is the only thread that touches it: it decodes and checks every message, answers hello,
status, heartbeat, cancel and fetch at once, and puts jobs on a bounded queue. The **worker
thread** runs one job at a time on the model; it never touches the ROUTER. It reports
progress and endings as events on a ``queue.Queue`` and wakes the socket thread through an
inproc PAIR socket, so the socket loop never waits for the model.

Replies to a client that has gone are dropped (ROUTER_MANDATORY + non-blocking sends), and a
queued or running job whose owner the daemon has neither heard from nor reached for
``protocol.ABANDON_SECONDS`` is cancelled, so a vanished client never stalls the queue; finished
jobs stay fetchable for ``result_ttl`` seconds. Every header sent carries ``daemon_id``, made once
per start, so a client can tell a restarted daemon (which has lost its jobs) from the one it knew.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import queue
import secrets
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq

from sa3core import timebase
from sa3core.errors import Sa3Error

from . import protocol as P
from .keys import ServerKeys
from .render import render

log = logging.getLogger("sa3.serve")

POLL_MS = 100  # how often the socket loop looks at signals and expired results when idle
CLIENT_MEMORY_SECONDS = 600.0  # clients heard from this recently are told about a shutdown
MAX_RESULT_BYTES = 2 * 1024**3  # finished results kept for fetch, oldest dropped first
SHUTDOWN_POLICIES = ("finish", "cancel")
_wake_ids = itertools.count()


@dataclass
class DaemonConfig:
    bind: str = P.DEFAULT_ENDPOINT
    max_seconds: float | None = None  # None: the model's own limit
    queue: int = 16  # waiting jobs (the running one not counted)
    result_ttl: float = 600.0  # seconds a finished job stays fetchable
    on_shutdown: str = "finish"  # the running job on SIGINT/SIGTERM: "finish" or "cancel"
    curve_keys: str | None = None  # folder from `sa3 keys generate`; required off loopback

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
        check_bind(self.bind, self.curve_keys)
        return ServerKeys.from_dir(self.curve_keys) if self.curve_keys else None


def is_loopback(endpoint: str) -> bool:
    """True when only this machine can reach ``endpoint`` (127.0.0.0/8, ::1, localhost, ipc, inproc)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise Sa3Error(f"endpoint {endpoint!r} is not a ZeroMQ endpoint; write it like tcp://127.0.0.1:5557")
    if scheme != "tcp":
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
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


class _Cancelled(Exception):
    """Raised from the progress callback to stop the sampler of a cancelled job."""


class Job:
    """One request on its way through the queue. The worker writes state/step/result; the socket
    thread reads them only after the matching event, so no field is read half-written."""

    def __init__(self, request: P.JobRequest, owner: bytes, encoding: str, model: str = "") -> None:
        self.id = secrets.token_hex(P.JOB_ID_HEX // 2)
        self.request = request
        self.model = model  # the name of the daemon's model that runs it
        self.request_id = request.request_id
        self.owner = owner
        self.encoding = encoding
        self.state = "queued"  # queued -> running -> done | failed | cancelled
        self.step = 0
        self.total = 0
        self.cancel = threading.Event()
        self.cancel_reason = "cancel"
        self.watchers: list[tuple[bytes, str, Any, int]] = []  # cancels to answer: identity, encoding, request_id, step
        self.result_header: dict[str, Any] = {}
        self.frames: list[bytes] = []
        self.error: tuple[str, str] = ("internal", "")
        self.seconds_elapsed = 0.0
        self.finished_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def nbytes(self) -> int:
        return sum(len(frame) for frame in self.frames)


# ---------------------------------------------------------------------------- the daemon
class Daemon:
    """``Daemon(pipeline, config)`` serves one model; ``models`` (name -> Pipeline, in order, added
    in protocol 1.4) serves several, the first being the default (``pipeline`` is then ignored and
    may be None). A job names one in its ``model`` field; each has its own ``max_seconds``."""

    def __init__(self, pipeline, config: DaemonConfig | None = None, models: dict | None = None) -> None:
        self.models = dict(models) if models else {pipeline.settings.name: pipeline}
        self.default_model = next(iter(self.models))
        self.pipeline = self.models[self.default_model]
        self.config = config = config or DaemonConfig()
        self.keys = config.check()
        self.model_limits = {name: self._limits_for(model) for name, model in self.models.items()}
        self.limits = self.model_limits[self.default_model]
        self.endpoint = config.bind
        self.daemon_id = secrets.token_hex(P.DAEMON_ID_HEX // 2)
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._events: queue.Queue = queue.Queue()
        self._stop_worker = False
        self._stopping = False
        self._signals = 0
        self._clients: dict[bytes, float] = {}  # identity -> when it was last heard from or reached
        self._jobs_done = 0
        self._started = time.monotonic()
        self._wake_address = f"inproc://sa3-wake-{next(_wake_ids)}"
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

    def _limits_for(self, pipeline) -> P.Limits:
        model_max = pipeline.settings.max_seconds
        cap = self.config.max_seconds
        return P.Limits(max_seconds=model_max if cap is None else min(cap, model_max))

    def _model_of(self, header: dict[str, Any]) -> str:
        """The name of the model a job asks for (its ``model`` field, added in 1.4), else the default."""
        name = P.get_field(header, "model", str, None)
        if name is None:
            return self.default_model
        if name not in self.models:
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise P.ProtocolError(
                "bad_field",
                f"field 'model' is {shown!r}, which this daemon does not serve; use one of "
                f"{', '.join(self.models)} (capabilities lists them) or leave it out for {self.default_model}",
            )
        return name

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        self.context = zmq.Context()
        self.auth = None
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
        self.wake = self.context.socket(zmq.PAIR)
        self.wake.bind(self._wake_address)

    def _close_context(self) -> None:
        if self.auth is not None:
            self.auth.stop()
        self.context.term()

    def serve(self, install_signals: bool = True) -> int:
        """Bind, serve until SIGINT/SIGTERM (or :meth:`request_stop`), shut down; returns 0."""
        self._open()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.request_stop())
        worker = threading.Thread(target=self._work, name="sa3-worker", daemon=True)
        worker.start()
        print(
            f"sa3 serve: listening on {self.endpoint} (protocol {P.PROTOCOL_VERSION}, model "
            f"{self.pipeline.settings.name}{self._more_models()}, queue {self.config.queue}, max {self.limits.max_seconds:g} s"
            f"{', CURVE' if self.keys else ''})",
            file=sys.stderr,
            flush=True,
        )
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        last_housekeeping = 0.0
        while True:
            ready = dict(poller.poll(POLL_MS))
            if self.wake in ready:
                while self.wake.poll(0):
                    self.wake.recv()
            self._drain_events()
            if self.router in ready:
                for _ in range(256):  # bounded burst, so events and signals get a turn
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames[0], frames[1:])
            if self._signals and not self._stopping:
                self._begin_stop()
            if self._signals > 1 and self._running is not None:
                self._cancel_running("shutdown")
            if time.monotonic() - last_housekeeping > 1.0:
                self._housekeeping()
                last_housekeeping = time.monotonic()
            if self._stopping:
                with self._cond:
                    idle = self._running is None and not self._waiting
                if idle:
                    self._drain_events()
                    break
        self._finish(worker)
        return 0

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
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            self._end_cancelled(job, "shutdown")
        if policy == "cancel":
            self._cancel_running("shutdown")

    def _cancel_running(self, reason: str) -> None:
        with self._cond:
            job = self._running
        if job is not None and not job.cancel.is_set():
            job.cancel_reason = reason
            job.cancel.set()

    def _finish(self, worker: threading.Thread) -> None:
        header = {
            "type": "shutdown",
            "reason": "signal",
            "running_job": "cancel" if self.config.on_shutdown == "cancel" or self._signals > 1 else "finish",
        }
        for identity in list(self._clients):
            self._send(identity, header)
        with self._cond:
            self._stop_worker = True
            self._cond.notify_all()
        worker.join(timeout=5)
        self.router.setsockopt(zmq.LINGER, 1000)  # let the last messages leave
        self.router.close()
        self.wake.close(linger=0)
        self._close_context()
        print("sa3 serve: stopped", file=sys.stderr, flush=True)

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
        if job.request_id is not None:
            header["request_id"] = job.request_id
        self._send(job.owner if to is None else to, header, frames, job.encoding)

    def _position(self, job: Job) -> int:
        with self._cond:
            if job.state != "queued":
                return 0
            ahead = next((i for i, waiting in enumerate(self._waiting) if waiting is job), 0)
            return ahead + (self._running is not None)

    def _send_queued(self, job: Job, to: bytes | None = None) -> None:
        self._job_message(job, {"type": "queued", "position": self._position(job), "mode": job.request.mode}, to)

    @staticmethod
    def _cancelled(job: Job) -> dict[str, Any]:
        return {"type": "cancelled", "reason": job.cancel_reason, "step": job.step, "total": job.total}

    def _send_ending(self, job: Job, to: bytes | None = None) -> None:
        if job.state == "done":
            self._job_message(job, job.result_header, to, job.frames)
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
            "max_header_bytes": limits.max_header_bytes,
            "max_frame_bytes": limits.max_frame_bytes,
            "queue_limit": self.config.queue,
            "result_ttl": self.config.result_ttl,
            "default_steps": settings.steps,
            "default_cfg": settings.cfg,
            "models": [self._describe(name) for name in self.models],  # added in 1.4
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
        job = Job(request, identity, encoding, model)
        with self._cond:
            if len(self._waiting) >= self.config.queue:
                raise P.ProtocolError(
                    "queue_full", f"the queue is full ({self.config.queue} jobs waiting); try again shortly"
                )
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
        log.info("job %s queued: %s", job.id, request.mode)
        self._send_queued(job)

    def _find(self, header) -> Job:
        job_id = P.get_job_id(header)
        job = self._jobs.get(job_id)
        if job is None:
            raise P.ProtocolError("unknown_job", f"no job {job_id!r} here (never queued, or its result expired)")
        return job

    def _on_cancel(self, identity, header, frames, encoding, request_id) -> None:
        job = self._find(header)
        with self._cond:
            queued = job.state == "queued"
            if queued:
                self._waiting.remove(job)
        if queued:
            self._end_cancelled(job, "cancel")
            self._reply(identity, {**self._cancelled(job), "job_id": job.id}, encoding, request_id)
            for waiting in list(self._waiting):
                self._send_queued(waiting)
        elif job.ended:
            raise P.ProtocolError("job_finished", f"job {job.id!r} has already ended ({job.state})")
        else:
            job.watchers.append((identity, encoding, request_id, job.step))  # answered when the job has stopped
            job.cancel_reason = "cancel"
            job.cancel.set()  # the worker stops at the job's next sampler step

    def _end_cancelled(self, job: Job, reason: str) -> None:
        job.state, job.cancel_reason, job.finished_at = "cancelled", reason, time.monotonic()
        self._send_ending(job)

    def _on_fetch(self, identity, header, frames, encoding, request_id) -> None:
        job = self._find(header)
        job.owner, job.encoding = identity, encoding
        if request_id is not None:
            job.request_id = request_id
        if job.ended:
            self._send_ending(job)
        else:
            self._send_queued(job)

    def _on_status(self, identity, header, frames, encoding, request_id) -> None:
        with self._cond:
            running = self._running.id if self._running is not None else None
            waiting = len(self._waiting)
        reply = {
            "type": "status",
            "state": "stopping" if self._stopping else "serving",
            "model": self.pipeline.settings.name,
            "queue_length": waiting,
            "queue_limit": self.config.queue,
            "running": running,
            "jobs_done": self._jobs_done,
            "uptime": time.monotonic() - self._started,
        }
        if header.get("job_id") is not None:
            job = self._find(header)
            reply["job"] = {
                "job_id": job.id,
                "state": job.state,
                "position": self._position(job),
                "step": job.step,
                "total": job.total,
            }
        self._reply(identity, reply, encoding, request_id)

    def _on_heartbeat(self, identity, header, frames, encoding, request_id) -> None:
        with self._cond:
            running = self._running.id if self._running is not None else None
            waiting = len(self._waiting)
        self._reply(
            identity,
            {"type": "heartbeat", "time": time.time(), "queue_length": waiting, "running": running},
            encoding,
            request_id,
        )

    # ------------------------------------------------------------------ events from the worker
    def _drain_events(self) -> None:
        while True:
            try:
                kind, job, *rest = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "started":
                for waiting in list(self._waiting):
                    self._send_queued(waiting)  # everyone moved up one place
            elif kind == "progress":
                step, total = rest
                self._job_message(job, {"type": "progress", "step": step, "total": total, "stage": "sampling"})
            elif kind == "ended":
                self._jobs_done += 1
                log.info("job %s %s in %.2f s", job.id, job.state, job.seconds_elapsed)
                self._send_ending(job)
                for identity, encoding, request_id, step in job.watchers:
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

    def _housekeeping(self) -> None:
        now = time.monotonic()
        ended = sorted((job for job in self._jobs.values() if job.ended), key=lambda job: job.finished_at)
        kept = sum(job.nbytes for job in ended)
        for job in ended:
            if now - job.finished_at > self.config.result_ttl or kept > MAX_RESULT_BYTES:
                kept -= job.nbytes
                del self._jobs[job.id]
        self._cancel_abandoned(now)
        for identity, seen in list(self._clients.items()):
            if now - seen > CLIENT_MEMORY_SECONDS:
                del self._clients[identity]

    def _cancel_abandoned(self, now: float) -> None:
        """Cancel queued and running jobs whose owner has been neither heard from nor reached for
        ``ABANDON_SECONDS`` (a killed client): reason ``abandoned``, so the queue moves on."""

        def abandoned(job: Job) -> bool:
            return now - self._clients.get(job.owner, float("-inf")) > P.ABANDON_SECONDS

        with self._cond:
            dropped = [job for job in self._waiting if abandoned(job)]
            for job in dropped:
                self._waiting.remove(job)
            running = self._running
        for job in dropped:
            log.info("job %s abandoned by its client (queued); cancelled", job.id)
            self._end_cancelled(job, "abandoned")
        if dropped:
            for waiting in list(self._waiting):
                self._send_queued(waiting)  # everyone behind moved up
        if running is not None and not running.cancel.is_set() and abandoned(running):
            log.info("job %s abandoned by its client (running); cancelling", running.id)
            running.cancel_reason = "abandoned"
            running.cancel.set()  # the worker stops at the job's next sampler step

    # ------------------------------------------------------------------ the worker thread
    def _post(self, wake: zmq.Socket, event: tuple) -> None:
        self._events.put(event)
        try:
            wake.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # the socket thread has wake-ups pending already and will drain the queue

    def _work(self) -> None:
        wake = self.context.socket(zmq.PAIR)
        wake.connect(self._wake_address)
        try:
            while True:
                with self._cond:
                    while not self._waiting and not self._stop_worker:
                        self._cond.wait()
                    if not self._waiting:
                        return
                    job = self._waiting.popleft()
                    job.state = "running"
                    self._running = job
                self._post(wake, ("started", job))
                self._run(job, wake)
                self._post(wake, ("ended", job))
                with self._cond:
                    self._running = None
        finally:
            wake.close(linger=0)

    def _run(self, job: Job, wake: zmq.Socket) -> None:
        def progress(step: int, total: int) -> None:
            job.step, job.total = step, total
            if job.cancel.is_set():
                raise _Cancelled
            if job.request.progress:
                self._post(wake, ("progress", job, step, total))

        started = time.perf_counter()
        state = "failed"
        try:
            if job.cancel.is_set():
                raise _Cancelled
            pipeline = self.models[job.model]
            audio = render(pipeline, job.request, progress)
            if job.cancel.is_set():
                raise _Cancelled  # cancelled while decoding: honour it, the client asked
            job.frames = [P.pack_audio(take) for take in audio]
            job.result_header = {
                "type": "result",
                "mode": job.request.mode,
                "audio": P.AudioInfo(job.request.sample_rate, audio.shape[1], audio.shape[2]).as_header(),
                "variations": audio.shape[0],
                "seed": job.request.seed,
                "model": job.model,  # added in 1.4
                "steps": job.request.steps if job.request.steps is not None else pipeline.settings.steps,
                "cfg": job.request.cfg if job.request.cfg is not None else pipeline.settings.cfg,
                "seconds_elapsed": time.perf_counter() - started,
            }
            state = "done"
        except _Cancelled:
            state = "cancelled"
        except Sa3Error as err:
            job.error = ("invalid_request", str(err))
        except Exception as err:  # a model failure ends this job, not the daemon
            log.exception("job %s failed", job.id)
            first_line = (str(err).splitlines() or [""])[0][:200]
            job.error = ("internal", f"{type(err).__name__}: {first_line}")
        job.seconds_elapsed = time.perf_counter() - started
        job.request.audio = None  # the input is not needed once the job ended; only the result is kept
        job.finished_at = time.monotonic()
        job.state = state  # last: the socket thread treats a job as ended once this is set
