"""gary4juce's SA3 tab against a real `sa3 serve --http`: the requests it builds (JUCE JSON, the
fields and values of Source/PluginEditor.Jerry.cpp), its raw-socket health probe, and every check
it makes on the answers (PluginEditor.cpp handlePollingResponse). gary4juce always appends
", <rounded DAW bpm> bpm[, <key>]" to the prompt and sends `loras` (often []), `seed` (-1 unless
set), `shift` (logsnr by default), steps 1..16 and cfg 0.5..2."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from sa3core import timebase
from sa3core.audio import resample_to_length
from tests.conftest import stereo_tone

from .conftest import call, pcm16_of, poll_until_done, raw_health_probe, read_wav, wav_base64

GARY_LORAS: list = []  # no LoRA slider above 0: gary4juce still sends the list


def gary_request(prompt: str, bpm: float = 120.0, key: str = "", **fields) -> dict:
    """The JSON object gary4juce builds: the prompt with ', N bpm[, key]' appended, its sampler
    settings, the job's own fields, and `loras`."""
    full = prompt + (", " if prompt else "") + f"{round(bpm)} bpm" + (f", {key}" if key else "")
    body = {"prompt": full, "steps": 4, "cfg_scale": 1.0, "shift": "logsnr", "seed": -1, **fields}
    body.setdefault("loras", GARY_LORAS)
    return body


def submit_like_gary(server, path: str, body: dict) -> dict:
    """What makes gary4juce's submit fail: non-2xx, a body that is not an object, success false or
    missing, no session_id. It shows the seed from the reply as text."""
    reply = call(server, "POST", path, body, headers={"Content-Type": "application/json"}, timeout=15)
    assert 200 <= reply.status < 300, reply.body[:300]
    answer = reply.json
    assert isinstance(answer, dict) and answer.get("success") is True
    assert isinstance(answer.get("session_id"), str) and answer["session_id"]
    assert isinstance(answer.get("seed"), int) and str(answer["seed"])
    return answer


def poll_like_gary(server, session_id: str, transform: bool = False) -> dict:
    """gary4juce's poll loop, with its checks on every reply; returns the completed one."""
    done, seen = poll_until_done(server, session_id, every=0.25)
    last_progress = 0
    for reply in seen:
        assert reply["success"] is True  # false fails the job ("processing failed: ...")
        assert reply["generation_in_progress"] is True or reply["transform_in_progress"] is True
        assert reply["transform_in_progress"] is transform
        # A non-empty queue_status.status keeps its stall detector quiet between progress steps.
        assert reply["queue_status"]["status"] in ("queued", "ready")
        assert reply["status"] in ("queued", "generating", "encoding")
        assert isinstance(reply["progress"], int) and last_progress <= reply["progress"] <= 92
        last_progress = reply["progress"]
    assert done["success"] is True
    assert done["generation_in_progress"] is False and done["transform_in_progress"] is False
    assert done["status"] == "completed" and done["progress"] == 100 and done["audio_data"]
    return done


def check_take(done: dict, frames: int) -> np.ndarray:
    """The WAV gary4juce saves as it comes: PCM 16-bit, 44.1 kHz, stereo, exactly ``frames`` long."""
    pcm, rate, fmt = read_wav(done["audio_data"])
    assert (fmt["tag"], fmt["bits"], rate, fmt["channels"]) == (1, 16, 44_100, 2)
    assert pcm.shape == (frames, 2)
    assert np.abs(pcm).max() > 0, "a silent take"
    assert done["meta"]["sample_rate"] == 44_100 and done["meta"]["samples"] == frames
    return pcm


def test_raw_socket_health_probe_says_online_within_its_budget(server):
    online, seconds, response = raw_health_probe("127.0.0.1", server.port)
    assert online and seconds < 1.0, response[:400]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body["status"] == "healthy" and body["success"] is True and body["service"] == "sa3"
    assert body["model_loaded"] is True and body["sample_rate"] == 44_100


def test_other_platforms_health_get_and_the_lora_list(server):
    reply = call(server, "GET", "/health", headers={"Accept": "application/json"}, timeout=1.5)
    assert reply.status == 200 and reply.json["status"] == "healthy"
    loras = call(server, "GET", "/loras", headers={"Accept": "application/json"}, timeout=8)
    assert loras.status == 200 and loras.json["success"] is True
    assert loras.json["loras"] == []  # no --lora-dir: gary4juce shows no sliders


def test_dice_prompts_have_the_buckets_gary4juce_reads(server):
    reply = call(server, "GET", "/prompts", timeout=15)
    body = reply.json
    assert reply.status == 200 and body["success"] is True
    dice = body["prompts"]["dice"]
    for bucket in ("generic", "instrumental", "drums"):
        assert dice[bucket] and all(isinstance(p, str) and "bpm" not in p for p in dice[bucket])
    # With LoRAs ticked it asks ?lora=a,b and reports those with no pool of their own.
    body = call(server, "GET", "/prompts?lora=Vinyl,tape", timeout=15).json
    assert body["success"] is True and body["loras"] == ["vinyl", "tape"]
    assert body["missing_loras"] == ["vinyl", "tape"] and body["prompts"]["dice"]["generic"]


def test_generate_gives_the_exact_duration_and_echoes_the_seed(server):
    body = gary_request("dusty lofi drums", bpm=93.0, key="C minor", duration=3)
    answer = submit_like_gary(server, "/generate", body)
    assert answer["target_samples"] == 3 * 44_100 and answer["prompt"] == "dusty lofi drums, 93 bpm, C minor"
    done = poll_like_gary(server, answer["session_id"])
    check_take(done, 3 * 44_100)
    assert done["meta"]["seed"] == answer["seed"] and 0 <= answer["seed"] <= 99_999  # -1: a random seed
    assert done["meta"]["mode"] == "generate" and done["meta"]["bpm"] == 93.0


def test_a_set_seed_is_kept_and_makes_the_same_take(server):
    body = gary_request("warm rhodes chords", duration=2, seed=424242)
    first = submit_like_gary(server, "/generate", body)
    second = submit_like_gary(server, "/generate", body)
    assert first["seed"] == second["seed"] == 424242
    a = poll_like_gary(server, first["session_id"])["audio_data"]
    b = poll_like_gary(server, second["session_id"])["audio_data"]
    assert a == b


def test_loop_is_bar_exact_at_the_tempo_gary4juce_writes_into_the_prompt(server):
    # A 123.5 bpm session: gary4juce writes "124 bpm" and sends bars but no bpm field.
    body = gary_request("rolling techno bassline", bpm=123.5, bars=4)
    assert "bpm" not in body
    answer = submit_like_gary(server, "/generate/loop", body)
    frames = round(4 * 240 / 124 * 44_100)
    assert answer["bpm"] == 124.0 and answer["bars"] == 4 and answer["target_samples"] == frames
    assert answer["loop_duration"] == pytest.approx(4 * 240 / 124, abs=1e-6)
    done = poll_like_gary(server, answer["session_id"])
    check_take(done, frames)
    assert done["meta"]["loop"]["target_samples"] == frames and done["meta"]["meter"] == "4/4"


def test_transform_of_a_48k_recording_keeps_its_duration_at_44k_stereo(server):
    # myBuffer.wav: what gary4juce recorded, 16-bit at the DAW's 48 kHz.
    rate, seconds = 48_000, 2.5
    recording = stereo_tone(seconds, rate=rate)
    body = gary_request("turn it into a string section", audio_data=wav_base64(recording, rate), strength=0.5)
    answer = submit_like_gary(server, "/transform", body)
    frames = round(recording.shape[1] / rate * 44_100)
    assert (answer["input_sr"], answer["target_samples"], answer["strength"]) == (rate, frames, 0.5)
    done = poll_like_gary(server, answer["session_id"], transform=True)
    check_take(done, frames)
    assert done["meta"]["transform"]["input_duration"] == pytest.approx(seconds)


def test_continue_returns_the_source_sample_exact_then_the_new_part(server):
    # myOutput.wav: an earlier take, 16-bit 44.1 kHz; the slider says a 6 s total.
    source_seconds, total = 4.2, 6
    source = stereo_tone(source_seconds, freq=330.0)
    body = gary_request(
        "keep the groove going",
        audio_data=wav_base64(source, 44_100),
        continuation_seconds=total - source_seconds,
        continuation_mode="inpaint",
    )
    answer = submit_like_gary(server, "/continue", body)
    frames = round((source_seconds + (total - source_seconds)) * 44_100)
    assert answer["target_samples"] == frames == total * 44_100
    done = poll_like_gary(server, answer["session_id"])
    pcm = check_take(done, frames)
    sent = pcm16_of(body["audio_data"])  # the file's own 16-bit samples
    np.testing.assert_array_equal(pcm[: sent.shape[0]], sent)
    assert np.abs(pcm[sent.shape[0] :]).max() > 0


def test_continue_of_a_48k_source_keeps_it_at_44k_sample_for_sample(server):
    rate, source_seconds = 48_000, 3.0
    source = stereo_tone(source_seconds, freq=250.0, rate=rate)
    body = gary_request(
        "more", audio_data=wav_base64(source, rate), continuation_seconds=1.5, continuation_mode="latent_prefix"
    )
    answer = submit_like_gary(server, "/continue", body)
    done = poll_like_gary(server, answer["session_id"])
    pcm = check_take(done, round(4.5 * 44_100))
    kept = round(source.shape[1] / rate * 44_100)
    as_read = (pcm16_of(body["audio_data"]).T / 32768).astype(np.float32)  # the 16-bit file, read back
    expected = resample_to_length(as_read, rate, timebase.SAMPLE_RATE, kept)
    expected = np.clip(np.round(expected.T * 32768), -32768, 32767)
    np.testing.assert_array_equal(pcm[:kept], expected)
    assert done["meta"]["continue"]["mode"] == "latent_prefix"


def test_localhost_may_be_ipv6_and_still_reaches_sa3(server):
    """gary4juce sends jobs to `localhost`, which may resolve to ::1: sa3 listens there too."""
    try:  # where the machine has an IPv6 loopback, sa3 must listen on it; where not, not claim it
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        assert "[::1]" not in server.stderr()
        return
    assert "[::1]" in server.stderr()

    class V6:
        host, port = "::1", server.port

    reply = call(V6, "GET", "/loras", timeout=8)
    assert reply.status == 200 and reply.json["success"] is True
