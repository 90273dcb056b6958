"""Bad requests get 400 with success:false and one readable line; wrong methods 405, unknown
paths and sessions 404; nothing a client sends stops the server or its ZeroMQ side."""

from __future__ import annotations

import base64
import io
import socket

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client
from tests.conftest import stereo_tone

from .conftest import call, wav_base64

PROMPT = "test tone, 120 bpm"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def nan_wav() -> str:
    audio = stereo_tone(0.5)
    audio[0, 100] = np.nan
    return wav_base64(audio, 44_100, "FLOAT")


def long_wav(seconds: float) -> str:
    return wav_base64(np.zeros((1, int(seconds * 8000)), np.float32), 8000)


def six_channel_wav() -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((4410, 6), np.float32), 44_100, subtype="PCM_16", format="WAV")
    return b64(buffer.getvalue())


def empty_wav() -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((0, 2), np.float32), 44_100, subtype="PCM_16", format="WAV")
    return b64(buffer.getvalue())


BAD = [
    ("/generate", {}, "prompt"),
    ("/generate", {"prompt": "   "}, "prompt"),
    ("/generate", {"prompt": 5}, "prompt"),
    ("/generate", {"prompt": PROMPT, "duration": 0}, "duration"),
    ("/generate", {"prompt": PROMPT, "duration": 300.5}, "300"),
    ("/generate", {"prompt": PROMPT, "duration": "long"}, "duration"),
    ("/generate", {"prompt": PROMPT, "seconds": -2}, "duration"),
    ("/generate", {"prompt": PROMPT, "steps": 0}, "steps"),
    ("/generate", {"prompt": PROMPT, "steps": 2.5}, "steps"),
    ("/generate", {"prompt": PROMPT, "cfg_scale": 50}, "cfg_scale"),
    ("/generate", {"prompt": PROMPT, "seed": 2**40}, "seed"),
    ("/generate", {"prompt": PROMPT, "shift": "warp"}, "shift"),
    ("/generate", {"prompt": PROMPT, "dist_shift": "Sideways"}, "dist_shift"),
    ("/generate", {"prompt": PROMPT, "loras": "vinyl"}, "loras"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "vinyl", "strength": 0.5}]}, "unknown LoRA 'vinyl'"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v", "interval_min": 0.8, "interval_max": 0.2}]}, "interval"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v", "interval_min": 0.2}]}, "whole sampling"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v", "interval_max": 0.5}]}, "whole sampling"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v", "layer_filter": "attn"}]}, "every layer"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v", "strength": 3}]}, "outside -2..2"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": "v"}, {"name": "V"}]}, "twice"),
    ("/generate", {"prompt": PROMPT, "loras": [{"name": f"v{i}"} for i in range(9)]}, "limit is 8"),
    ("/generate", {"prompt": PROMPT, "init_path": "/etc/passwd"}, "init_path"),
    ("/generate", {"prompt": PROMPT, "model": "medium"}, "medium"),
    ("/generate", {"prompt": PROMPT, "bpm": 5}, "bpm"),
    ("/generate", {"prompt": "x" * 2001}, "2000"),
    ("/generate/loop", {"prompt": "no tempo here", "bars": 4}, "tempo"),
    ("/generate/loop", {"prompt": PROMPT, "bars": 0}, "bars"),
    ("/generate/loop", {"prompt": PROMPT, "bars": 4, "meter": "5/3"}, "meter"),
    ("/generate/loop", {"prompt": "slow, 20 bpm", "bars": 32}, "300"),
    ("/transform", {"prompt": PROMPT}, "audio_data"),
    ("/transform", {"prompt": PROMPT, "audio_data": "!!!! not base64"}, "base64"),
    ("/transform", {"prompt": PROMPT, "audio_data": b64(b"RIFF, but not really a WAV file at all")}, "not a WAV"),
    ("/transform", {"prompt": PROMPT, "audio_data": 12}, "audio_data"),
    ("/transform", {"prompt": PROMPT, "audio_data": nan_wav()}, "NaN"),
    ("/transform", {"prompt": PROMPT, "audio_data": long_wav(300.5)}, "300"),
    ("/transform", {"prompt": PROMPT, "audio_data": six_channel_wav()}, "6 channels"),
    ("/transform", {"prompt": PROMPT, "audio_data": empty_wav()}, "no samples"),
    (
        "/continue",
        {"prompt": PROMPT, "audio_data": wav_base64(stereo_tone(0.5), 44_100), "continuation_mode": "sideways"},
        "continuation_mode",
    ),
    (
        "/continue",
        {"prompt": PROMPT, "audio_data": wav_base64(stereo_tone(0.5), 44_100), "continuation_seconds": 0},
        "continuation_seconds",
    ),
    ("/continue", {"prompt": PROMPT, "audio_data": long_wav(200), "continuation_seconds": 100.5}, "300"),
    (
        "/continue",
        {"prompt": PROMPT, "audio_data": wav_base64(stereo_tone(0.5), 44_100), "tail_pad_seconds": 61},
        "tail_pad",
    ),
]


@pytest.mark.parametrize(("path", "body", "named"), BAD, ids=[f"{p}-{n}" for p, _, n in BAD])
def test_a_bad_request_is_a_400_with_one_readable_line(server, path, body, named):
    reply = call(server, "POST", path, body)
    assert reply.status == 400, reply.body[:300]
    answer = reply.json
    assert answer["success"] is False and named in answer["error"]
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"] and len(answer["error"]) < 400


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON list"),
        (b"", "JSON body is required"),
        (b"\xff\xfe{", "not valid JSON"),
        (b'{"prompt": "a", "duration": NaN}', "finite"),
    ],
    ids=["broken", "list", "empty", "not-utf8", "nan"],
)
def test_a_malformed_body_is_a_400(server, raw, named):
    reply = call(server, "POST", "/generate", raw)
    assert reply.status == 400 and reply.json["success"] is False and named in reply.json["error"]


def test_wrong_methods_unknown_paths_and_unknown_sessions(server):
    reply = call(server, "GET", "/generate")
    assert reply.status == 405 and reply.json["success"] is False and reply.headers["Allow"] == "POST"
    assert call(server, "POST", "/health", {}).status == 405
    assert call(server, "DELETE", "/poll_status/abc").headers["Allow"] == "GET"
    assert call(server, "GET", "/cancel/abc").headers["Allow"] == "POST"
    reply = call(server, "GET", "/no/such/thing")
    assert reply.status == 404 and reply.json["success"] is False
    for path in ("/poll_status/0123456789abcdef0123456789abcdef", "/poll_status/x?consume=1", "/poll_status/"):
        reply = call(server, "GET", path)
        assert reply.status == 404 and reply.json["success"] is False and "unknown session" in reply.json["error"]
    assert call(server, "POST", "/cancel/nope").status == 404


def test_the_300_second_limit_takes_300_and_refuses_more(server):
    reply = call(server, "POST", "/generate", {"prompt": PROMPT, "duration": 300, "steps": 1})
    assert reply.status == 200 and reply.json["target_samples"] == 300 * 44_100
    cancel = call(server, "POST", f"/cancel/{reply.json['session_id']}")
    assert cancel.status == 200 and cancel.json["status"] in ("cancelled", "cancelling")
    assert call(server, "POST", "/generate", {"prompt": PROMPT, "duration": 300.01}).status == 400


def test_a_body_over_256_mib_is_refused_before_it_is_read(server):
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        head = f"POST /transform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {300 * 1024**2}\r\n\r\n"
        sock.sendall(head.encode() + b'{"prompt": "')
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert call(server, "GET", "/health").json["status"] == "healthy"


def test_the_zeromq_side_is_unaffected_by_all_of_it(server):
    for path, body, _ in BAD[:8]:
        call(server, "POST", path, body)
    with Client(server.endpoint, silence=60.0) as client:
        result = client.generate("still here", samples=9_000, steps=1, seed=3)
    assert result.audio.shape == (1, 2, 9_000)
