"""Daemon lifecycle and security: SIGTERM, refused remote binds, CurveZMQ, vanished clients, abandoned
jobs, result expiry."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import msgpack
import pytest
import zmq

from bridge import protocol as P
from bridge.client import Client, DaemonError, DaemonUnreachable, JobCancelled
from bridge.keys import CurveKeys, generate
from sa3core.pipeline import DEFAULT_MODEL_DIR
from tests.bridge.conftest import start_sa3, wait_for, wait_running
from tests.conftest import REPO, run_sa3

LONG_JOB = {"seconds": 10.0, "steps": 60}


def _wait_step(client: Client, job_id: str, timeout: float = 60.0) -> None:
    wait_for(lambda: client.status(job_id)["job"]["step"] >= 1, timeout=timeout, every=0.1)


@pytest.mark.parametrize("policy", ["finish", "cancel"])
def test_sigterm_exits_zero_and_tells_clients(start_daemon, policy):
    daemon = start_daemon("--on-shutdown", policy, "--threads", "1")
    # The running job must still be running when SIGTERM lands, even on a fast idle machine
    # (3 steps of 1 s finished before the signal there and the queued job then ran too).
    job = {"seconds": 2.0, "steps": 30} if policy == "finish" else LONG_JOB
    with Client(daemon.endpoint, silence=30.0) as client, Client(daemon.endpoint) as bystander:
        bystander.ping()  # a connected client with no job is told too
        running = client.submit("generate", "outro", **job)
        waiting = client.submit("generate", "never runs", seconds=0.5, steps=1)
        _wait_step(client, running)
        daemon.signal(signal.SIGTERM)
        seen = []
        while not any(h["type"] == "shutdown" for h in seen):
            message = client.receive(60)
            assert message is not None, f"no shutdown message; got {seen}"
            seen.append(message[0])
        endings = {h["job_id"]: h for h in seen if h["type"] in ("result", "cancelled", "error")}
        assert endings[waiting]["type"] == "cancelled" and endings[waiting]["reason"] == "shutdown"
        if policy == "finish":
            assert endings[running]["type"] == "result"
        else:
            assert endings[running]["type"] == "cancelled" and endings[running]["reason"] == "shutdown"
        last = dict(seen[-1])
        assert re.fullmatch(f"[0-9a-f]{{{P.DAEMON_ID_HEX}}}", last.pop("daemon_id"))
        assert last == {"v": P.PROTOCOL_VERSION, "type": "shutdown", "reason": "signal", "running_job": policy}
        assert bystander.receive(10)[0]["type"] == "shutdown"
    assert daemon.wait(30) == 0
    assert "stopped" in daemon.stderr()


def test_remote_bind_without_keys_refuses_to_start_with_one_line():
    started = time.monotonic()
    result = run_sa3("serve", "--bind", "tcp://0.0.0.0:5599", "--model", "random:tiny")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to bind 'tcp://0.0.0.0:5599'" in lines[0] and "--curve-keys" in lines[0]
    assert time.monotonic() - started < 60  # refused before any model loads


def test_keys_are_private_files(tmp_path):
    result = run_sa3("keys", "generate", tmp_path / "keys", "--client", "studio")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "keys"
    for path in [folder / "server.key_secret", folder / "clients" / "studio.key_secret", folder / "server.key"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder / "authorized_clients" / "studio.key").exists()
    keys = CurveKeys.from_dir(folder, "studio")
    assert len(keys.public) == len(keys.secret) == len(keys.server_public) == 40  # Z85 of 32 bytes


def test_curve_right_keys_work_wrong_keys_get_nothing(start_daemon, tmp_path):
    generate(tmp_path / "keys", "studio")
    generate(tmp_path / "stranger", "intruder")  # a valid key pair the daemon never authorised
    daemon = start_daemon("--curve-keys", str(tmp_path / "keys"), "--threads", "1")
    with Client(daemon.endpoint, curve=CurveKeys.from_dir(tmp_path / "keys", "studio")) as good:
        assert good.hello()["type"] == "capabilities"
        assert good.generate("", samples=4096, steps=1).audio.shape == (1, 2, 4096)
    own = CurveKeys.from_dir(tmp_path / "stranger", "intruder")
    wrong = CurveKeys(own.public, own.secret, CurveKeys.from_dir(tmp_path / "keys", "studio").server_public)
    for curve in (wrong, None):  # unauthorised key; no encryption at all
        with Client(daemon.endpoint, curve=curve, silence=30.0, retries=0) as bad:
            with pytest.raises(DaemonUnreachable):  # HandshakeFailed is one, within a second or so
                bad.hello()
    assert "listening" in daemon.stderr()


def test_killed_client_does_not_stall_the_queue_and_results_expire(start_daemon):
    daemon = start_daemon("--result-ttl", "2", "--threads", "1")
    script = (
        "import sys, time\n"
        "from bridge.client import Client\n"
        f"c = Client({daemon.endpoint!r})\n"
        "job = c.submit('generate', 'abandoned', seconds=3.0, steps=6)\n"
        "print(job, flush=True)\n"
        "c.wait(job)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    job_id = victim.stdout.readline().strip()
    with Client(daemon.endpoint, silence=30.0) as client:
        _wait_step(client, job_id)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        # The next job runs after the orphan's, and the orphan's result waits for a fetch.
        after = client.generate("next please", samples=5000, steps=2)
        assert after.audio.shape == (1, 2, 5000)
        assert client.status(job_id)["job"]["state"] == "done"
        orphan = client.wait(job_id, timeout=10)
        assert orphan.audio.shape == (1, 2, 132_300)
        time.sleep(3.5)  # past --result-ttl 2 (the daemon sweeps once a second)
        with pytest.raises(DaemonError) as caught:
            client.wait(job_id, timeout=10)
        assert caught.value.code == "unknown_job"


def test_client_reconnects_with_a_fresh_identity_and_fetches_its_job(start_daemon):
    daemon = start_daemon("--threads", "1")
    client = Client(daemon.endpoint, silence=1.0, heartbeat=0.25, retries=30)
    first_identity = client.socket.getsockopt(zmq.IDENTITY)
    outcome = {}

    def run() -> None:
        outcome["result"] = client.generate("through the outage", seconds=2.0, steps=6, timeout=120)

    worker = threading.Thread(target=run)
    worker.start()
    with Client(daemon.endpoint) as watcher:
        wait_for(lambda: watcher.status()["running"] is not None, timeout=60, every=0.05)
    daemon.process.send_signal(signal.SIGSTOP)  # the daemon goes silent mid-job
    time.sleep(2.5)
    daemon.process.send_signal(signal.SIGCONT)
    worker.join(120)
    try:
        assert outcome["result"].audio.shape == (1, 2, 88_200)
        assert client.socket.getsockopt(zmq.IDENTITY) != first_identity  # it reconnected, then fetched
    finally:
        client.close()


@pytest.mark.slow  # over 10 s; .ci/run runs the slow tests
def test_a_killed_clients_job_is_cancelled_and_the_next_job_runs(start_daemon, tmp_path):
    """A client killed mid-job (no Ctrl-C, no cancel) stops holding the queue once the daemon has
    neither heard from nor reached it for ABANDON_SECONDS: its 2-minute job is cancelled as
    abandoned and the next client's 1-second job runs."""
    daemon = start_daemon("--threads", "1", model=str(DEFAULT_MODEL_DIR))
    victim = start_sa3(
        "generate", "long ambient drone", "--seconds", "120", "--steps", "100", "--daemon", daemon.endpoint,
        "-o", tmp_path / "never.wav", "--quiet",
    )  # fmt: skip
    orphan = wait_running(daemon.endpoint)
    victim.kill()
    victim.wait(10)
    with Client(daemon.endpoint, silence=60.0) as client:
        wait_for(lambda: client.status(orphan)["job"]["state"] == "cancelled", timeout=30, every=0.25)
        assert client.generate("next please", seconds=1.0, steps=2).audio.shape == (1, 2, 44_100)
        with pytest.raises(JobCancelled) as caught:
            client.wait(orphan, timeout=10)
    assert caught.value.reason == "abandoned"
    assert "abandoned" in daemon.stderr()


@pytest.mark.slow  # over 10 s; .ci/run runs the slow tests
def test_clients_that_wait_keep_their_jobs_past_the_abandon_timeout(start_daemon):
    """What the abandon rule must not cancel: a 1.2-style client that hears progress and so sends
    nothing (it pings only after 2 s of silence, as the plugin does), and a client whose job waits
    in the queue behind it with nothing to hear (its heartbeats keep it). The first job samples for
    longer than ABANDON_SECONDS on a 2-core machine."""
    daemon = start_daemon("--threads", "1", model=str(DEFAULT_MODEL_DIR))
    old = zmq.Context.instance().socket(zmq.DEALER)
    old.setsockopt(zmq.LINGER, 0)
    old.connect(daemon.endpoint)
    outcome = {}

    def queued_behind() -> None:
        with Client(daemon.endpoint, silence=60.0) as client:
            outcome["queued"] = client.generate("queued behind", seconds=1.0, steps=2, timeout=240)

    try:
        old.send(msgpack.packb({"v": "1.2", "type": "generate", "prompt": "drone", "seconds": 60.0, "steps": 100}))
        wait_running(daemon.endpoint)
        behind = threading.Thread(target=queued_behind)
        behind.start()
        started, ending = time.monotonic(), None
        while ending is None and time.monotonic() - started < 240:
            if not old.poll(2000):
                old.send(msgpack.packb({"v": "1.2", "type": "heartbeat"}))  # 2 s without a word (decoding)
                continue
            header = msgpack.unpackb(old.recv_multipart()[0])
            if header["type"] in ("result", "cancelled", "error"):
                ending = header
        assert ending is not None and ending["type"] == "result", ending
        behind.join(240)
        assert outcome["queued"].audio.shape == (1, 2, 44_100)
    finally:
        old.close()
