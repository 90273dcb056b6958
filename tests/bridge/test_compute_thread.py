"""``sa3 serve`` runs its torch work (loading the models, every job) on one thread: a
:class:`bridge.engine.ComputeThread`. Two OpenMP teams (models loaded in the main thread, jobs in
a worker) made every job's kernels slower for good (bridge/engine.py says by how much)."""

from __future__ import annotations

import threading
import time

import pytest

from bridge import protocol as P
from bridge.engine import ComputeThread, Engine
from sa3core.errors import Sa3Error
from sa3core.pipeline import Pipeline


def test_calls_run_in_order_on_one_thread_and_hand_back_results_and_errors():
    compute = ComputeThread()
    try:
        seen = [compute.call(lambda: threading.get_ident()) for _ in range(3)]
        assert len(set(seen)) == 1 and seen[0] != threading.get_ident()
        order: list[int] = []
        futures = [compute.submit(order.append, k) for k in range(20)]
        for future in futures:
            future.result(timeout=5)
        assert order == list(range(20))
        assert compute.call(sum, [1, 2, 3]) == 6
        with pytest.raises(Sa3Error, match="refused"):
            compute.call(_raise, Sa3Error("refused"))
        assert compute.call(lambda: 1) == 1  # an error does not end the thread
    finally:
        compute.stop()
    assert not compute._thread.is_alive()


def _raise(err: Exception) -> None:
    raise err


def test_the_engine_runs_its_jobs_where_the_models_were_loaded(tiny_model_dir):
    compute = ComputeThread()
    loader = compute.call(threading.get_ident)
    models = {"tiny": compute.call(Pipeline.load, tiny_model_dir)}
    engine = Engine(models, compute=compute)
    ran_on: list[int] = []
    engine.listen(lambda event, job, *_: ran_on.append(threading.get_ident()) if event == "started" else None)
    engine.start()
    try:
        request = P.parse_job({"type": "generate", "prompt": "soft pad", "seconds": 0.5, "steps": 2}, [], engine.limits)
        job = engine.submit(request, "tiny", "test", lambda job, audio: audio)
        deadline = time.monotonic() + 60
        while job.state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.state == "done", job.error
        assert job.result.shape[-1] == 22_050
        assert ran_on == [loader]
    finally:
        engine.stop_taking(cancel_running=True)
        engine.close()
    assert not compute._thread.is_alive()
