"""Request checking without a daemon: lengths at every host rate, field errors, audio frames."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from bridge import protocol as P
from bridge.client import job_message
from sa3core import timebase

LIMITS = P.Limits(max_seconds=30.0)


def parse(header, frames=()):
    return P.parse_job({"v": P.PROTOCOL_VERSION, **header}, list(frames), LIMITS)


@pytest.mark.parametrize("rate", timebase.HOST_SAMPLE_RATES)
def test_four_bars_at_120_bpm_is_exact_at_every_rate(rate):
    job = parse({"type": "generate", "prompt": "drums", "bars": 4, "bpm": 120, "sample_rate": rate})
    assert job.model_samples == 352_800
    assert job.reply_samples == 8 * rate  # 4 bars of 4/4 at 120 bpm = 8 s exactly
    if rate == 48_000:
        assert job.reply_samples == 384_000


def test_samples_are_counted_at_the_reply_rate():
    job = parse({"type": "generate", "prompt": "", "samples": 96_000, "sample_rate": 96_000})
    assert (job.model_samples, job.reply_samples) == (44_100, 96_000)
    job = parse({"type": "generate", "prompt": "", "bars": 3, "bpm": 90, "meter": "6/8", "sample_rate": 48_000})
    assert job.reply_samples == timebase.bars_to_samples(3, 90, "6/8", 48_000)


def test_the_song_tempo_travels_with_the_job():
    """The host's tempo and meter reach the pipeline, which keeps that beat (bars or not)."""
    job = parse({"type": "generate", "prompt": "drums", "seconds": 2.0, "bpm": 97.5, "meter": "6/8"})
    assert (job.bpm, job.meter) == (97.5, "6/8")
    job = parse({"type": "generate", "prompt": "drums", "bars": 2, "bpm": 120})
    assert (job.bpm, job.meter) == (120.0, "4/4")
    job = parse({"type": "generate", "prompt": "drums at 92 bpm", "seconds": 2.0})
    assert job.bpm is None  # the pipeline reads the prompt's tempo itself


def test_the_scale_lock_travels_with_the_job():
    """Added in 1.1: absent means the model's setting (None), 0 turns it off."""
    assert parse({"type": "generate", "prompt": "pad in D minor", "seconds": 1.0}).scale_lock_db is None
    job = parse({"type": "generate", "prompt": "pad in D minor", "seconds": 1.0, "scale_lock_db": 0})
    assert job.scale_lock_db == 0.0
    header, _ = job_message("generate", "pad in D minor", seconds=1.0, scale_lock_db=6.0)
    assert parse(header).scale_lock_db == 6.0


def test_the_tail_travels_with_generate_jobs():
    """Added in 1.2: absent means the model's one-shot tail (None), 0 none, else that many seconds."""
    assert parse({"type": "generate", "prompt": "kick hit", "seconds": 1.0}).tail_seconds is None
    header, _ = job_message("generate", "kick hit", seconds=1.0, tail_seconds=0.25)
    assert parse(header).tail_seconds == 0.25
    audio = np.zeros((2, 44_100), dtype=np.float32)
    header, frames = job_message("continue", "more", audio=audio, seconds=1.0, tail_seconds=0.1)
    with pytest.raises(P.ProtocolError, match="applies to generate jobs"):
        parse(header, frames)


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"prompt": "x", "seconds": 1, "tail_seconds": -0.1}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "tail_seconds": 1.0}, "bad_field"),  # nothing left to generate
        ({"prompt": "x", "seconds": 1, "tail_seconds": math.nan}, "bad_field"),
        ({"prompt": 5, "seconds": 1}, "bad_field"),
        ({"prompt": "x"}, "bad_field"),  # no length
        ({"prompt": "x", "seconds": 1, "samples": 10}, "bad_field"),  # two lengths
        ({"prompt": "x", "seconds": math.nan}, "bad_field"),
        ({"prompt": "x", "seconds": -1.0}, "bad_field"),
        ({"prompt": "x", "seconds": True}, "bad_field"),
        ({"prompt": "x", "bars": 4}, "bad_field"),  # bars without bpm
        ({"prompt": "x", "bars": 4, "bpm": 5000}, "bad_field"),
        ({"prompt": "x", "bars": 4, "bpm": 120, "meter": "4/5"}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "sample_rate": 22_050}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "steps": 0}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "variations": 99}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "seed": -1}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "cfg": "high"}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "scale_lock_db": -1.0}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "scale_lock_db": 100.0}, "bad_field"),
        ({"prompt": "x", "seconds": 1, "scale_lock_db": "on"}, "bad_field"),
        ({"prompt": "x" * 5000, "seconds": 1}, "bad_field"),
        ({"prompt": "x", "seconds": 31}, "too_long"),
        ({"prompt": "x", "seconds": 1, "bpm": 5}, "bad_field"),  # a tempo without bars is checked too
        ({"prompt": "x", "seconds": 1, "bpm": 120, "meter": "seven"}, "bad_field"),
    ],
)
def test_bad_generate_fields_get_their_code(fields, code):
    with pytest.raises(P.ProtocolError) as caught:
        parse({"type": "generate", **fields})
    assert caught.value.code == code


def test_inpaint_regions_and_audio_checks():
    audio = np.zeros((1, 48_000), dtype=np.float32)
    header, frames = job_message(
        "inpaint", "fill", audio=audio, audio_rate=48_000, regions=[(30_000, 40_000), (0, 100)]
    )
    job = parse(header, frames)
    assert job.regions == [(0, 100), (30_000, 40_000)] and job.sample_rate == 48_000 and job.audio.shape == (1, 48_000)
    for regions, code in [([(10, 5)], "bad_field"), ([(0, 48_001)], "bad_field"), ([(0, 10), (5, 20)], "bad_field")]:
        header, frames = job_message("inpaint", "fill", audio=audio, audio_rate=48_000, regions=regions)
        with pytest.raises(P.ProtocolError) as caught:
            parse(header, frames)
        assert caught.value.code == code
    from sa3core.pipeline import Region

    header, frames = job_message("inpaint", "fill", audio=audio, audio_rate=48_000, regions=[Region(5, 9)])
    assert header["regions"] == [[5, 9]]
    header, frames = job_message("inpaint", "fill", audio=audio, audio_rate=48_000, regions_seconds=[(0.25, 0.5)])
    assert parse(header, frames).regions == [(12_000, 24_000)]


def test_audio_frames_must_match_their_description():
    info = P.AudioInfo(44_100, 2, 10)
    good = np.arange(20, dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(P.unpack_audio(P.pack_audio(good), info), good)
    assert P.pack_audio(good)[:8] == np.array([0.0, 1.0], dtype="<f4").tobytes()  # planar, little-endian
    for frame in (P.pack_audio(good)[:-4], P.pack_audio(np.full((2, 10), np.inf, dtype=np.float32))):
        with pytest.raises(P.ProtocolError) as caught:
            P.unpack_audio(frame, info)
        assert caught.value.code == "bad_audio"


def test_headers_decode_from_msgpack_and_json_and_refuse_junk():
    assert P.decode_header(msgpack.packb({"type": "status"})) == ({"type": "status"}, "msgpack")
    assert P.decode_header(b'{"type":"status"}') == ({"type": "status"}, "json")
    for junk in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"kind": "x"}), b"{not json", b"\xff" * 70_000):
        with pytest.raises(P.ProtocolError) as caught:
            P.decode_header(junk)
        assert caught.value.code in ("bad_header", "too_large")


def test_version_check_accepts_same_major_only():
    P.check_version({"v": "1.9"})
    P.check_version({})
    for bad in ("2.0", "0.9", "x", 1):
        with pytest.raises(P.ProtocolError) as caught:
            P.check_version({"v": bad})
        assert caught.value.code == "version_mismatch"
