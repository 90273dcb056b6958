"""The Python client and `sa3 generate --daemon` against real daemons on loopback when things go
wrong: a daemon restarted mid-job, CurveZMQ keys on one side only, a bad endpoint, Ctrl-C.

The daemons serve the shipped model (it loads in seconds and renders a second of audio in well
under one); only the Python API's key cases use the random tiny model.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client, DaemonError, JobCancelled
from bridge.keys import CurveKeys, generate
from sa3core.pipeline import DEFAULT_MODEL_DIR
from tests.bridge.conftest import free_endpoint, start_sa3, wait_for, wait_running
from tests.conftest import run_sa3

SHIPPED = str(DEFAULT_MODEL_DIR)
PROMPT = "warm rhodes chords in D minor"


def _finish(process: subprocess.Popen, timeout: float) -> str:
    """The process's stderr once it ends; a process still running after ``timeout`` is killed."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"`sa3` still running after {timeout} s: it hangs") from None


def _raised_within(seconds: float, call) -> BaseException | None:
    """What ``call()`` raised (None if nothing), failing the test if it runs past ``seconds``."""
    outcome = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except Exception as err:
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)  # left behind if it hangs
    worker.start()
    worker.join(seconds)
    assert outcome, f"still waiting after {seconds} s: it hangs"
    return outcome[0]


# ---------------------------------------------------------------------------- restarts (issue 26, item 4)
@pytest.mark.slow  # about 28 s of daemon restarts; the reconnect tests below stay in the default run
def test_generate_through_a_daemon_restarted_mid_job_sends_it_again(start_daemon, tmp_path):
    """Killed and back on the same port within seconds, the daemon answers the client's heartbeats
    as if nothing happened; its new daemon_id tells the client the job is gone, and the client
    sends the same request again: the take is the one that request gives."""
    endpoint = free_endpoint()
    first = start_daemon("--threads", "1", bind=endpoint, model=SHIPPED)
    take = tmp_path / "take.wav"
    request = [PROMPT, "--seconds", "12", "--steps", "40", "--seed", "7", "--daemon", endpoint]
    cli = start_sa3("generate", *request, "-o", take, "--bit-depth", "float", "--quiet")
    wait_running(endpoint)
    first.process.kill()
    first.wait(10)
    second = start_daemon("--threads", "1", bind=endpoint, model=SHIPPED)
    stderr = _finish(cli, 120)
    assert cli.returncode == 0, stderr
    assert second.stderr().count(" queued: generate") == 1  # sent again once, to the new daemon

    again = tmp_path / "again.wav"
    result = run_sa3("generate", *request, "-o", again, "--bit-depth", "float", "--quiet")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(sf.read(take)[0], sf.read(again)[0])  # same request, same seed: same audio


def test_a_client_that_reconnected_to_a_restarted_daemon_sends_its_job_again(start_daemon):
    """A restart slower than the client's patience: it reconnects, checks its job (fetch, status),
    hears that the new daemon does not know it, and sends the request again (it used to fail with
    unknown_job)."""
    endpoint = free_endpoint()
    first = start_daemon("--threads", "1", bind=endpoint)
    outcome = {}

    def run() -> None:
        with Client(endpoint, silence=1.0, heartbeat=0.25, retries=60) as client:
            try:
                outcome["take"] = client.generate("slow restart", seconds=4.0, steps=30, seed=3, timeout=120)
            except DaemonError as err:
                outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    wait_running(endpoint)
    first.process.kill()
    first.wait(10)
    time.sleep(2.5)  # past the client's 1 s of silence: it reconnects, with nobody there
    second = start_daemon("--threads", "1", bind=endpoint)
    worker.join(120)
    assert "take" in outcome, outcome
    assert outcome["take"].audio.shape == (1, 2, 176_400)
    assert second.stderr().count(" queued: generate") == 1


def test_a_job_lost_to_a_second_restart_fails_with_one_line(start_daemon, tmp_path):
    endpoint = free_endpoint()
    daemon = start_daemon("--threads", "1", bind=endpoint, model=SHIPPED)
    out = tmp_path / "take.wav"
    cli = start_sa3("generate", PROMPT, "--seconds", "30", "--steps", "60", "--daemon", endpoint, "-o", out, "--quiet")
    for _ in range(2):  # the job, then the job sent again
        wait_running(endpoint)
        daemon.process.kill()
        daemon.wait(10)
        daemon = start_daemon("--threads", "1", bind=endpoint, model=SHIPPED)
    stderr = _finish(cli, 60)
    assert cli.returncode == 2 and not out.exists()
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"sa3: error: daemon: the daemon at {endpoint} restarted and lost the job"), lines
    assert daemon.stderr().count(" queued: generate") == 0  # given up, not sent a third time


# ---------------------------------------------------------------------------- keys on one side (item 5)
def test_generate_against_a_daemon_with_other_key_settings_fails_in_seconds(start_daemon, tmp_path, monkeypatch):
    """No keys against a daemon with keys, keys against one without: one line within seconds (it
    was 150 s of a progress bar at 0/1). The bar stays on: its start used to delay the first send
    until after the failed handshake, and the send then blocked for good."""
    generate(tmp_path / "keys", "client")
    keyed = start_daemon("--curve-keys", str(tmp_path / "keys"), "--threads", "1", model=SHIPPED)
    plain = start_daemon("--threads", "1", model=SHIPPED)
    out = tmp_path / "take.wav"
    cases = [
        (keyed.endpoint, None, "this client has none"),
        (plain.endpoint, tmp_path / "keys", "does not use CurveZMQ keys"),
    ]
    for endpoint, keys, says in cases:
        if keys is None:
            monkeypatch.delenv("SA3_CURVE_KEYS", raising=False)
        else:
            monkeypatch.setenv("SA3_CURVE_KEYS", str(keys))
        started = time.monotonic()
        result = run_sa3("generate", PROMPT, "--seconds", "1", "--daemon", endpoint, "-o", out, timeout=30)
        assert time.monotonic() - started < 20
        assert result.returncode == 2 and not out.exists(), result.stderr
        last = result.stderr.strip().splitlines()[-1]  # after the bar's own lines
        assert last.startswith("sa3: error: daemon: ") and endpoint in last and "Traceback" not in result.stderr
        assert "CurveZMQ keys" in last and says in last, last
    monkeypatch.setenv("SA3_CURVE_KEYS", str(tmp_path / "keys"))  # the right keys still work
    result = run_sa3("generate", PROMPT, "--seconds", "1", "--daemon", keyed.endpoint, "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr


def test_each_key_mismatch_names_what_to_change(start_daemon, tmp_path):
    generate(tmp_path / "keys", "studio")
    generate(tmp_path / "stranger", "intruder")  # a valid key pair the daemon never authorised
    keyed = start_daemon("--curve-keys", str(tmp_path / "keys"), "--threads", "1")
    plain = start_daemon("--threads", "1")
    studio = CurveKeys.from_dir(tmp_path / "keys", "studio")
    stranger = CurveKeys.from_dir(tmp_path / "stranger", "intruder")
    cases = [
        (keyed, None, "this client has none"),
        (
            keyed,
            CurveKeys(stranger.public, stranger.secret, studio.server_public),
            "refused this client's CurveZMQ key",
        ),
        (keyed, stranger, "not this client's server.key"),
        (plain, studio, "does not use CurveZMQ keys"),
    ]
    for daemon, curve, says in cases:

        def hello(endpoint=daemon.endpoint, curve=curve) -> None:
            with Client(endpoint, curve=curve, silence=60.0, retries=0) as client:
                client.hello()

        error = _raised_within(15, hello)  # not the 60 s silence, nor a send that blocks for good
        assert isinstance(error, DaemonError) and error.code == "handshake", error
        assert says in str(error) and daemon.endpoint in str(error)


# ---------------------------------------------------------------------------- bad endpoint (item 8)
@pytest.mark.parametrize("endpoint", ["banana", "tcp://127.0.0.1", "127.0.0.1:5557", "tcp://127.0.0.1:99999"])
def test_a_bad_daemon_endpoint_is_one_line_naming_it(tmp_path, endpoint):
    out = tmp_path / "take.wav"
    result = run_sa3("generate", PROMPT, "--seconds", "1", "--daemon", endpoint, "-o", out, timeout=60)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == [
        f"sa3: error: daemon endpoint {endpoint!r} is not a ZeroMQ endpoint; write it as tcp://HOST:PORT "
        "(e.g. tcp://127.0.0.1:5557) or ipc://PATH"
    ]


# ---------------------------------------------------------------------------- Ctrl-C (item 9)
def test_ctrl_c_cancels_the_job_on_the_daemon(start_daemon, tmp_path):
    daemon = start_daemon("--threads", "1", model=SHIPPED)
    out = tmp_path / "take.wav"
    cli = start_sa3(
        "generate", "long ambient drone", "--seconds", "60", "--steps", "100", "--daemon", daemon.endpoint,
        "-o", out, "--quiet",
    )  # fmt: skip
    job_id = wait_running(daemon.endpoint)
    cli.send_signal(signal.SIGINT)
    stderr = _finish(cli, 15)
    assert cli.returncode == 130 and stderr.strip().splitlines() == ["sa3: interrupted"], stderr
    assert not out.exists()
    with Client(daemon.endpoint) as client:
        # Well before the daemon would give up on a quiet client: the client cancelled it itself.
        wait_for(lambda: client.status(job_id)["job"]["state"] == "cancelled", timeout=5)
        with pytest.raises(JobCancelled) as caught:
            client.wait(job_id, timeout=10)
    assert caught.value.reason == "cancel"
