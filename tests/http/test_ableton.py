"""The Ableton Live extension against a real `sa3 serve --http`: its request shapes (newest, and
the older ones that also send `seconds`, or the C++ server's `dist_shift`), its backend-type check
on /health before transform and continue, and its polling with ?consume=1. It reads `meta.seed`,
takes `status == "completed"` with `audio_data` as done, and places the clip unwarped over the
selection, so the frame count must be the selection's exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import stereo_tone

from .conftest import call, pcm16_of, poll_until_done, read_wav, wav_base64

BPM = 128.0


def selection_seconds(beats: float, bpm: float = BPM) -> float:
    return beats * 60.0 / bpm


def extension_request(prompt: str, **fields) -> dict:
    """The newest extension's fields: the prompt with ', N bpm' appended, sampler settings (shift
    'full' by default), then the job's own."""
    return {
        "prompt": f"{prompt}, {round(BPM)} bpm",
        "steps": 6,
        "cfg_scale": 1.2,
        "shift": "full",
        "seed": -1,
        **fields,
    }


def run(server, path: str, body: dict) -> tuple[dict, dict]:
    reply = call(server, "POST", path, body, timeout=60)
    assert reply.status == 200, reply.body[:300]
    answer = reply.json
    assert isinstance(answer["session_id"], str)
    done, seen = poll_until_done(server, answer["session_id"], every=0.3, consume=True)
    assert all(r["status"] in ("queued", "generating", "encoding") and r["success"] for r in seen)
    assert done["status"] == "completed" and done["audio_data"], done.get("error")
    # consume=1 handed the result over once: it is gone now.
    again = call(server, "GET", f"/poll_status/{answer['session_id']}?consume=1")
    assert again.status == 404 and again.json["success"] is False and again.json["error"]
    return answer, done


def frames_of(done: dict) -> np.ndarray:
    pcm, rate, fmt = read_wav(done["audio_data"])
    assert (rate, fmt["channels"], fmt["bits"]) == (44_100, 2, 16)
    return pcm


def test_health_does_not_look_like_the_cpp_server(server):
    """66fc763+ takes a backend for the C++ port (and sends only init_path jobs) when /health has
    status 'ok' with a string 'encoding' and a boolean 'loaded'."""
    health = call(server, "GET", "/health", timeout=2.5).json
    looks_cpp = (
        health.get("status") == "ok"
        and isinstance(health.get("encoding"), str)
        and isinstance(health.get("loaded"), bool)
    )
    assert not looks_cpp and health["status"] == "healthy"


def test_generate_fills_the_selection_exactly_and_meta_has_the_seed(server):
    seconds = selection_seconds(7)  # 7 beats at 128 bpm: 3.28125 s, not a whole number of anything
    answer, done = run(server, "/generate", extension_request("airy pad", duration=seconds, loras=[]))
    assert answer["target_samples"] == round(seconds * 44_100)
    assert frames_of(done).shape == (round(seconds * 44_100), 2)
    assert done["meta"]["seed"] == answer["seed"] and isinstance(done["meta"]["seed"], int)


@pytest.mark.parametrize(
    "fields",
    [
        {"duration": 2.5, "seconds": 2.5},  # 0f1adc7 and 66fc763 send both
        {"seconds": 2.5},  # only the older field
        {"duration": 2.5, "dist_shift": "LogSNR", "duration_padding_sec": 6.0, "keep_models": True},  # C++-style extras
    ],
    ids=["duration-and-seconds", "seconds-only", "cpp-fields"],
)
def test_older_request_shapes_are_taken(server, fields):
    body = {"prompt": f"bright arp, {round(BPM)} bpm", "steps": 4, "cfg_scale": 1.0, "seed": 77, **fields}
    answer, done = run(server, "/generate", body)
    assert answer["seed"] == done["meta"]["seed"] == 77
    assert frames_of(done).shape == (round(2.5 * 44_100), 2)


def test_transform_of_a_rendered_float_selection(server):
    seconds = selection_seconds(6)
    audio = stereo_tone(seconds, freq=180.0)
    body = extension_request("gritty distorted version", audio_data=wav_base64(audio, 44_100, "FLOAT"), strength=0.9)
    answer, done = run(server, "/transform", body)
    frames = round(audio.shape[1] / 44_100 * 44_100)
    assert answer["target_samples"] == frames and frames_of(done).shape == (frames, 2)
    assert done["meta"]["mode"] == "transform"


@pytest.mark.parametrize(("subtype", "rate", "channels"), [("PCM_24", 96_000, 2), ("PCM_32", 88_200, 1)])
def test_transform_takes_other_depths_rates_and_mono(server, subtype, rate, channels):
    audio = stereo_tone(1.3, rate=rate)[:channels]
    answer, done = run(server, "/transform", extension_request("glassy", audio_data=wav_base64(audio, rate, subtype)))
    frames = round(audio.shape[1] / rate * 44_100)
    assert (answer["input_sr"], answer["input_channels"]) == (rate, channels)
    assert frames_of(done).shape == (frames, 2)


def test_continue_spans_selection_plus_the_continue_beats(server):
    source_seconds, more = selection_seconds(8), selection_seconds(4)
    source = stereo_tone(source_seconds, freq=410.0)
    body = extension_request("and then the drop", audio_data=wav_base64(source, 44_100), continuation_seconds=more)
    answer, done = run(server, "/continue", body)
    pcm = frames_of(done)
    assert pcm.shape == (round((source_seconds + more) * 44_100), 2) == (answer["target_samples"], 2)
    sent = pcm16_of(body["audio_data"])
    np.testing.assert_array_equal(pcm[: sent.shape[0]], sent)


def test_an_extension_extensible_wav_is_read(server):
    audio = stereo_tone(1.0, rate=48_000)
    body = extension_request("tape", audio_data=wav_base64(audio, 48_000, "PCM_24", fmt="WAVEX"))
    answer, done = run(server, "/transform", body)
    assert answer["input_sr"] == 48_000 and frames_of(done).shape == (44_100, 2)
