"""Python client of the sa3 daemon: blocking (:class:`Client`) and asyncio (:class:`AsyncClient`).

    with Client("tcp://127.0.0.1:5557") as client:
        take = client.generate("dusty breakbeat", bars=4, bpm=120, sample_rate=48000, progress=print)
        take.audio  # float32 [variations, 2, 384000]

Liveness: while waiting, the client sends a ``heartbeat`` after ``heartbeat`` seconds without
hearing from the daemon. After ``silence`` seconds of silence it reconnects with a new DEALER
socket (a fresh identity) and sends ``fetch`` for its job (or the request again, if the daemon
never acknowledged it), up to ``retries`` times; then it raises :class:`DaemonUnreachable`.
``timeout`` on a call bounds the whole call. A client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from sa3core import timebase
from sa3core.errors import Sa3Error

from . import protocol as P
from .keys import CurveKeys

ProgressFn = Callable[[int, int], None]


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
    frames = []
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio  # (channels, samples)
        header["audio"] = P.AudioInfo(audio_rate, audio.shape[0], audio.shape[1]).as_header()
        frames.append(P.pack_audio(audio))
    return header, frames


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


class _Base:
    def __init__(
        self,
        endpoint: str = P.DEFAULT_ENDPOINT,
        *,
        silence: float = 10.0,
        heartbeat: float = 2.0,
        retries: int = 3,
        curve: CurveKeys | None = None,
        encoding: str = "msgpack",
    ) -> None:
        self.endpoint, self.silence, self.heartbeat, self.retries = endpoint, silence, heartbeat, retries
        self.curve, self.encoding = curve, encoding
        self._ids = itertools.count()
        self._prefix = secrets.token_hex(4)
        self.socket = None

    def _new_socket(self, context) -> Any:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # A fresh identity on every (re)connect: the daemon sees a new client and routes to it.
        socket.setsockopt(zmq.IDENTITY, b"sa3-" + secrets.token_hex(8).encode())
        if self.curve is not None:
            self.curve.apply(socket)
        socket.connect(self.endpoint)
        return socket

    def _request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _frames(self, header: dict[str, Any], frames: list[bytes]) -> list[bytes]:
        return [P.encode_header(header, self.encoding), *frames]

    @staticmethod
    def _decode(raw: list[bytes]) -> tuple[dict[str, Any], list[bytes]] | None:
        try:
            header, _ = P.decode_header(raw[0], max_bytes=1 << 24)
        except P.ProtocolError:
            return None  # not from a daemon we understand: ignore it
        return header, raw[1:]


class Client(_Base):
    """Blocking client. See the module docstring for liveness and reconnects."""

    def __init__(self, endpoint: str = P.DEFAULT_ENDPOINT, *, context: zmq.Context | None = None, **options) -> None:
        super().__init__(endpoint, **options)
        self.context = context or zmq.Context.instance()
        self.socket = self._new_socket(self.context)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reconnect(self) -> None:
        self.close()
        self.socket = self._new_socket(self.context)

    def send(self, header: dict[str, Any], frames: Sequence[bytes] = ()) -> None:
        """Send one raw message (for tools and tests); ``v`` is added when missing."""
        header = {"v": P.PROTOCOL_VERSION, **header}
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

    def _exchange(self, header, frames, tracker: _JobTracker, timeout: float | None) -> Result | dict[str, Any]:
        """Send (unless header is None) and follow ``tracker`` to the end, reconnecting on silence."""
        started = time.monotonic()
        if header is not None:
            self.send(header, frames)
        heard = pinged = time.monotonic()
        attempts = 0
        while True:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                raise DaemonError("timeout", f"no result within {timeout:g} s", tracker.job_id)
            message = self.receive(min(self.heartbeat, 0.25 + max(0.0, self.silence - (now - heard))))
            now = time.monotonic()
            if message is not None:
                heard = now
                done = tracker.feed(*message)
                if done is not None:
                    return done
                continue
            if now - heard >= self.silence:
                attempts += 1
                if attempts > self.retries:
                    raise DaemonUnreachable(self.endpoint, now - started)
                self.reconnect()
                if tracker.job_id is not None:
                    self.send({"type": "fetch", "job_id": tracker.job_id, "request_id": tracker.request_id})
                elif header is not None:
                    self.send(header, frames)  # never acknowledged: ask again
                heard = pinged = time.monotonic()
            elif now - pinged >= self.heartbeat:
                self.send({"type": "heartbeat"})
                pinged = now

    def _call(self, header: dict[str, Any], reply_type: str, timeout: float | None = None) -> dict[str, Any]:
        request_id = self._request_id()
        header = {**header, "request_id": request_id}
        tracker = _ReplyTracker(request_id, reply_type)
        return self._exchange(header, [], tracker, timeout)

    # ------------------------------------------------------------------ requests
    def hello(self, client: str = "sa3 python client") -> dict[str, Any]:
        return self._call({"type": "hello", "client": client}, "capabilities")

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
        """Queue a job and return its job id without waiting for the result (see :meth:`wait`)."""
        request_id = self._request_id()
        header, frames = job_message(mode, prompt, **fields)
        header["request_id"] = request_id
        tracker = _ReplyTracker(request_id, "queued")
        return self._exchange(header, frames, tracker, None)["job_id"]

    def wait(self, job_id: str, progress: ProgressFn | None = None, timeout: float | None = None) -> Result:
        """Take over a job (``fetch``) and wait for its result; works after a reconnect or restart."""
        request_id = self._request_id()
        tracker = _JobTracker(request_id, progress, job_id)
        return self._exchange({"type": "fetch", "job_id": job_id, "request_id": request_id}, [], tracker, timeout)

    def run(
        self, mode: str, prompt: str, progress: ProgressFn | None = None, timeout: float | None = None, **fields
    ) -> Result:
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


class _ReplyTracker(_JobTracker):
    """Waits for one reply of ``reply_type`` to a request (errors raise)."""

    def __init__(self, request_id: str, reply_type: str) -> None:
        super().__init__(request_id, None)
        self.reply_type = reply_type

    def feed(self, header, frames):
        if header.get("request_id") != self.request_id:
            return None
        if header.get("type") == self.reply_type:
            return header
        if header.get("type") == "error":
            raise DaemonError(header.get("code", "internal"), header.get("message", ""), header.get("job_id"))
        return None


class AsyncClient(_Base):
    """asyncio client (zmq.asyncio) with the same calls as :class:`Client`, awaited."""

    def __init__(self, endpoint: str = P.DEFAULT_ENDPOINT, *, context: zmq.asyncio.Context | None = None, **options):
        super().__init__(endpoint, **options)
        self.context = context or zmq.asyncio.Context.instance()
        self.socket = self._new_socket(self.context)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def reconnect(self) -> None:
        self.close()
        self.socket = self._new_socket(self.context)

    async def send(self, header: dict[str, Any], frames: Sequence[bytes] = ()) -> None:
        header = {"v": P.PROTOCOL_VERSION, **header}
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

    async def _exchange(self, header, frames, tracker: _JobTracker, timeout: float | None):
        started = time.monotonic()
        if header is not None:
            await self.send(header, frames)
        heard = pinged = time.monotonic()
        attempts = 0
        while True:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                raise DaemonError("timeout", f"no result within {timeout:g} s", tracker.job_id)
            message = await self.receive(min(self.heartbeat, 0.25 + max(0.0, self.silence - (now - heard))))
            now = time.monotonic()
            if message is not None:
                heard = now
                done = tracker.feed(*message)
                if done is not None:
                    return done
                continue
            if now - heard >= self.silence:
                attempts += 1
                if attempts > self.retries:
                    raise DaemonUnreachable(self.endpoint, now - started)
                self.reconnect()
                if tracker.job_id is not None:
                    await self.send({"type": "fetch", "job_id": tracker.job_id, "request_id": tracker.request_id})
                elif header is not None:
                    await self.send(header, frames)
                heard = pinged = time.monotonic()
            elif now - pinged >= self.heartbeat:
                await self.send({"type": "heartbeat"})
                pinged = now

    async def _call(self, header, reply_type, timeout=None):
        request_id = self._request_id()
        return await self._exchange(
            {**header, "request_id": request_id}, [], _ReplyTracker(request_id, reply_type), timeout
        )

    async def hello(self, client: str = "sa3 python asyncio client") -> dict[str, Any]:
        return await self._call({"type": "hello", "client": client}, "capabilities")

    async def status(self, job_id: str | None = None) -> dict[str, Any]:
        return await self._call({"type": "status", **({"job_id": job_id} if job_id else {})}, "status")

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._call({"type": "heartbeat"}, "heartbeat")
        return time.perf_counter() - started

    async def submit(self, mode: str, prompt: str, **fields) -> str:
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


# ---------------------------------------------------------------------------- for `sa3 generate --daemon`
def curve_from_env() -> CurveKeys | None:
    """Client keys from ``SA3_CURVE_KEYS=DIR`` (and ``SA3_CURVE_CLIENT=NAME``, default ``client``)."""
    folder = os.environ.get("SA3_CURVE_KEYS")
    return CurveKeys.from_dir(folder, os.environ.get("SA3_CURVE_CLIENT", "client")) if folder else None


def generate_via_daemon(
    endpoint: str, mode: str, prompt: str, args, samples: int | None = None, audio=None, regions=None
) -> np.ndarray:
    """What ``sa3 generate|inpaint|continue --daemon`` runs: float32 [variations, 2, n] at 44.1 kHz.

    ``samples`` (generate: the clip; continue: the new part) and ``regions`` (sa3core Region
    objects) are at 44.1 kHz, as is ``audio`` [2, n].
    """
    from tqdm import tqdm

    bar = None if getattr(args, "quiet", False) else tqdm(total=1, desc=f"{mode} (daemon)", unit="step", leave=False)

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
    try:
        with Client(endpoint, curve=curve_from_env(), silence=3.0, retries=0) as client:
            # no daemon there: say so in seconds, not after a long job's patience
            daemon_version = str(client.hello().get("v", "1.0"))
            if "scale_lock_db" in fields and P.minor(daemon_version) < 1:
                raise Sa3Error(
                    f"the daemon speaks protocol {daemon_version}, which has no scale lock (added in 1.1); "
                    "update it, or drop --scale-lock to use its model's setting"
                )
            if "tail_seconds" in fields and P.minor(daemon_version) < 2:
                raise Sa3Error(
                    f"the daemon speaks protocol {daemon_version}, which has no per-request tail (added in 1.2); "
                    "update it, or drop --tail to use its model's setting"
                )
            client.silence, client.retries = 10.0, 2
            return client.run(mode, prompt, progress, audio=audio, **fields).audio
    finally:
        if bar is not None:
            bar.close()
