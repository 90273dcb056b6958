"""Python client of the sa3 daemon: blocking (:class:`Client`) and asyncio (:class:`AsyncClient`).

    with Client("tcp://127.0.0.1:5557") as client:
        take = client.generate("dusty breakbeat", bars=4, bpm=120, sample_rate=48000, progress=print)
        take.audio  # float32 [variations, 2, 384000]

Liveness (docs/protocol.md 4.9): while it waits, the client sends a ``heartbeat`` every
``heartbeat`` seconds, so the daemon knows someone still waits for the job (it cancels jobs whose
client went quiet). After ``silence`` seconds without a word from the daemon, or without an
answer to its request, it reconnects with a new DEALER socket (a fresh identity) and sends
``fetch`` and ``status`` for its job (or the request again, if the daemon never acknowledged it),
up to ``retries`` times; then it raises :class:`DaemonUnreachable`.

LoRA adapters (protocol 1.5): ``loras=[("dusty-tape", 0.7), "drums"]`` (a bare name is strength
1) names adapters of the daemon's LoRA folder, in the order they apply (``hello()["loras"]`` lists
them and the models each fits). A daemon older than 1.5 would ignore them and make the base
model's audio, so a call with ``loras`` asks the daemon's version first (once) and refuses with
one line when it is older.

Restarts (protocol 1.3): the client remembers the ``daemon_id`` of the ``queued`` that accepted
its job. A later message with another ``daemon_id``, or ``unknown_job`` for the job after a
reconnect, means the daemon restarted and lost the job: the client sends the same request once
more (same seed, same audio) and raises :class:`JobLost` when that one is lost too.

The security handshake is watched (a ZeroMQ socket monitor): when the daemon and the client
disagree about CurveZMQ keys, ZeroMQ itself retries in silence forever, so the client raises
:class:`HandshakeFailed`, a line that says what to change, within about a second. Ctrl-C while
:meth:`Client.run` waits cancels the job on the daemon before the ``KeyboardInterrupt`` goes on.
``timeout`` on a call bounds the whole call. A client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from sa3core import timebase
from sa3core.errors import Sa3Error

from . import protocol as P
from .keys import CurveKeys

ProgressFn = Callable[[int, int], None]

LORAS_MINOR = 5  # the protocol minor that added per-job LoRA adapters
EXACT_LENGTH_MINOR = 6  # the protocol minor that added exact_length
# Job fields an older daemon would ignore while making other audio (their minors: NEWER_FIELDS).
SILENTLY_IGNORED = ("loras", "exact_length")

TICK_SECONDS = 0.25  # longest wait between looks at the clock and at the handshake monitor
INTERRUPT_SECONDS = 3.0  # how long Ctrl-C waits for the daemon to confirm the job's cancel
# Handshake failures "without detail" in a row that count as a refusal: one alone can be a
# daemon that died mid-handshake; a refusal repeats on every reconnect (about 0.1-0.2 s apart).
UNDETAILED_FAILURES = 3
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_ENDPOINT = re.compile(r"tcp://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]*]+):(?P<port>\d{1,5})|ipc://\S+|inproc://\S+")


def check_endpoint(endpoint: Any) -> str:
    """``endpoint`` when a client can connect to it (tcp://HOST:PORT, ipc://PATH, inproc://NAME);
    else :class:`Sa3Error` naming it and the expected form."""
    match = _ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if match is None or (match.group("port") is not None and not 1 <= int(match.group("port")) <= 65535):
        raise Sa3Error(
            f"daemon endpoint {endpoint!r} is not a ZeroMQ endpoint; write it as tcp://HOST:PORT "
            f"(e.g. {P.DEFAULT_ENDPOINT}) or ipc://PATH"
        )
    return endpoint


class DaemonError(Sa3Error):
    """The daemon answered ``error`` (``code`` as in docs/protocol.md), or the client gave up."""

    def __init__(self, code: str, message: str, job_id: str | None = None) -> None:
        super().__init__(f"daemon: {message} ({code})")
        self.code, self.message, self.job_id = code, message, job_id


class JobCancelled(DaemonError):
    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__("cancelled", f"job {job_id} was cancelled ({reason})", job_id)
        self.reason = reason


class DaemonUnreachable(DaemonError):
    def __init__(self, endpoint: str, waited: float) -> None:
        super().__init__(
            "unreachable",
            f"no answer from {endpoint} for {waited:.0f} s; is `sa3 serve` running there (with your keys)?",
        )


class HandshakeFailed(DaemonUnreachable):
    """The ZeroMQ security handshake failed: the daemon and the client disagree about CurveZMQ keys."""

    def __init__(self, message: str) -> None:
        DaemonError.__init__(self, "handshake", message)


class JobLost(DaemonError):
    """The daemon restarted and lost the job: after it was sent again once, or with nothing to send
    again (:meth:`Client.wait` on a job id)."""

    def __init__(self, endpoint: str, job_id: str | None, resubmitted: bool) -> None:
        if resubmitted:
            message = (
                f"the daemon at {endpoint} restarted and lost the job, then lost it again after it was sent "
                "a second time; see the daemon's log (is it crashing?) and try again"
            )
        else:
            message = f"the daemon at {endpoint} restarted and lost job {job_id}; submit it again"
        super().__init__("job_lost", message, job_id)


@dataclass
class Result:
    """A finished job: ``audio`` float32 [variations, 2, samples] at ``sample_rate``."""

    audio: np.ndarray
    sample_rate: int
    job_id: str
    header: dict[str, Any]


def job_message(
    mode: str,
    prompt: str,
    *,
    samples: int | None = None,
    seconds: float | None = None,
    bars: float | None = None,
    bpm: float | None = None,
    meter: str | None = None,
    scale_lock_db: float | None = None,
    tail_seconds: float | None = None,
    init_noise_level: float | None = None,
    negative_prompt: str | None = None,
    model: str | None = None,
    loras: Sequence[tuple[str, float] | str] | None = None,
    exact_length: bool | None = None,
    sample_rate: int | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    seed: int = 0,
    variations: int = 1,
    progress: bool = True,
    audio: np.ndarray | None = None,
    audio_rate: int = timebase.SAMPLE_RATE,
    regions: Sequence[tuple[int, int]] | None = None,
    regions_seconds: Sequence[tuple[float, float]] | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The header and audio frames of a job request (fields left None are left out)."""
    fields = dict(
        prompt=prompt,
        samples=samples,
        seconds=seconds,
        bars=bars,
        bpm=bpm,
        meter=meter,
        scale_lock_db=scale_lock_db,
        tail_seconds=tail_seconds,
        init_noise_level=init_noise_level,
        negative_prompt=negative_prompt,
        model=model,
        exact_length=exact_length or None,  # added in 1.6; sent only when asked
        sample_rate=sample_rate,
        steps=steps,
        cfg=cfg,
        seed=seed,
        variations=variations,
        progress=progress,
        regions=[list(_span(region)) for region in regions] if regions is not None else None,
        regions_seconds=[[float(s), float(e)] for s, e in regions_seconds] if regions_seconds is not None else None,
    )
    header = {"type": mode, "v": P.PROTOCOL_VERSION, **{k: v for k, v in fields.items() if v is not None}}
    if loras is not None:  # added in 1.5: [{name, strength}] in the order they apply
        header["loras"] = [_lora_entry(entry) for entry in loras]
    frames = []
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio  # (channels, samples)
        header["audio"] = P.AudioInfo(audio_rate, audio.shape[0], audio.shape[1]).as_header()
        frames.append(P.pack_audio(audio))
    return header, frames


def _lora_entry(entry) -> dict[str, Any]:
    """``"name"`` or ``("name", strength)`` -> the wire's ``{name, strength}``."""
    if isinstance(entry, str):
        return {"name": entry, "strength": 1.0}
    name, strength = entry
    return {"name": str(name), "strength": float(strength)}


def _span(region) -> tuple[int, int]:
    """(start, end) of a pair or of an sa3core.pipeline.Region."""
    if hasattr(region, "start") and hasattr(region, "end"):
        return int(region.start), int(region.end)
    start, end = region
    return int(start), int(end)


class _JobTracker:
    """Follows one job's messages (sans I/O): returns the Result, raises on error or cancel."""

    def __init__(self, request_id: str, progress: ProgressFn | None, job_id: str | None = None) -> None:
        self.request_id, self.progress, self.job_id = request_id, progress, job_id
        self.position: int | None = None
        self.accepted = False  # a daemon answered `queued` for the job during this call
        self.daemon_id: str | None = None  # of that daemon (protocol 1.3; None from older daemons)

    def restart(self, request_id: str) -> None:
        """Follow the same request sent again as ``request_id`` (the daemon lost the first job)."""
        self.request_id, self.job_id, self.position = request_id, None, None
        self.accepted, self.daemon_id = False, None

    def feed(self, header: dict[str, Any], frames: list[bytes]) -> Result | None:
        kind = header.get("type")
        if kind == "shutdown":
            raise DaemonError("shutting_down", "the daemon shut down before the job ended", self.job_id)
        # Job messages carry the job id; replies to the request itself (errors before or without a
        # job, e.g. unknown_job for a fetch) carry our request id, which is unique to this call.
        mine = header.get("request_id") == self.request_id or (self.job_id and header.get("job_id") == self.job_id)
        if not mine:
            return None
        if kind == "queued":
            self.job_id, self.position = header["job_id"], header.get("position")
            self.accepted, self.daemon_id = True, header.get("daemon_id")
        elif kind == "progress" and self.progress is not None:
            self.progress(int(header["step"]), int(header["total"]))
        elif kind == "result":
            audio = P.unpack_result(header, frames)
            return Result(audio, int(header["audio"]["sample_rate"]), header["job_id"], header)
        elif kind == "cancelled":
            raise JobCancelled(header["job_id"], header.get("reason", "cancel"))
        elif kind == "error":
            raise DaemonError(header.get("code", "internal"), header.get("message", ""), header.get("job_id"))
        return None


class _ReplyTracker:
    """Waits for one reply of ``reply_type`` to a request (errors raise)."""

    def __init__(self, request_id: str, reply_type: str) -> None:
        self.request_id, self.reply_type = request_id, reply_type

    def feed(self, header, frames):
        if header.get("request_id") != self.request_id:
            return None
        if header.get("type") == self.reply_type:
            return header
        if header.get("type") == "error":
            raise DaemonError(header.get("code", "internal"), header.get("message", ""), header.get("job_id"))
        return None


class _Call:
    """One request and the wait for its answer, sans I/O: heartbeats, reconnects and restarts as
    the module docstring says. The blocking and asyncio clients drive it alike: reconnect when
    :attr:`reconnect` is set, send what :attr:`outbox` holds, a heartbeat when :attr:`ping` is set,
    then wait at most :meth:`wait_seconds`, feed a message to :meth:`on_message` and call
    :meth:`on_tick` after every wait."""

    def __init__(self, client: _Base, header, frames, tracker, timeout: float | None, now: float) -> None:
        self.client, self.header, self.frames, self.tracker, self.timeout = client, header, frames, tracker, timeout
        self.follows_job = isinstance(tracker, _JobTracker)
        self.resubmittable = header is not None and header.get("type") in P.JOB_MODES
        self.started = self.heard = self.pinged = self.asked = now
        self.attempts = 0
        self.resubmitted = False
        self.gone: set[str] = set()  # daemon_ids of daemons that lost the job: their late messages are stale
        self.check_id: str | None = None  # request id of the job's status check after a reconnect
        self.reconnect = False
        self.ping = False
        self.outbox: list[tuple[dict[str, Any], list[bytes]]] = [] if header is None else [(header, frames)]

    def wait_seconds(self, now: float) -> float:
        client = self.client
        return max(0.01, min(TICK_SECONDS, self.pinged + client.heartbeat - now, self.heard + client.silence - now))

    def on_message(self, header: dict[str, Any], frames: list[bytes], now: float) -> Any:
        """The call's answer when ``header`` brings it, else None; raises what the tracker raises."""
        self.heard = now
        if header.get("daemon_id") in self.gone:
            return None  # sent by the daemon that lost the job, before it went
        if self.follows_job and self.tracker.accepted and self._says_lost(header):
            self._lost(now)
            return None
        if self.check_id is not None and header.get("request_id") == self.check_id:
            return None  # the status check found the job: nothing to do
        return self.tracker.feed(header, frames)

    def _says_lost(self, header: dict[str, Any]) -> bool:
        """Whether ``header`` shows that the daemon which accepted the job no longer has it."""
        accepted_by, daemon_id = self.tracker.daemon_id, header.get("daemon_id")
        if accepted_by is not None and daemon_id is not None and daemon_id != accepted_by:
            return True  # another daemon instance answers at the endpoint: a restart
        asked = {self.tracker.request_id, self.check_id} - {None}
        return (
            header.get("type") == "error" and header.get("code") == "unknown_job" and header.get("request_id") in asked
        )

    def _lost(self, now: float) -> None:
        tracker = self.tracker
        if tracker.daemon_id is not None:
            self.gone.add(tracker.daemon_id)
        if not self.resubmittable or self.resubmitted:
            raise JobLost(self.client.endpoint, tracker.job_id, self.resubmitted)
        self.resubmitted = True
        request_id = self.client._request_id()  # new, so late answers about the lost job stay apart
        self.header = {**self.header, "request_id": request_id}
        tracker.restart(request_id)
        self.check_id = None
        self.outbox.append((self.header, self.frames))
        self.asked = now

    def on_tick(self, now: float) -> None:
        client, tracker = self.client, self.tracker
        if self.timeout is not None and now - self.started > self.timeout:
            raise DaemonError("timeout", f"no result within {self.timeout:g} s", tracker.job_id)
        # A daemon always answers a job request or fetch at once; heartbeats answered meanwhile
        # (perhaps by another daemon instance) do not make up for that answer.
        unanswered = self.follows_job and not tracker.accepted and now - self.asked >= client.silence
        if now - self.heard >= client.silence or unanswered:
            self.attempts += 1
            if self.attempts > client.retries:
                raise DaemonUnreachable(client.endpoint, now - self.started)
            self.reconnect = True
            if self.follows_job and tracker.accepted:
                self.outbox.append(({"type": "fetch", "job_id": tracker.job_id, "request_id": tracker.request_id}, []))
                self.check_id = client._request_id()
                self.outbox.append(({"type": "status", "job_id": tracker.job_id, "request_id": self.check_id}, []))
            elif self.header is not None:
                self.outbox.append((self.header, self.frames))  # never acknowledged: ask again
            self.heard = self.pinged = self.asked = now
        elif now - self.pinged >= client.heartbeat:
            self.ping, self.pinged = True, now


class _Handshakes:
    """A socket's security handshakes, watched through a ZeroMQ socket monitor.

    Without it a client the daemon refuses hears nothing at all: ZeroMQ retries the handshake
    forever and, once an attempt has failed, even blocks sends. :meth:`check` raises
    :class:`HandshakeFailed` once they fail for good: a refused key or CurveZMQ on one side only
    at once, failures without detail after ``UNDETAILED_FAILURES`` in a row.
    """

    def __init__(self, socket: zmq.Socket, endpoint: str, curve: CurveKeys | None) -> None:
        address = f"inproc://sa3-handshakes-{secrets.token_hex(8)}"
        socket.monitor(address, HANDSHAKE_EVENTS)
        # A plain socket on the same context: the asyncio client reads it without awaiting too.
        self.events = zmq.Context.shadow(socket.context.underlying).socket(zmq.PAIR)
        self.events.connect(address)
        self.endpoint, self.curve = endpoint, curve
        self.undetailed = 0

    def check(self) -> None:
        while self.events.poll(0):
            event = recv_monitor_message(self.events)
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.undetailed = 0
            elif kind != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                raise HandshakeFailed(self._why(kind, value))
            else:
                self.undetailed += 1
                if self.undetailed >= UNDETAILED_FAILURES:
                    raise HandshakeFailed(self._why(kind, value))

    def _why(self, kind: int, value: int) -> str:
        daemon = f"the daemon at {self.endpoint}"
        one_sided = kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        if self.curve is None:
            if one_sided:
                return (
                    f"{daemon} requires CurveZMQ keys and this client has none; give it its keys "
                    "(sa3 commands: SA3_CURVE_KEYS=DIR, the folder from `sa3 keys generate`)"
                )
            return (
                f"{daemon} broke off the connection's handshake: it may require CurveZMQ keys (this client "
                "has none; sa3 commands read SA3_CURVE_KEYS=DIR) or it may not be an sa3 daemon"
            )
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"{daemon} refused this client's CurveZMQ key; use a key it authorised (SA3_CURVE_CLIENT=NAME) "
                "or add this client's public key to its authorized_clients/ and restart it"
            )
        if one_sided:
            return (
                f"{daemon} does not use CurveZMQ keys but this client has some; connect without keys "
                "(unset SA3_CURVE_KEYS) or serve with --curve-keys"
            )
        # Without detail ZeroMQ does not say which (a daemon without keys shows as a mismatch only
        # on some attempts), so name both.
        return (
            f"the CurveZMQ handshake with {daemon} failed: either it does not use CurveZMQ keys (connect "
            "without: unset SA3_CURVE_KEYS) or its server key is not this client's server.key"
        )

    def close(self, socket: zmq.Socket) -> None:
        try:
            socket.disable_monitor()
        except zmq.ZMQError:
            pass  # the socket is closing anyway
        self.events.close(linger=0)


class _Base:
    def __init__(
        self,
        endpoint: str = P.DEFAULT_ENDPOINT,
        *,
        silence: float = 10.0,
        heartbeat: float = P.HEARTBEAT_SECONDS,
        retries: int = 3,
        curve: CurveKeys | None = None,
        encoding: str = "msgpack",
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.silence, self.heartbeat, self.retries = silence, heartbeat, retries
        self.curve, self.encoding = curve, encoding
        self._ids = itertools.count()
        self._prefix = secrets.token_hex(4)
        self.socket = None
        self._handshakes: _Handshakes | None = None
        self.daemon_version: str | None = None  # from the last capabilities (hello)

    def _heard(self, capabilities: dict[str, Any]) -> dict[str, Any]:
        self.daemon_version = str(capabilities.get("v", "1.0"))
        return capabilities

    def _refuse_newer(self, fields: dict[str, Any]) -> None:
        """A daemon of an older minor ignores a field it lacks and answers with other audio than the
        job asked for (the base model's for ``loras``, the padded take for ``exact_length``):
        refuse to send such a job, in one line."""
        for name in SILENTLY_IGNORED:
            added, lacks, _ = NEWER_FIELDS[name]
            if fields.get(name) and P.minor(self.daemon_version) < added:
                raise Sa3Error(
                    f"the daemon at {self.endpoint} speaks protocol {self.daemon_version}, which has {lacks} "
                    f"(added in 1.{added}); update it, or leave {name} out"
                )

    def _new_socket(self, context) -> Any:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # A fresh identity on every (re)connect: the daemon sees a new client and routes to it.
        socket.setsockopt(zmq.IDENTITY, b"sa3-" + secrets.token_hex(8).encode())
        if self.curve is not None:
            self.curve.apply(socket)
        handshakes = _Handshakes(socket, self.endpoint, self.curve)  # before connect: the first one counts
        try:
            socket.connect(self.endpoint)
        except zmq.ZMQError as err:
            handshakes.close(socket)
            socket.close(linger=0)
            raise Sa3Error(
                f"cannot connect to the daemon endpoint {self.endpoint!r} ({err}); write it as tcp://HOST:PORT "
                "or ipc://PATH"
            ) from None
        self._handshakes = handshakes
        return socket

    def close(self) -> None:
        if self.socket is not None:
            self._handshakes.close(self.socket)
            self.socket.close(linger=0)
            self.socket = None

    def reconnect(self) -> None:
        self.close()
        self.socket = self._new_socket(self.context)

    def _request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _frames(self, header: dict[str, Any], frames: list[bytes]) -> list[bytes]:
        return [P.encode_header({"v": P.PROTOCOL_VERSION, **header}, self.encoding), *frames]

    @staticmethod
    def _decode(raw: list[bytes]) -> tuple[dict[str, Any], list[bytes]] | None:
        try:
            header, _ = P.decode_header(raw[0], max_bytes=1 << 24)
        except P.ProtocolError:
            return None  # not from a daemon we understand: ignore it
        return header, raw[1:]


class Client(_Base):
    """Blocking client. See the module docstring for liveness, reconnects and restarts."""

    def __init__(self, endpoint: str = P.DEFAULT_ENDPOINT, *, context: zmq.Context | None = None, **options) -> None:
        super().__init__(endpoint, **options)
        self.context = context or zmq.Context.instance()
        self.socket = self._new_socket(self.context)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, header: dict[str, Any], frames: Sequence[bytes] = ()) -> None:
        """Send one raw message (for tools and tests); ``v`` is added when missing."""
        self.socket.send_multipart(self._frames(header, list(frames)), copy=False)

    def receive(self, timeout: float) -> tuple[dict[str, Any], list[bytes]] | None:
        """The next message, or None after ``timeout`` seconds (undecodable messages are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(int(left * 1000) + 1):
                return None
            message = self._decode(self.socket.recv_multipart())
            if message is not None:
                return message

    def _send_request(self, header: dict[str, Any], frames: list[bytes]) -> None:
        """Send, waiting at most ``silence`` seconds for the socket to take it (it blocks while no
        connection is up, e.g. after a failed handshake), so a send never hangs."""
        deadline = time.monotonic() + self.silence
        while not self.socket.poll(int(TICK_SECONDS * 1000), zmq.POLLOUT):
            self._handshakes.check()
            if time.monotonic() > deadline:
                raise DaemonUnreachable(self.endpoint, self.silence)
        self.send(header, frames)

    def _send_ping(self) -> None:
        try:
            self.socket.send_multipart(self._frames({"type": "heartbeat"}, []), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection up now: the silence rules reconnect

    def _exchange(self, header, frames, tracker, timeout: float | None) -> Result | dict[str, Any]:
        """Send (unless header is None) and follow ``tracker`` to the end (see :class:`_Call`)."""
        call = _Call(self, header, frames, tracker, timeout, time.monotonic())
        try:
            while True:
                if call.reconnect:
                    self.reconnect()
                    call.reconnect = False
                while call.outbox:
                    self._send_request(*call.outbox.pop(0))
                if call.ping:
                    self._send_ping()
                    call.ping = False
                message = self.receive(call.wait_seconds(time.monotonic()))
                self._handshakes.check()
                now = time.monotonic()
                if message is not None:
                    done = call.on_message(*message, now)
                    if done is not None:
                        return done
                call.on_tick(now)
        except KeyboardInterrupt:
            if call.resubmittable:
                self._cancel_on_interrupt(call)
            raise

    def _cancel_on_interrupt(self, call: _Call) -> None:
        """Ctrl-C while a job this call asked for waits: cancel it, so it does not hold up the
        daemon's queue. Waits at most ``INTERRUPT_SECONDS`` for the daemon to confirm (the socket
        drops what is unsent when it closes); never raises, the KeyboardInterrupt goes on."""
        tracker, deadline = call.tracker, time.monotonic() + INTERRUPT_SECONDS
        try:
            while tracker.job_id is None and not call.outbox:  # asked, not yet acknowledged
                message = self.receive(max(0.0, deadline - time.monotonic()))
                if message is None:
                    return
                if message[0].get("type") == "queued" and message[0].get("request_id") == tracker.request_id:
                    tracker.job_id = message[0]["job_id"]
            if tracker.job_id is None:
                return
            request_id = self._request_id()
            cancel = {"type": "cancel", "job_id": tracker.job_id, "request_id": request_id}
            self.socket.send_multipart(self._frames(cancel, []), zmq.NOBLOCK)
            while (message := self.receive(max(0.0, deadline - time.monotonic()))) is not None:
                if message[0].get("request_id") == request_id:
                    return  # `cancelled`, or `job_finished` when it ended first
        except zmq.ZMQError:
            pass  # best effort: the daemon cancels a job whose client went quiet anyway

    def _call(self, header: dict[str, Any], reply_type: str, timeout: float | None = None) -> dict[str, Any]:
        request_id = self._request_id()
        header = {**header, "request_id": request_id}
        tracker = _ReplyTracker(request_id, reply_type)
        return self._exchange(header, [], tracker, timeout)

    # ------------------------------------------------------------------ requests
    def hello(self, client: str = "sa3 python client") -> dict[str, Any]:
        return self._heard(self._call({"type": "hello", "client": client}, "capabilities"))

    def _check_fields(self, fields: dict[str, Any]) -> None:
        if any(fields.get(name) for name in SILENTLY_IGNORED):
            if self.daemon_version is None:
                self.hello()
            self._refuse_newer(fields)

    def status(self, job_id: str | None = None) -> dict[str, Any]:
        return self._call({"type": "status", **({"job_id": job_id} if job_id else {})}, "status")

    def ping(self) -> float:
        """Round-trip time of a heartbeat, in seconds."""
        started = time.perf_counter()
        self._call({"type": "heartbeat"}, "heartbeat")
        return time.perf_counter() - started

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job; returns the daemon's ``cancelled`` reply once the job has stopped."""
        return self._call({"type": "cancel", "job_id": job_id}, "cancelled")

    def submit(self, mode: str, prompt: str, **fields) -> str:
        """Queue a job and return its job id without waiting for the result (see :meth:`wait`).

        The daemon cancels a job whose client it neither hears from nor reaches for
        ``protocol.ABANDON_SECONDS``: call :meth:`wait` (or :meth:`status`) before that."""
        self._check_fields(fields)
        request_id = self._request_id()
        header, frames = job_message(mode, prompt, **fields)
        header["request_id"] = request_id
        tracker = _ReplyTracker(request_id, "queued")
        return self._exchange(header, frames, tracker, None)["job_id"]

    def wait(self, job_id: str, progress: ProgressFn | None = None, timeout: float | None = None) -> Result:
        """Take over a job (``fetch``) and wait for its result; works after a reconnect. A daemon
        that restarted has lost the job: :class:`JobLost` (there is no request to send again)."""
        request_id = self._request_id()
        tracker = _JobTracker(request_id, progress, job_id)
        return self._exchange({"type": "fetch", "job_id": job_id, "request_id": request_id}, [], tracker, timeout)

    def run(
        self, mode: str, prompt: str, progress: ProgressFn | None = None, timeout: float | None = None, **fields
    ) -> Result:
        self._check_fields(fields)
        request_id = self._request_id()
        header, frames = job_message(mode, prompt, **fields)
        header["request_id"] = request_id
        return self._exchange(header, frames, _JobTracker(request_id, progress), timeout)

    def generate(
        self, prompt: str, *, progress: ProgressFn | None = None, timeout: float | None = None, **fields
    ) -> Result:
        """Text to audio; length as ``samples`` (at ``sample_rate``), ``seconds`` or ``bars`` + ``bpm``."""
        return self.run("generate", prompt, progress, timeout, **fields)

    def inpaint(self, audio: np.ndarray, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        """Regenerate ``regions`` (samples at ``audio_rate``) or ``regions_seconds`` of ``audio``."""
        return self.run("inpaint", prompt, progress, timeout, audio=audio, **fields)

    def continue_(self, audio: np.ndarray, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        """Extend ``audio`` by ``samples`` / ``seconds`` / ``bars`` of new audio."""
        return self.run("continue", prompt, progress, timeout, audio=audio, **fields)

    def transform(self, audio: np.ndarray, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        """``audio`` made again after ``prompt``, the same length (protocol 1.4); ``init_noise_level``
        0 < level <= 1 (the daemon's default 0.9 when left out)."""
        return self.run("transform", prompt, progress, timeout, audio=audio, **fields)


class AsyncClient(_Base):
    """asyncio client (zmq.asyncio) with the same calls as :class:`Client`, awaited. A cancelled
    task does not cancel its job on the daemon; the daemon does when the client goes quiet."""

    def __init__(self, endpoint: str = P.DEFAULT_ENDPOINT, *, context: zmq.asyncio.Context | None = None, **options):
        super().__init__(endpoint, **options)
        self.context = context or zmq.asyncio.Context.instance()
        self.socket = self._new_socket(self.context)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    async def send(self, header: dict[str, Any], frames: Sequence[bytes] = ()) -> None:
        await self.socket.send_multipart(self._frames(header, list(frames)), copy=False)

    async def receive(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not await self.socket.poll(int(left * 1000) + 1):
                return None
            message = self._decode(await self.socket.recv_multipart())
            if message is not None:
                return message

    async def _send_request(self, header: dict[str, Any], frames: list[bytes]) -> None:
        deadline = time.monotonic() + self.silence
        while not await self.socket.poll(int(TICK_SECONDS * 1000), zmq.POLLOUT):
            self._handshakes.check()
            if time.monotonic() > deadline:
                raise DaemonUnreachable(self.endpoint, self.silence)
        await self.send(header, frames)

    async def _exchange(self, header, frames, tracker, timeout: float | None):
        call = _Call(self, header, frames, tracker, timeout, time.monotonic())
        while True:
            if call.reconnect:
                self.reconnect()
                call.reconnect = False
            while call.outbox:
                await self._send_request(*call.outbox.pop(0))
            if call.ping:
                if await self.socket.poll(0, zmq.POLLOUT):  # never wait for a heartbeat to leave
                    await self.send({"type": "heartbeat"})
                call.ping = False
            message = await self.receive(call.wait_seconds(time.monotonic()))
            self._handshakes.check()
            now = time.monotonic()
            if message is not None:
                done = call.on_message(*message, now)
                if done is not None:
                    return done
            call.on_tick(now)

    async def _call(self, header, reply_type, timeout=None):
        request_id = self._request_id()
        return await self._exchange(
            {**header, "request_id": request_id}, [], _ReplyTracker(request_id, reply_type), timeout
        )

    async def hello(self, client: str = "sa3 python asyncio client") -> dict[str, Any]:
        return self._heard(await self._call({"type": "hello", "client": client}, "capabilities"))

    async def _check_fields(self, fields: dict[str, Any]) -> None:
        if any(fields.get(name) for name in SILENTLY_IGNORED):
            if self.daemon_version is None:
                await self.hello()
            self._refuse_newer(fields)

    async def status(self, job_id: str | None = None) -> dict[str, Any]:
        return await self._call({"type": "status", **({"job_id": job_id} if job_id else {})}, "status")

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._call({"type": "heartbeat"}, "heartbeat")
        return time.perf_counter() - started

    async def submit(self, mode: str, prompt: str, **fields) -> str:
        await self._check_fields(fields)
        request_id = self._request_id()
        header, frames = job_message(mode, prompt, **fields)
        header["request_id"] = request_id
        return (await self._exchange(header, frames, _ReplyTracker(request_id, "queued"), None))["job_id"]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call({"type": "cancel", "job_id": job_id}, "cancelled")

    async def wait(self, job_id: str, progress: ProgressFn | None = None, timeout: float | None = None) -> Result:
        request_id = self._request_id()
        tracker = _JobTracker(request_id, progress, job_id)
        return await self._exchange({"type": "fetch", "job_id": job_id, "request_id": request_id}, [], tracker, timeout)

    async def run(self, mode: str, prompt: str, progress=None, timeout=None, **fields) -> Result:
        await self._check_fields(fields)
        request_id = self._request_id()
        header, frames = job_message(mode, prompt, **fields)
        header["request_id"] = request_id
        return await self._exchange(header, frames, _JobTracker(request_id, progress), timeout)

    async def generate(self, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        return await self.run("generate", prompt, progress, timeout, **fields)

    async def inpaint(self, audio, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        return await self.run("inpaint", prompt, progress, timeout, audio=audio, **fields)

    async def continue_(self, audio, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        return await self.run("continue", prompt, progress, timeout, audio=audio, **fields)

    async def transform(self, audio, prompt: str, *, progress=None, timeout=None, **fields) -> Result:
        return await self.run("transform", prompt, progress, timeout, audio=audio, **fields)


# ---------------------------------------------------------------------------- for `sa3 generate --daemon`
def curve_from_env() -> CurveKeys | None:
    """Client keys from ``SA3_CURVE_KEYS=DIR`` (and ``SA3_CURVE_CLIENT=NAME``, default ``client``)."""
    folder = os.environ.get("SA3_CURVE_KEYS")
    return CurveKeys.from_dir(folder, os.environ.get("SA3_CURVE_CLIENT", "client")) if folder else None


# Request fields a daemon of an older minor ignores in silence: (minor that added it, what it is, the flag).
NEWER_FIELDS = {
    "scale_lock_db": (1, "no scale lock", "drop --scale-lock to use its model's setting"),
    "tail_seconds": (2, "no per-request tail", "drop --tail to use its model's setting"),
    "negative_prompt": (4, "no negative prompts", "drop --negative-prompt"),
    "init_noise_level": (4, "no transform jobs", "run transform without --daemon"),
    "model": (4, "one model per daemon", "drop --model to use the model it serves"),
    "loras": (LORAS_MINOR, "no LoRA adapters", "drop --lora"),
    "exact_length": (EXACT_LENGTH_MINOR, "no exact-length mode", "drop --exact-length (it pads as released)"),
}


def generate_via_daemon(
    endpoint: str, mode: str, prompt: str, args, samples: int | None = None, audio=None, regions=None
) -> np.ndarray:
    """What ``sa3 generate|inpaint|continue|transform --daemon`` runs: float32 [variations, 2, n] at 44.1 kHz.

    ``samples`` (generate: the clip; continue: the new part) and ``regions`` (sa3core Region
    objects) are at 44.1 kHz, as is ``audio`` [2, n]. Ctrl-C cancels the job on the daemon, then
    raises KeyboardInterrupt (the CLI's one line and status 130).
    """
    from tqdm import tqdm

    check_endpoint(endpoint)  # `--daemon banana`: one line before anything starts

    bar = None

    def progress(step: int, total: int) -> None:
        if bar is not None:
            bar.total, bar.n = total, step
            bar.refresh()

    fields = dict(steps=args.steps, cfg=args.cfg, seed=args.seed, variations=args.variations)
    fields["sample_rate"] = timebase.SAMPLE_RATE
    if samples is not None:
        fields["samples"] = samples
    if regions is not None:
        fields["regions"] = regions
    if getattr(args, "bpm", None) is not None:  # the song's tempo: the model keeps its beat
        fields.update(bpm=args.bpm, meter=args.meter)
    if getattr(args, "scale_lock", None) is not None:
        fields["scale_lock_db"] = args.scale_lock
    if getattr(args, "tail", None) is not None:
        fields["tail_seconds"] = args.tail
    if getattr(args, "negative_prompt", None) is not None:
        fields["negative_prompt"] = args.negative_prompt
    if mode == "transform":
        fields["init_noise_level"] = args.init_noise_level
    if getattr(args, "model", None) is not None:  # a model the daemon serves, by name
        fields["model"] = args.model
    if getattr(args, "loras", None):  # adapters of the daemon's LoRA folder, by name (protocol 1.5)
        fields["loras"] = list(args.loras)
    if getattr(args, "exact_length", False):  # no released headroom (protocol 1.6)
        fields["exact_length"] = True
    try:
        with Client(endpoint, curve=curve_from_env(), silence=3.0, retries=0) as client:
            # no daemon there: say so in seconds, not after a long job's patience
            capabilities = client.hello()
            daemon_version = str(capabilities.get("v", "1.0"))
            if not getattr(args, "quiet", False):  # its total from the start: the steps asked for, or the model's
                total = args.steps or capabilities.get("default_steps") or 1
                bar = tqdm(total=total, desc=f"{mode} (daemon)", unit="step", leave=False)
            for name, (added, lacks, instead) in NEWER_FIELDS.items():
                if name in fields and P.minor(daemon_version) < added:
                    raise Sa3Error(
                        f"the daemon speaks protocol {daemon_version}, which has {lacks} (added in 1.{added}); "
                        f"update it, or {instead}"
                    )
            client.silence, client.retries = 10.0, 2
            return client.run(mode, prompt, progress, audio=audio, **fields).audio
    finally:
        if bar is not None:
            bar.close()
