"""The WSGI application of the HTTP contract (docs/http.md): routes, JSON in and out, polling.

Every response is JSON with ``success``; a bad request is 400 with an ``error`` a person can read,
an unknown session 404, a full queue or a stopping server 503. Jobs go to the shared
:class:`~bridge.engine.Engine`; a session id is the job's id. A finished job's whole poll reply
(the base64 WAV included) is built once, on the engine's worker while the job shows ``encoding``,
so a poll of a finished job only sends bytes that are ready.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from sa3core import timebase
from sa3core.errors import Sa3Error

from .. import protocol as P
from ..daemon import is_loopback_host
from . import prompts, requests, wav
from .loras import listing, pools, prompt_pool

log = logging.getLogger("sa3.serve")

SAMPLING_PROGRESS = 90  # progress runs 0..90 while sampling
ENCODING_PROGRESS = 92
DEFAULT_JOB_SECONDS = 10.0  # the queue estimate before any job has finished
# Words in a failed poll's error that make gary4juce take the failure for a model warming up and
# poll forever; a failure never says them (initializing -> initialising, and so on).
WARM_UP_WORDS = {
    "loading weights": "reading weights",
    "loading model": "reading model",
    "downloading": "fetching",
    "download": "fetch",
    "initializing": "initialising",
    "huggingface": "Hugging Face",
    "warmup": "warm-up",
    "warming": "heating",
}


@dataclass
class HttpSession:
    """What the HTTP side keeps about a job it submitted (the engine job's ``client``)."""

    kind: str  # generate | loop | transform | continue
    echo: dict[str, Any]
    loras: list = field(default_factory=list)
    shift: str = "default"
    sampler_type: str | None = None
    last_polled: float = field(default_factory=time.monotonic)
    polled_after_end: bool = False


def readable_failure(message: str) -> str:
    """``message`` without the words gary4juce reads as a model warming up (it would poll forever)."""
    for word, instead in WARM_UP_WORDS.items():
        lower = message.lower()
        while word in lower:
            at = lower.index(word)
            message = message[:at] + instead + message[at + len(word) :]
            lower = message.lower()
    return message


class HttpError(Exception):
    """An answer other than 200: ``status``, the one-line ``message``, and for a 405 the methods allowed."""

    def __init__(self, status: int, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


STATUS_TEXT = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


class App:
    """``App(engine, token=None)``: the contract over ``engine`` (and its LoRA folder,
    ``engine.loras``); ``token``, when set, is required (``Authorization: Bearer TOKEN``) from every
    client that is not on this machine."""

    def __init__(self, engine, token: str | None = None) -> None:
        self.engine = engine
        self.token = token
        self.routes = {
            "/health": {"GET": self.health},
            "/ready": {"GET": self.ready},
            "/load": {"POST": self.load},
            "/unload": {"POST": self.unload},
            "/reload": {"POST": self.reload},
            "/loras": {"GET": self.loras},
            "/prompts": {"GET": self.prompts},
            **{path: {"POST": self.submit} for path in requests.ENDPOINTS},
        }

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        allow = None
        try:
            status, body = self.respond(environ)
        except HttpError as err:
            status, body, allow = err.status, _json({"success": False, "error": err.message}), err.allow
        except Exception as err:  # a bug answers 500 and the server goes on
            log.exception("internal error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status = 500
            body = _json({"success": False, "error": f"internal error in sa3 ({type(err).__name__}); see its log"})
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if allow is not None:
            headers.append(("Allow", allow))
        start_response(STATUS_TEXT[status], headers)
        return [body]

    def respond(self, environ) -> tuple[int, bytes]:
        self.check_token(environ)
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        for prefix, handler in (("/poll_status/", self.poll), ("/cancel/", self.cancel)):
            if path.startswith(prefix):
                wanted = "GET" if handler == self.poll else "POST"
                if method != wanted:
                    raise HttpError(405, f"{path} takes {wanted}, not {method}", allow=wanted)
                return handler(path[len(prefix) :], query)
        route = self.routes.get(path)
        if route is None:
            raise HttpError(404, f"no endpoint {path!r} here; see docs/http.md for the ones sa3 serves")
        if method not in route:
            raise HttpError(405, f"{path} takes {' or '.join(route)}, not {method}", allow=", ".join(route))
        if method == "POST" and route[method] == self.submit:
            return self.submit(path, read_json(environ))
        return route[method](query)

    def check_token(self, environ) -> None:
        if self.token is None or is_loopback_host(environ.get("REMOTE_ADDR", "")):
            return
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise HttpError(401, "this server needs its token from other machines: send 'Authorization: Bearer TOKEN'")

    # ------------------------------------------------------------------ status
    def health(self, query) -> tuple[int, bytes]:
        """Answers at once, whatever runs: nothing here waits for the model or loads one."""
        engine = self.engine
        running = engine.running
        return 200, _json(
            {
                "success": True,
                "status": "healthy",
                "service": "sa3",
                "state": "stopping" if engine.stopping else "serving",
                "model": engine.default_model,
                "models": [self._describe(name) for name in engine.models],
                "model_loaded": True,
                "model_loading": False,
                "model_error": None,
                "loras": [listing(adapter) for adapter in engine.loras.adapters],
                "lora_support": True,
                "sample_rate": timebase.SAMPLE_RATE,
                "max_seconds": requests.limit_for(engine.limits),
                "queue": {
                    "running": running is not None,
                    "waiting": len(engine.waiting()),
                    "limit": engine.queue_limit,
                },
                "uptime": round(time.monotonic() - engine.started, 3),
            }
        )

    def _describe(self, name: str) -> dict[str, Any]:
        pipeline = self.engine.models[name]
        return {
            "name": name,
            "family": pipeline.family.name,
            "default_steps": pipeline.settings.steps,
            "default_cfg": pipeline.settings.cfg,
            "max_seconds": requests.limit_for(self.engine.model_limits[name]),
        }

    def ready(self, query) -> tuple[int, bytes]:
        if self.engine.stopping:
            return 503, _json({"success": False, "ready": False, "error": "sa3 is shutting down"})
        return 200, _json({"success": True, "ready": True, "model": self.engine.default_model})

    def load(self, query) -> tuple[int, bytes]:
        """Every served model loaded when sa3 serve started; there is nothing left to load."""
        if self.engine.stopping:
            return 503, _json({"success": False, "error": "sa3 is shutting down"})
        reply = {"status": "already_loaded", "load_seconds": 0.0, "model": self.engine.default_model}
        return 200, _json({"success": True, **reply, "sample_rate": timebase.SAMPLE_RATE})

    def _refuse_while_busy(self) -> None:
        if not self.engine.idle:
            raise HttpError(409, "a job is running or waiting; retry when the server is idle")

    def unload(self, query) -> tuple[int, bytes]:
        self._refuse_while_busy()
        message = (
            "sa3 keeps its models loaded while it serves (its ZeroMQ side uses them too); stop sa3 serve to free them"
        )
        return 200, _json({"success": True, "status": "kept_loaded", "message": message})

    def reload(self, query) -> tuple[int, bytes]:
        """Read the LoRA folder again and check each adapter against the models (which stay as they are)."""
        self._refuse_while_busy()
        previous = self.engine.loras.names
        adapters = self.engine.rescan_loras()
        return 200, _json({"success": True, "previous": previous, "loras": [listing(a) for a in adapters]})

    def loras(self, query) -> tuple[int, bytes]:
        folder = self.engine.loras.folder
        return 200, _json(
            {
                "success": True,
                "loras": [listing(adapter) for adapter in self.engine.loras.adapters],
                "default_lora": None,
                "lora_dir": str(folder) if folder is not None else None,
                "model_loaded": True,
                "can_apply": True,
            }
        )

    def prompts(self, query) -> tuple[int, bytes]:
        selected: list[str] = []
        for value in query.get("lora", []):
            for name in (piece.strip().lower() for piece in value.split(",")):
                if name and name not in selected:
                    selected.append(name)
        folder = self.engine.loras.folder
        dice, source, missing = prompts.dice(selected, lambda name: prompt_pool(folder, name))
        return 200, _json(
            {
                "success": True,
                "loras": selected,
                "missing_loras": missing,
                "available_loras": pools(folder),
                "prompts": {"version": prompts.POOLS_VERSION, "dice": dice, "source": source},
            }
        )

    # ------------------------------------------------------------------ jobs
    def submit(self, path: str, body: dict) -> tuple[int, bytes]:
        try:
            submission = requests.ENDPOINTS[path](body, self.engine)
        except Sa3Error as err:
            raise HttpError(400, str(err)) from None
        session = HttpSession(
            submission.kind,
            submission.echo,
            [lora.as_json() for lora in submission.loras],
            submission.shift,
            submission.sampler_type,
        )
        try:
            job = self.engine.submit(submission.request, submission.model, "http", self._pack, session)
        except P.ProtocolError as err:  # an adapter the folder has not or that does not fit: the request's fault
            raise HttpError(400 if err.code in ("bad_field", "invalid_request") else 503, err.message) from None
        request = submission.request
        reply = {
            "success": True,
            "session_id": job.id,
            "seed": request.seed,
            "mode": submission.kind,
            "model": submission.model,
            **submission.echo,
        }
        return 200, _json(reply)

    def _find(self, session_id: str):
        job = self.engine.job(session_id, "http")
        if job is None:
            shown = session_id if len(session_id) <= 40 else session_id[:37] + "..."
            minutes = self.engine.result_ttl / 60
            raise HttpError(
                404,
                f"unknown session {shown!r}: never started here, already consumed, or finished over {minutes:g} minutes ago",
            )
        return job

    def poll(self, session_id: str, query) -> tuple[int, bytes]:
        job = self._find(session_id)
        session: HttpSession = job.client
        session.last_polled = time.monotonic()
        consume = query.get("consume", ["0"])[-1].strip().lower() not in ("0", "", "false", "no")
        state = job.state  # read once: the worker may move it on meanwhile
        if state in ("done", "failed", "cancelled"):
            session.polled_after_end = True
            if consume:
                self.engine.forget(job)
            if state == "done":
                return 200, job.result[0]
            return 200, _json(self._failed(job, session))
        return 200, _json(self._in_progress(job, session, state))

    def _in_progress(self, job, session: HttpSession, state: str) -> dict[str, Any]:
        total = job.total or job.steps_used or job.request.steps or self.engine.models[job.model].settings.steps
        reply = {
            "success": True,
            "session_id": job.id,
            "generation_in_progress": True,
            "transform_in_progress": session.kind == "transform",
            "step": job.step,
            "total_steps": total,
        }
        if state == "queued":
            position = max(1, self.engine.position(job))
            estimate = round(position * self._seconds_per_job())
            queue_status = {
                "status": "queued",
                "position": position,
                "estimated_seconds": estimate,
                "message": f"waiting for {position} job{'s' if position > 1 else ''} ahead",
            }
            return reply | {"status": "queued", "progress": 0, "queue_status": queue_status}
        if job.stage == "encoding":
            return reply | {"status": "encoding", "progress": ENCODING_PROGRESS, "queue_status": {"status": "ready"}}
        progress = min(SAMPLING_PROGRESS, int(job.step / total * SAMPLING_PROGRESS)) if total else 0
        return reply | {"status": "generating", "progress": progress, "queue_status": {"status": "ready"}}

    def _failed(self, job, session: HttpSession) -> dict[str, Any]:
        if job.state == "cancelled":
            reasons = {
                "shutdown": "cancelled: the server is shutting down",
                "abandoned": "cancelled: nobody polled this session for a minute",
            }
            error = reasons.get(job.cancel_reason, "cancelled")
        else:
            error = job.error[1] or "the job failed; see the server's log"
        return {
            "success": False,
            "session_id": job.id,
            "generation_in_progress": False,
            "transform_in_progress": False,
            "progress": 0,
            "step": job.step,
            "total_steps": job.total,
            "status": "failed",
            "queue_status": {},
            "error": readable_failure(error),
        }

    def _seconds_per_job(self) -> float:
        finished = [job.seconds_elapsed for job in self.engine.jobs() if job.state == "done"]
        return sum(finished[-8:]) / len(finished[-8:]) if finished else DEFAULT_JOB_SECONDS

    def cancel(self, session_id: str, query) -> tuple[int, bytes]:
        """POST /cancel/<id> (sa3's own): a waiting job ends now, a running one at its next step."""
        job = self._find(session_id)
        try:
            ended = self.engine.cancel(job, "cancel")
        except P.ProtocolError as err:
            raise HttpError(409, err.message) from None
        return 200, _json({"success": True, "session_id": job.id, "status": "cancelled" if ended else "cancelling"})

    # ------------------------------------------------------------------ results (on the worker)
    def _pack(self, job, audio) -> list[bytes]:
        """The finished job's whole poll reply: JSON with meta, then the base64 WAV, as one body."""
        session: HttpSession = job.client
        take = audio[0]  # (2, samples) at 44.1 kHz: the contract returns one take
        request = job.request
        meta = {
            "seed": request.seed,
            "sample_rate": timebase.SAMPLE_RATE,
            "channels": take.shape[0],
            "samples": take.shape[1],
            "mode": session.kind,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "duration": round(take.shape[1] / timebase.SAMPLE_RATE, 6),
            "steps": job.steps_used,
            "cfg_scale": job.cfg_used,
            "shift": session.shift,
            "sampler": self.engine.models[job.model].settings.sampler,
            "model": job.model,
            "bpm": request.bpm,
            "meter": request.meter,
            "loras": session.loras,
            "loudness": {"peak_dbfs": wav.peak_dbfs(take), "ceiling_dbtp": -1.0},
            "generation_seconds": round(job.seconds_elapsed, 3),
        }
        if session.kind != "generate":
            meta[session.kind] = session.echo
        head = {
            "success": True,
            "session_id": job.id,
            "generation_in_progress": False,
            "transform_in_progress": False,
            "progress": 100,
            "step": job.step,
            "total_steps": job.total,
            "status": "completed",
            "queue_status": {},
            "meta": meta,
        }
        # base64 needs no JSON escaping: the body is the JSON head with the audio appended, not
        # a second copy of tens of megabytes made by json.dumps.
        return [_json(head)[:-1] + b',"audio_data":"' + wav.encode(take) + b'"}']


def read_json(environ) -> dict:
    """The request body as a JSON object; HttpError 400 for anything else."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError(400, "the Content-Length header is not a number") from None
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        raise HttpError(400, "a JSON body is required (Content-Type: application/json)")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        reason = f" ({err.msg} at character {err.pos})" if isinstance(err, json.JSONDecodeError) else ""
        raise HttpError(400, f"the body is not valid JSON{reason}") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"the body is a JSON {type(body).__name__}; send a JSON object")
    return body


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
