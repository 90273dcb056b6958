"""The job engine behind every front end of ``sa3 serve``: the ZeroMQ daemon (bridge/daemon.py)
and the HTTP contract (bridge/http/) submit to one queue, so limits, cancellation, model
selection and results behave the same whichever door a job came in by.

One **worker thread** runs one job at a time on the model it names (``sa3 serve`` gives it a
:class:`ComputeThread`, the thread that loaded the models: see there why it must be one thread); up to ``queue`` jobs wait
behind it. A front end submits a checked :class:`~bridge.protocol.JobRequest` with a ``pack``
function that turns the finished audio into what that front end keeps and sends (float32 frames
for ZeroMQ, a base64 WAV reply for HTTP); ``pack`` runs on the worker (the job's ``stage`` is
``encoding`` meanwhile), so no front end's thread ever waits for the model or the encoding.

Events (``started``, ``progress``, ``ended``) go to the listeners added with :meth:`listen`,
called in the thread that caused them (the worker's, or a front end's for a cancel) and never
while the engine's lock is held; a listener must not block. A front end that polls (HTTP) reads
a job's fields instead: ``state`` is written last, so a reader that sees an ended state sees the
result and error that go with it. Finished jobs are kept for ``result_ttl`` seconds (and at most
:data:`MAX_RESULT_BYTES` of them, oldest dropped first) by :meth:`housekeeping`.

**LoRA adapters** (the server's :class:`~bridge.loras.LoraFolder`): a job names adapters and
strengths in order; :meth:`Engine.submit` resolves the names and refuses unknown ones
(``bad_field``) and ones that do not fit the job's model (``invalid_request``) before the job
waits. The worker keeps the last set it used attached to each model, apart from the weights
(``Pipeline.use_loras(..., merge=False)``): a job with the same set in the same order only sets
its strengths (``Pipeline.lora_strengths``), another set or order is swapped in first
(``drop_loras`` then ``use_loras``), and a job without adapters runs with the attached set at
strength 0, which is the base model bit for bit. An adapter at strength 0 is left out.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue as queues
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sa3core.errors import Sa3Error

from . import protocol as P
from .loras import FolderLora, LoraFolder
from .render import render

log = logging.getLogger("sa3.serve")

MAX_RESULT_BYTES = 2 * 1024**3  # finished results kept, oldest dropped first
STATES = ("queued", "running", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")

Pack = Callable[["Job", Any], list]  # (job, float32 [variations, 2, samples]) -> the front end's byte strings
Listener = Callable[..., None]  # (event, job, *details)


class _Cancelled(Exception):
    """Raised from the progress callback to stop the sampler of a cancelled job."""


class Job:
    """One request on its way through the queue. The worker writes ``state``, ``stage``,
    ``step``/``total``, ``result`` and ``error``; ``state`` last, so whoever reads an ended state
    reads the rest complete. ``front`` names the front end that owns the job ("zmq", "http") and
    ``client`` holds that front end's own record of it; neither is the engine's business."""

    def __init__(self, request: P.JobRequest, model: str, front: str, pack: Pack, client: Any = None) -> None:
        self.id = secrets.token_hex(P.JOB_ID_HEX // 2)
        self.request = request
        self.model = model  # the name of the served model that runs it
        self.front = front
        self.client = client
        self.pack = pack
        self.state = "queued"  # queued -> running -> done | failed | cancelled
        self.stage = "sampling"  # while running: sampling (and decoding), then encoding (pack)
        self.step = 0
        self.total = 0
        self.cancel = threading.Event()
        self.cancel_reason = "cancel"
        self.result: list = []  # what pack returned: byte strings
        self.shape: tuple[int, int, int] = (0, 0, 0)  # the audio pack was given: (variations, channels, samples)
        self.loras: list[tuple[FolderLora, float]] = []  # the request's adapters, resolved at submit
        self.steps_used = 0
        self.cfg_used = 0.0
        self.error: tuple[str, str] = ("internal", "")  # (protocol error code, message) of a failed job
        self.created_at = time.monotonic()
        self.started_at: float | None = None  # None: it never ran (still waiting, or cancelled from the queue)
        self.seconds_elapsed = 0.0
        self.finished_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def nbytes(self) -> int:
        return sum(len(part) for part in self.result)


class ComputeThread:
    """One thread for all of a server's torch work: loading its models, then every job.

    torch parallelises its CPU kernels with OpenMP, and libgomp gives each OS thread that opens a
    parallel region a team of its own. Loading the models in the main thread and running the jobs
    in a worker thread left two teams on the cores, and the worker's kernels ran slower for good:
    on released small (random weights of the real shapes, 2 cores, nothing else running) a DiT
    step over 8 s of audio took 0.41 s in the worker against 0.28 s where the model was loaded,
    its element-wise kernels about twice as long; 4 bars at 120 bpm through ``sa3 serve`` took
    4.26 s instead of about 2.8 s. With everything in one thread both are 0.31 s.

    :meth:`call` runs a function there and returns its result (or raises its exception);
    :meth:`submit` returns a future. Functions run one after another, in order.
    """

    def __init__(self, name: str = "sa3-compute") -> None:
        self._calls: queues.SimpleQueue = queues.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args))
        return future

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.submit(fn, *args).result()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after the calls already submitted."""
        self._calls.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # handed to the caller, who raises it
                future.set_exception(err)


class Engine:
    """``Engine(models)`` runs jobs on ``models`` (name -> Pipeline, in order; the first is the
    default). ``max_seconds`` caps every model's own limit; ``queue`` jobs may wait behind the
    running one; finished jobs stay for ``result_ttl`` seconds."""

    def __init__(
        self,
        models: dict,
        queue: int = 16,
        result_ttl: float = 600.0,
        max_seconds: float | None = None,
        loras: LoraFolder | None = None,
        compute: ComputeThread | None = None,
    ) -> None:
        if not models:
            raise Sa3Error("the engine needs at least one model")
        self.models = dict(models)
        self.default_model = next(iter(self.models))
        self.queue_limit = queue
        self.result_ttl = result_ttl
        self.model_limits = {name: self._limits_for(p, max_seconds) for name, p in self.models.items()}
        self.limits = self.model_limits[self.default_model]
        self.jobs_done = 0
        self.started = time.monotonic()
        self.stopping = False
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._compute = compute
        self._stop_worker = False
        self._listeners: list[Listener] = []
        self._worker: threading.Thread | concurrent.futures.Future | None = None
        self.loras = loras if loras is not None else LoraFolder(None, self.models)
        # Held while adapters are swapped on a model and while the folder is read again (which
        # looks at the models' layers); the folder's generation makes a reread file be read again.
        self._lora_lock = threading.Lock()
        self._lora_generation = 0
        self._attached: dict[str, tuple] = {}  # model -> (generation, paths) of the set attached

    @staticmethod
    def _limits_for(pipeline, cap: float | None) -> P.Limits:
        model_max = pipeline.settings.max_seconds
        return P.Limits(max_seconds=model_max if cap is None else min(cap, model_max))

    @property
    def pipeline(self):
        """The default model's Pipeline."""
        return self.models[self.default_model]

    def model_named(self, name: str | None, field: str = "model") -> str:
        """The served model a job asks for by ``name`` (None: the default); a ProtocolError
        ``bad_field`` that lists the served ones when there is none of that name."""
        if name is None:
            return self.default_model
        if name not in self.models:
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise P.ProtocolError(
                "bad_field",
                f"field {field!r} is {shown!r}, which this server does not serve; use one of "
                f"{', '.join(self.models)} or leave it out for {self.default_model}",
            )
        return name

    def resolve_loras(self, request: P.JobRequest, model: str) -> list[tuple[FolderLora, float]]:
        """The folder's adapter for each of the request's names, with its strength; ProtocolError
        ``bad_field`` for a name the folder has not, ``invalid_request`` for an adapter (at a
        strength other than 0) that cannot run on ``model``."""
        resolved = []
        for name, strength in request.loras:
            adapter = self.loras.find(name)
            if adapter is None:
                raise P.ProtocolError("bad_field", f"field 'loras': {self.loras.unknown(name)}")
            problem = adapter.why_not(model) if strength != 0 else None
            if problem is not None:
                raise P.ProtocolError("invalid_request", problem)
            resolved.append((adapter, strength))
        return resolved

    def rescan_loras(self) -> list[FolderLora]:
        """Read the LoRA folder again and check every adapter against the models (HTTP ``/reload``);
        the next job with adapters reads its files again."""
        with self._lora_lock:
            adapters = self.loras.scan()
            self._lora_generation += 1
        return adapters

    # ------------------------------------------------------------------ lifecycle
    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._compute is not None:  # the jobs run where the models were loaded
            self._worker = self._compute.submit(self._work)
            return
        self._worker = threading.Thread(target=self._work, name="sa3-worker", daemon=True)
        self._worker.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker once it has no job (call after :meth:`stop_taking` and waiting for :attr:`idle`)."""
        with self._cond:
            self._stop_worker = True
            self._cond.notify_all()
        if isinstance(self._worker, concurrent.futures.Future):
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self._worker.result(timeout)
            self._compute.stop(timeout)
        elif self._worker is not None:
            self._worker.join(timeout)

    def stop_taking(self, cancel_running: bool) -> None:
        """Refuse new jobs from now on, cancel the waiting ones (reason ``shutdown``) and, when
        ``cancel_running``, the running one at its next step."""
        self.stopping = True
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            self._end_cancelled(job, "shutdown")
        if cancel_running:
            self.cancel_running("shutdown")

    def cancel_running(self, reason: str) -> None:
        with self._cond:
            job = self._running
        if job is not None and not job.cancel.is_set():
            job.cancel_reason = reason
            job.cancel.set()

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._running is None and not self._waiting

    # ------------------------------------------------------------------ jobs
    def submit(self, request: P.JobRequest, model: str, front: str, pack: Pack, client: Any = None) -> Job:
        """Queue a checked request; ProtocolError ``shutting_down`` or ``queue_full`` when it cannot."""
        if self.stopping:
            raise P.ProtocolError("shutting_down", "the server is shutting down and takes no new jobs")
        job = Job(request, model, front, pack, client)
        job.loras = self.resolve_loras(request, model)
        with self._cond:
            if len(self._waiting) >= self.queue_limit:
                raise P.ProtocolError(
                    "queue_full", f"the queue is full ({self.queue_limit} jobs waiting); try again shortly"
                )
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
        log.info("job %s queued: %s (%s)", job.id, request.mode, front)
        return job

    def job(self, job_id: str, front: str | None = None) -> Job | None:
        """The job of that id (only if ``front`` owns it, when given), or None."""
        job = self._jobs.get(job_id)
        return job if job is not None and (front is None or job.front == front) else None

    def forget(self, job: Job) -> None:
        """Drop an ended job's result now (an HTTP ``consume``)."""
        if job.ended:
            with self._cond:
                self._jobs.pop(job.id, None)

    def jobs(self, front: str | None = None) -> list[Job]:
        """The jobs held now (waiting, running, and ended ones still kept), of ``front`` when given."""
        with self._cond:
            held = list(self._jobs.values())
        return [job for job in held if front is None or job.front == front]

    def cancel(self, job: Job, reason: str = "cancel") -> bool:
        """Cancel ``job``: True when it was waiting and has ended now, False when it is running
        and stops at its next sampler step; ProtocolError ``job_finished`` when it had ended."""
        with self._cond:
            queued = job.state == "queued"
            if queued:
                self._waiting.remove(job)
        if queued:
            self._end_cancelled(job, reason)
            return True
        if job.ended:
            raise P.ProtocolError("job_finished", f"job {job.id!r} has already ended ({job.state})")
        job.cancel_reason = reason
        job.cancel.set()  # the worker stops at the job's next sampler step
        return False

    def position(self, job: Job) -> int:
        """Jobs ahead of a waiting ``job`` (the running one counted); 0 once it runs."""
        with self._cond:
            if job.state != "queued":
                return 0
            ahead = next((i for i, waiting in enumerate(self._waiting) if waiting is job), 0)
            return ahead + (self._running is not None)

    def waiting(self) -> list[Job]:
        with self._cond:
            return list(self._waiting)

    @property
    def running(self) -> Job | None:
        with self._cond:
            return self._running

    def housekeeping(self, now: float | None = None) -> None:
        """Drop results older than ``result_ttl`` and, past :data:`MAX_RESULT_BYTES`, the oldest."""
        now = time.monotonic() if now is None else now
        ended = sorted((job for job in self.jobs() if job.ended), key=lambda job: job.finished_at)
        kept = sum(job.nbytes for job in ended)
        for job in ended:
            if now - job.finished_at > self.result_ttl or kept > MAX_RESULT_BYTES:
                kept -= job.nbytes
                with self._cond:
                    self._jobs.pop(job.id, None)

    # ------------------------------------------------------------------ events
    def _emit(self, event: str, job: Job, *details) -> None:
        for listener in self._listeners:
            try:
                listener(event, job, *details)
            except Exception:  # a front end's bug must not stop the worker
                log.exception("a listener failed on %s of job %s", event, job.id)

    def _end_cancelled(self, job: Job, reason: str) -> None:
        job.cancel_reason, job.finished_at = reason, time.monotonic()
        job.request.audio = None
        job.state = "cancelled"
        self._emit("ended", job)

    # ------------------------------------------------------------------ the worker thread
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop_worker:
                    self._cond.wait()
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                job.state, job.started_at = "running", time.monotonic()
                self._running = job
            self._emit("started", job)
            self._run(job)
            self.jobs_done += 1
            with self._cond:
                self._running = None
            self._emit("ended", job)

    @contextlib.contextmanager
    def _adapters(self, job: Job, pipeline):
        """Run the block with exactly the job's adapters on its model (module docstring)."""
        active = [(adapter.path, strength) for adapter, strength in job.loras if strength != 0]
        if active:
            with self._lora_lock:
                key = (self._lora_generation, tuple(path for path, _ in active))
                if self._attached.get(job.model) != key or pipeline.loras is None:
                    self._attached.pop(job.model, None)
                    pipeline.drop_loras()
                    log.info("job %s: attaching LoRA %s", job.id, ", ".join(path.name for path, _ in active))
                    pipeline.use_loras(active, merge=False)  # a file changed since the scan: Sa3Error, one line
                    self._attached[job.model] = key
            strengths = [strength for _, strength in active]
        else:  # the base model: the attached set (if any) at strength 0 computes it bit for bit
            strengths = None if pipeline.loras is None else [0.0] * len(pipeline.loras.files)
        with pipeline.lora_strengths(strengths):
            yield

    def _run(self, job: Job) -> None:
        def progress(step: int, total: int) -> None:
            job.step, job.total = step, total
            if job.cancel.is_set():
                raise _Cancelled
            self._emit("progress", job, step, total)

        started = time.perf_counter()
        state = "failed"
        try:
            if job.cancel.is_set():
                raise _Cancelled
            pipeline = self.models[job.model]
            with self._adapters(job, pipeline):
                audio = render(pipeline, job.request, progress)
            if job.cancel.is_set():
                raise _Cancelled  # cancelled while decoding: honour it, the client asked
            job.stage = "encoding"
            job.shape = tuple(audio.shape)
            job.steps_used = job.request.steps if job.request.steps is not None else pipeline.settings.steps
            job.cfg_used = job.request.cfg if job.request.cfg is not None else pipeline.settings.cfg
            job.seconds_elapsed = time.perf_counter() - started
            job.result = job.pack(job, audio)
            state = "done"
        except _Cancelled:
            state = "cancelled"
        except P.ProtocolError as err:  # pack refused the audio it was given
            job.error = (err.code, err.message)
        except Sa3Error as err:
            job.error = ("invalid_request", str(err))
        except Exception as err:  # a model failure ends this job, not the server
            log.exception("job %s failed", job.id)
            first_line = (str(err).splitlines() or [""])[0][:200]
            job.error = ("internal", f"{type(err).__name__}: {first_line}")
        job.seconds_elapsed = time.perf_counter() - started
        job.request.audio = None  # the input is not needed once the job ended; only the result is kept
        job.finished_at = time.monotonic()
        log.info("job %s %s in %.2f s", job.id, state, job.seconds_elapsed)
        job.state = state  # last: readers treat a job as ended once this is set
