"""Protocol 1.4: the ``transform`` job and ``negative_prompt``, checked without a daemon and run on
a real daemon serving the small released fixture (tests/fixtures/released/small), whose audio must
equal the in-process pipeline's for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from bridge import client as C
from bridge import protocol as P
from bridge.client import Client, DaemonError
from sa3core.audio import save_audio
from tests.conftest import REPO, run_sa3, stereo_tone

RELEASED_SMALL = REPO / "tests" / "fixtures" / "released" / "small"
LIMITS = P.Limits(max_seconds=30.0)
THREADS = 2  # the daemon's and this process's torch threads alike, so the sums run in the same order


def parse(header, frames=()):
    return P.parse_job({"v": P.PROTOCOL_VERSION, **header}, list(frames), LIMITS)


def transform_header(**fields):
    audio = stereo_tone(0.25)
    return {"type": "transform", "prompt": "x", "audio": {"sample_rate": 44_100, "channels": 2, "samples": 11_025},
            **fields}, [P.pack_audio(audio)]  # fmt: skip


# ---------------------------------------------------------------------------- checks, no daemon
def test_transform_keeps_the_input_length_and_defaults_to_0_9():
    job = parse(*transform_header())
    assert (job.mode, job.init_noise_level, job.audio.shape) == ("transform", 0.9, (2, 11_025))
    assert parse(*transform_header(init_noise_level=0.25)).init_noise_level == 0.25
    assert parse(*transform_header(init_noise_level=1)).init_noise_level == 1.0


@pytest.mark.parametrize("level", [0, 0.0, -0.1, 1.0001, 7])
def test_an_init_noise_level_outside_0_to_1_is_bad_field(level):
    with pytest.raises(P.ProtocolError) as err:
        parse(*transform_header(init_noise_level=level))
    assert err.value.code == "bad_field" and "init_noise_level" in err.value.message


def test_an_init_noise_level_that_is_no_number_is_bad_field():
    with pytest.raises(P.ProtocolError) as err:
        parse(*transform_header(init_noise_level="lots"))
    assert err.value.code == "bad_field" and "init_noise_level" in err.value.message


def test_an_init_noise_level_on_another_mode_is_bad_field():
    with pytest.raises(P.ProtocolError) as err:
        parse({"type": "generate", "prompt": "x", "seconds": 1.0, "init_noise_level": 0.5})
    assert err.value.code == "bad_field" and "applies to transform jobs" in err.value.message


def test_a_transform_without_audio_is_bad_frames():
    header, _ = transform_header()
    with pytest.raises(P.ProtocolError) as err:
        parse(header, [])
    assert err.value.code == "bad_frames"


@pytest.mark.parametrize("mode", ["generate", "inpaint", "continue", "transform"])
def test_every_mode_takes_a_negative_prompt(mode):
    header, frames = transform_header(type=mode, negative_prompt="muddy, distorted")
    if mode == "generate":
        header, frames = {"type": "generate", "prompt": "x", "seconds": 1.0, "negative_prompt": "muddy"}, []
    header.update({"regions": [[0, 100]]} if mode == "inpaint" else {"seconds": 0.5} if mode == "continue" else {})
    assert parse(header, frames).negative_prompt.startswith("muddy")


@pytest.mark.parametrize("value", [3, ["a"], "n" * 2001])
def test_a_bad_negative_prompt_is_bad_field(value):
    with pytest.raises(P.ProtocolError) as err:
        parse({"type": "generate", "prompt": "x", "seconds": 1.0, "negative_prompt": value})
    assert err.value.code == "bad_field" and "negative_prompt" in err.value.message


class _OldDaemonClient:
    """A stand-in for Client whose daemon speaks protocol 1.3."""

    def __init__(self, *args, **kwargs) -> None:
        self.silence, self.retries = 0, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def hello(self):
        return {"v": "1.3", "default_steps": 8}

    def run(self, *args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("a 1.4 field was sent to a 1.3 daemon")


@pytest.mark.parametrize(
    ("mode", "extra", "words"),
    [
        ("transform", {}, "no transform jobs (added in 1.4)"),
        ("generate", {"negative_prompt": "mud"}, "no negative prompts"),
    ],
)
def test_a_1_3_daemon_is_told_apart_before_a_1_4_field_is_sent(monkeypatch, mode, extra, words):
    from argparse import Namespace

    monkeypatch.setattr(C, "Client", _OldDaemonClient)
    args = Namespace(steps=2, cfg=None, seed=0, variations=1, quiet=True, init_noise_level=0.9, **extra)
    with pytest.raises(
        C.Sa3Error, match=r"speaks protocol 1\.3, which has " + words.replace("(", r"\(").replace(")", r"\)")
    ):
        C.generate_via_daemon("tcp://127.0.0.1:9", mode, "x", args, audio=stereo_tone(0.1))


# ---------------------------------------------------------------------------- a real daemon
@pytest.fixture
def released_daemon(start_daemon):
    return start_daemon("--threads", str(THREADS), model=str(RELEASED_SMALL))


@pytest.fixture
def released_pipeline():
    from sa3core.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield Pipeline.load(RELEASED_SMALL)
    torch.set_num_threads(threads)


def test_a_transform_through_the_daemon_equals_the_pipeline(released_daemon, released_pipeline):
    source = stereo_tone(0.5)
    with Client(released_daemon.endpoint) as client:
        assert "transform" in client.hello()["modes"]
        result = client.transform(source, "warm pad", init_noise_level=0.7, seed=3, steps=2, progress=None)
        default = client.transform(source, "warm pad", seed=3, steps=2)
    expected = released_pipeline.transform(source, "warm pad", 0.7, steps=2, seed=3)
    assert result.audio.shape == (1, 2, source.shape[1]) and result.header["mode"] == "transform"
    np.testing.assert_array_equal(result.audio, expected)
    np.testing.assert_array_equal(default.audio, released_pipeline.transform(source, "warm pad", 0.9, steps=2, seed=3))


def test_a_negative_prompt_through_the_daemon_equals_the_pipeline(released_daemon, released_pipeline):
    fields = dict(seconds=0.5, seed=5, steps=2, cfg=3.0)
    with Client(released_daemon.endpoint) as client:
        steered = client.generate("bright bells", negative_prompt="low drone", **fields)
        plain = client.generate("bright bells", **fields)
    expected = released_pipeline.generate("bright bells", 22_050, 2, 3.0, 5, negative_prompt="low drone")
    np.testing.assert_array_equal(steered.audio, expected)
    assert not np.array_equal(steered.audio, plain.audio)  # the field reached the sampler


def test_a_bad_init_noise_level_gets_bad_field_from_the_daemon(released_daemon):
    with Client(released_daemon.endpoint) as client, pytest.raises(DaemonError) as err:
        client.transform(stereo_tone(0.2), "x", init_noise_level=1.5)
    assert err.value.code == "bad_field" and "init_noise_level" in err.value.message


def test_sa3_transform_through_the_daemon(released_daemon, released_pipeline, tmp_path):
    source = save_audio(tmp_path / "in.wav", stereo_tone(0.5), bit_depth="float")
    out = tmp_path / "out.wav"
    result = run_sa3(
        "transform", source, "warm pad", "--init-noise-level", "0.6", "--steps", "2", "--seed", "4",
        "--negative-prompt", "hiss", "--cfg", "2", "--daemon", released_daemon.endpoint, "-o", out,
        "--bit-depth", "float", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(out, always_2d=True, dtype="float32")
    expected = released_pipeline.transform(
        stereo_tone(0.5), "warm pad", 0.6, steps=2, cfg=2.0, seed=4, negative_prompt="hiss"
    )
    assert (rate, audio.shape) == (44_100, (22_050, 2))
    np.testing.assert_array_equal(audio.T, expected[0])
    assert "transform" in released_daemon.stderr()
