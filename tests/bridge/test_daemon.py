"""A real `sa3 serve` subprocess on loopback, driven by real clients: results, cancel, queue,
malformed messages, reconnects. One daemon serves the whole module (random tiny model)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import msgpack
import numpy as np
import pytest
import torch
import zmq

from bridge import protocol as P
from bridge.client import AsyncClient, Client, DaemonError, JobCancelled
from bridge.render import to_rate
from sa3core import timebase
from tests.bridge.conftest import DaemonProcess, wait_for
from tests.conftest import stereo_tone

QUEUE = 4
MAX_SECONDS = 40.0
LONG_JOB = {"seconds": 10.0, "steps": 60}  # long enough to cancel mid-way; a step takes far longer than a message


@pytest.fixture(scope="module")
def daemon():
    process = DaemonProcess("--queue", str(QUEUE), "--max-seconds", str(MAX_SECONDS), "--result-ttl", "120")
    yield process.wait_ready()
    process.stop()


@pytest.fixture
def client(daemon):
    with Client(daemon.endpoint, silence=20.0) as c:
        yield c


def receive_until(client: Client, stop, timeout: float = 60.0) -> list[dict]:
    """Headers received until ``stop(header)`` is true (that one included)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.receive(0.5)
        if message is None:
            continue
        seen.append(message[0])
        if stop(message[0]):
            return seen
    raise AssertionError(f"no matching message in {timeout} s; got {[h.get('type') for h in seen]}")


def test_hello_negotiates_minor_versions_and_refuses_other_majors(client):
    client.send({"type": "hello", "v": "1.7", "request_id": "a"})
    reply = client.receive(10)[0]
    assert reply["type"] == "capabilities" and reply["v"] == P.PROTOCOL_VERSION and reply["request_id"] == "a"
    assert reply["max_seconds"] == MAX_SECONDS and reply["queue_limit"] == QUEUE
    assert reply["sample_rates"] == list(timebase.HOST_SAMPLE_RATES)
    client.send({"type": "hello", "v": "2.0", "request_id": "b"})
    reply = client.receive(10)[0]
    assert (reply["type"], reply["code"], reply["request_id"]) == ("error", "version_mismatch", "b")


def test_concurrent_clients_get_independent_exact_results(daemon, tiny_pipeline):
    torch.manual_seed(0)
    requests = [
        dict(prompt="kick drum", samples=9_000, seed=1),
        dict(prompt="warm pad", seconds=0.2, seed=2, sample_rate=48_000, variations=2),
        dict(prompt="hats", bars=1, bpm=960, seed=3, sample_rate=96_000),
    ]
    results: dict[int, object] = {}

    def run(index: int) -> None:
        with Client(daemon.endpoint, silence=30.0) as own:
            fields = dict(requests[index])
            results[index] = own.generate(fields.pop("prompt"), steps=1, **fields)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(len(requests))), "a client got no result"
    for index, fields in enumerate(requests):
        rate = fields.get("sample_rate", timebase.SAMPLE_RATE)
        job = P.parse_job({"type": "generate", **fields}, [], P.Limits())
        result = results[index]
        assert result.sample_rate == rate
        assert result.audio.shape == (fields.get("variations", 1), 2, job.reply_samples)
        # The same request in this process: same model weights (seed 0), same seed -> same audio.
        direct = tiny_pipeline.generate(
            fields["prompt"],
            job.model_samples,
            steps=1,
            seed=fields["seed"],
            variations=job.variations,
            bpm=job.bpm,  # a bars request carries the song's tempo: the model keeps its beat
            meter=job.meter,
        )
        expected = to_rate(direct, rate, job.reply_samples)
        np.testing.assert_allclose(result.audio, expected, atol=1e-5, rtol=0)
    # 1 bar of 4/4 at 960 bpm at 96 kHz is exactly a quarter of a second.
    assert results[2].audio.shape[-1] == 24_000


def test_inpaint_keeps_host_rate_audio_bit_exact_and_continue_appends(client):
    rate = 48_000
    mono = stereo_tone(0.5, rate=rate)[:1]
    result = client.inpaint(mono, "snare fill", audio_rate=rate, regions=[(12_000, 20_000)], steps=2, seed=5)
    out = result.audio[0]
    assert result.sample_rate == rate and out.shape == (2, 24_000)
    both = np.repeat(mono, 2, axis=0)
    np.testing.assert_array_equal(out[:, :12_000], both[:, :12_000])
    np.testing.assert_array_equal(out[:, 20_000:], both[:, 20_000:])
    assert np.abs(out[:, 12_500:19_500] - both[:, 12_500:19_500]).mean() > 1e-4

    stereo = stereo_tone(0.25, rate=96_000)
    result = client.continue_(stereo, "and then", audio_rate=96_000, bars=1, bpm=480, steps=2)
    assert result.audio.shape == (1, 2, 24_000 + 48_000)  # input + 1 bar (0.5 s) at 96 kHz
    np.testing.assert_array_equal(result.audio[0, :, :24_000], stereo)
    # Reply at another rate than the input: exact length at the reply rate.
    result = client.continue_(stereo, "and then", audio_rate=96_000, sample_rate=44_100, samples=4410, steps=2)
    assert result.audio.shape == (1, 2, 11_025 + 4410)


def test_progress_cancel_and_status_while_a_job_runs(daemon, client):
    job_id = client.submit("generate", "long drone", **LONG_JOB)
    seen = receive_until(client, lambda h: h["type"] == "progress" and h["step"] >= 1)
    assert seen[-1]["job_id"] == job_id and seen[-1]["total"] == LONG_JOB["steps"]
    # The socket thread answers while the model works.
    with Client(daemon.endpoint) as other:
        assert other.ping() < 1.0
        status = other.status(job_id)
        assert status["running"] == job_id and status["job"]["state"] == "running"
        reply = other.cancel(job_id)  # returns once the job has stopped
        after = other.status(job_id)["job"]
    assert after["state"] == "cancelled" and reply["step"] == after["step"]
    # Stopped within one sampler step of the cancel (the step that was running when it arrived).
    assert reply["requested_at_step"] <= reply["step"] <= reply["requested_at_step"] + 1 < LONG_JOB["steps"]
    ending = receive_until(client, lambda h: h["type"] in ("cancelled", "result", "error"))[-1]
    assert (ending["type"], ending["job_id"], ending["reason"]) == ("cancelled", job_id, "cancel")
    with pytest.raises(DaemonError) as caught:
        client.cancel(job_id)
    assert caught.value.code == "job_finished"


def test_queue_positions_queue_full_and_cancel_of_waiting_jobs(client):
    running = client.submit("generate", "long drone", **LONG_JOB)
    wait_for(lambda: client.status()["running"] == running)  # the worker took it: the queue is empty
    waiting = [client.submit("generate", f"take {k}", seconds=0.2, steps=1) for k in range(QUEUE)]
    with pytest.raises(DaemonError) as caught:
        client.submit("generate", "one too many", seconds=0.2, steps=1)
    assert caught.value.code == "queue_full"
    positions = [client.status(job)["job"]["position"] for job in waiting]
    assert positions == list(range(1, QUEUE + 1))
    client.cancel(waiting[0])
    assert client.status(waiting[1])["job"]["position"] == 1  # everyone behind moved up
    client.cancel(running)
    for job in waiting[1:]:
        assert client.wait(job, timeout=60).audio.shape == (1, 2, 8820)
    with pytest.raises(JobCancelled):
        client.wait(waiting[0], timeout=10)  # fetch of a cancelled job says so again


def test_result_is_fetchable_by_a_new_client_after_the_first_left(daemon):
    with Client(daemon.endpoint) as first:
        job_id = first.submit("generate", "lost and found", samples=10_000, steps=2, seed=9)
    with Client(daemon.endpoint) as second:
        result = second.wait(job_id, timeout=60)
        again = second.wait(job_id, timeout=10)  # kept, so it can be fetched more than once
    assert result.job_id == job_id and result.audio.shape == (1, 2, 10_000)
    np.testing.assert_array_equal(result.audio, again.audio)


def _raw(endpoint: str) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    return socket


def _reply(socket: zmq.Socket, timeout: float = 10.0) -> dict:
    assert socket.poll(int(timeout * 1000)), "no reply"
    frames = socket.recv_multipart()
    return P.decode_header(frames[0], 1 << 24)[0]


def _pack(**header) -> bytes:
    return msgpack.packb({"v": P.PROTOCOL_VERSION, **header})


GOOD_AUDIO = {"sample_rate": 44_100, "channels": 2, "samples": 100}
AUDIO_BYTES = np.zeros((2, 100), dtype="<f4").tobytes()
MALFORMED = [
    ("empty header", [b""], "bad_header"),
    ("bad msgpack", [b"\xc1\xc1"], "bad_header"),
    ("header is a list", [msgpack.packb([1, 2, 3])], "bad_header"),
    ("no type", [msgpack.packb({"prompt": "x"})], "bad_header"),
    ("type not a string", [msgpack.packb({"type": 7})], "bad_header"),
    ("bad json", [b'{"type": "status",'], "bad_header"),
    ("huge header", [_pack(type="status", pad="x" * 70_000)], "too_large"),
    ("unknown type", [_pack(type="render_everything")], "unknown_type"),
    ("daemon-only type", [_pack(type="result")], "unknown_type"),
    ("other major", [msgpack.packb({"type": "status", "v": "9.0"})], "version_mismatch"),
    ("generate with audio", [_pack(type="generate", prompt="x", seconds=1.0), AUDIO_BYTES], "bad_frames"),
    ("inpaint without audio", [_pack(type="inpaint", prompt="x", audio=GOOD_AUDIO, regions=[[0, 10]])], "bad_frames"),
    ("status with audio", [_pack(type="status"), AUDIO_BYTES], "bad_frames"),
    ("prompt not text", [_pack(type="generate", prompt=["x"], seconds=1.0)], "bad_field"),
    ("seconds is text", [_pack(type="generate", prompt="x", seconds="1")], "bad_field"),
    ("seconds NaN", [_pack(type="generate", prompt="x", seconds=float("nan"))], "bad_field"),
    ("seconds inf", [_pack(type="generate", prompt="x", seconds=float("inf"))], "bad_field"),
    ("rate 22050", [_pack(type="generate", prompt="x", seconds=1.0, sample_rate=22_050)], "bad_field"),
    (
        "overlapping regions",
        [_pack(type="inpaint", prompt="x", audio=GOOD_AUDIO, regions=[[0, 50], [40, 60]]), AUDIO_BYTES],
        "bad_field",
    ),
    ("bad job id", [_pack(type="cancel", job_id="../../etc/passwd")], "bad_field"),
    ("unknown job", [_pack(type="fetch", job_id="0" * 32)], "unknown_job"),
    (
        "audio length mismatch",
        [_pack(type="inpaint", prompt="x", audio=GOOD_AUDIO, regions=[[0, 10]]), AUDIO_BYTES[:-4]],
        "bad_audio",
    ),
    (
        "audio NaN",
        [_pack(type="continue", prompt="x", audio=GOOD_AUDIO, seconds=1.0), np.full((2, 100), np.nan, "<f4").tobytes()],
        "bad_audio",
    ),
    (
        "three channels",
        [_pack(type="continue", prompt="x", audio={**GOOD_AUDIO, "channels": 3}, seconds=1.0), AUDIO_BYTES],
        "bad_audio",
    ),
    (
        "audio rate 8000",
        [_pack(type="continue", prompt="x", audio={**GOOD_AUDIO, "sample_rate": 8000}, seconds=1.0), AUDIO_BYTES],
        "bad_audio",
    ),
    (
        "audio over the limit",
        [_pack(type="continue", prompt="x", audio={**GOOD_AUDIO, "samples": 10**8}, seconds=1.0), AUDIO_BYTES],
        "too_large",
    ),
    ("job too long", [_pack(type="generate", prompt="x", seconds=MAX_SECONDS + 1)], "too_long"),
]


@pytest.mark.parametrize("frames, code", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_message_gets_its_error_code(daemon, frames, code):
    socket = _raw(daemon.endpoint)
    try:
        socket.send_multipart(frames)
        reply = _reply(socket)
        assert (reply["type"], reply["code"]) == ("error", code), reply
        assert reply["message"] and "\n" not in reply["message"]
    finally:
        socket.close()


def test_every_daemon_header_carries_the_daemons_id(daemon):
    """Protocol 1.3: replies, job messages and errors all carry one daemon_id, made at its start."""
    socket = _raw(daemon.endpoint)
    try:
        for header in ({"type": "hello"}, {"type": "status"}, {"type": "heartbeat"}, {"type": "render_all"}):
            socket.send_multipart([_pack(**header)])
        socket.send_multipart([_pack(type="generate", prompt="tick", samples=4096, steps=2)])
        seen = [_reply(socket) for _ in range(4)]
        while seen[-1]["type"] not in ("result", "error", "cancelled") or len(seen) < 6:
            seen.append(_reply(socket, 60))
    finally:
        socket.close()
    assert [h["type"] for h in seen] == [
        "capabilities",
        "status",
        "heartbeat",
        "error",
        "queued",
        "progress",
        "progress",
        "result",
    ]
    ids = {h["daemon_id"] for h in seen}
    assert len(ids) == 1 and re.fullmatch(f"[0-9a-f]{{{P.DAEMON_ID_HEX}}}", ids.pop())


def test_json_headers_get_json_replies_with_request_id(daemon):
    socket = _raw(daemon.endpoint)
    try:
        socket.send_multipart([b'{"type":"heartbeat","v":"1.0","request_id":"j1"}'])
        frames = socket.recv_multipart() if socket.poll(10_000) else [b""]
        assert frames[0].startswith(b"{")
        header, encoding = P.decode_header(frames[0])
        assert (header["type"], header["request_id"], encoding) == ("heartbeat", "j1", "json")
    finally:
        socket.close()


def test_oversized_frame_is_dropped_and_the_daemon_goes_on(daemon, client):
    limit = client.hello()["max_frame_bytes"]
    socket = _raw(daemon.endpoint)
    try:
        socket.send_multipart([_pack(type="status"), b"\0" * (limit + 4096)])
        assert not socket.poll(1500)  # ZMQ_MAXMSGSIZE: the connection is dropped, nothing is read
    finally:
        socket.close()
    assert client.status()["state"] == "serving"


def test_asyncio_client_generates_with_progress(daemon):
    steps_seen = []

    async def main():
        async with AsyncClient(daemon.endpoint) as aclient:
            caps = await aclient.hello()
            result = await aclient.generate(
                "bell", samples=12_000, sample_rate=48_000, steps=3, progress=lambda s, t: steps_seen.append((s, t))
            )
            return caps, result

    caps, result = asyncio.run(main())
    assert caps["type"] == "capabilities"
    assert result.audio.shape == (1, 2, 12_000) and result.sample_rate == 48_000
    assert steps_seen == [(1, 3), (2, 3), (3, 3)]
