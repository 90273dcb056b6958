"""`sa3 bench http_overhead` runs end to end in a CI-sized setting and writes the JSON the lead
reads (the numbers themselves are not checked here: they are the lead's to measure)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_sa3


@pytest.mark.slow  # over 10 s; .ci/run runs the slow tests
def test_http_overhead_bench_runs_and_writes_its_results(tmp_path):
    out = tmp_path / "http_overhead.json"
    done = run_sa3(
        "bench", "http_overhead", "--quick", "--lengths", "0.5", "--steps", "1", "--probes", "3",
        "--model", "random:tiny", "--threads", "1", "--out", out, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(out.read_text())
    assert document["bench"] == "http_overhead" and {"machine", "command"} <= set(document)
    (trip,) = document["results"]["round_trip"]
    assert trip["samples"] == 22_050 and trip["http_result_bytes"] > 22_050 * 4 * 4 // 3
    assert {"zmq_overhead_median_ms", "http_overhead_median_ms", "http_minus_zmq_overhead_ms"} <= set(trip)
    idle, busy = document["results"]["health"]
    assert (idle["while"], busy["while"]) == ("idle", "a job runs") and busy["probes"] == 3
