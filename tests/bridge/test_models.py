"""Several models in one daemon (protocol 1.4): `sa3 serve --model A --model B`, capabilities lists
them, a job names one in its `model` field, the first is the default; render sheets name them too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.client import Client, DaemonError
from tests.bridge.conftest import OldDaemon
from tests.conftest import REPO, run_sa3

RELEASED_SMALL = REPO / "tests" / "fixtures" / "released" / "small"
THREADS = 2


@pytest.fixture(scope="module")
def two_models():
    """A daemon serving the random tiny sa3 model (default) and the small released fixture."""
    from tests.bridge.conftest import DaemonProcess

    daemon = DaemonProcess("--threads", str(THREADS), "--model", str(RELEASED_SMALL), model="random:tiny")
    yield daemon.wait_ready()
    daemon.stop()


def test_capabilities_list_every_model_the_first_the_default(two_models):
    with Client(two_models.endpoint) as client:
        told = client.hello()
    names = [entry["name"] for entry in told["models"]]
    assert names == ["random:tiny", "small"]
    tiny, small = told["models"]
    assert (tiny["family"], small["family"]) == ("sa3", "released")
    assert (small["default_steps"], small["default_cfg"], small["steering"]) == (8, 1.0, ["exact_length"])
    assert {"scale_lock_db", "exact_length"} <= set(tiny["steering"]) and tiny["default_steps"] == told["default_steps"]
    assert small["max_seconds"] == pytest.approx(120.0, abs=0.01)
    assert "also small" in two_models.stderr()  # the listening line names the others


def test_a_two_model_daemon_serves_a_job_on_each(two_models):
    from sa3core.pipeline import Pipeline

    with Client(two_models.endpoint) as client:
        default = client.generate("dusty breakbeat", seconds=0.3, steps=1, seed=2)
        named = client.generate("dusty breakbeat", seconds=0.3, steps=1, seed=2, model="random:tiny")
        small = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small")
    assert default.header["model"] == named.header["model"] == "random:tiny"
    np.testing.assert_array_equal(default.audio, named.audio)
    assert small.header["model"] == "small" and small.header["steps"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        expected = Pipeline.load(RELEASED_SMALL).generate("dusty breakbeat", 13_230, 2, None, 2)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(small.audio, expected)


def test_an_unknown_model_is_a_bad_field_that_names_the_served_ones(two_models):
    with Client(two_models.endpoint) as client, pytest.raises(DaemonError) as err:
        client.generate("x", seconds=0.2, model="medium")
    assert err.value.code == "bad_field"
    assert "'medium'" in err.value.message and "random:tiny, small" in err.value.message


def test_the_cli_picks_a_daemon_model_by_name(two_models, tmp_path):
    """`sa3 generate --daemon E --model NAME` runs on that served model: the file holds the audio a
    client's job on it returns (at 24 bits); a name it does not serve is one line naming the served."""
    import soundfile

    out = tmp_path / "small.wav"
    args = ["generate", "dusty breakbeat", "--seconds", "0.3", "--steps", "2", "--seed", "2", "--quiet"]
    result = run_sa3(*args, "--daemon", two_models.endpoint, "--model", "small", "-o", out, "--bit-depth", "float")
    assert result.returncode == 0, result.stderr
    with Client(two_models.endpoint) as client:
        small = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small")
        tiny = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2)
    written = soundfile.read(out, dtype="float32")[0].T
    np.testing.assert_allclose(written, small.audio[0], atol=1e-6)
    assert np.abs(written - tiny.audio[0]).max() > 0.01  # the default model would be another take
    bad = run_sa3(*args, "--daemon", two_models.endpoint, "--model", "medium", "-o", tmp_path / "m.wav")
    assert bad.returncode == 2 and not (tmp_path / "m.wav").exists()
    last = bad.stderr.strip().splitlines()[-1]
    assert "'medium'" in last and "random:tiny, small" in last


def test_a_model_field_that_is_not_text_is_a_bad_field(two_models):
    from bridge import protocol as P

    with Client(two_models.endpoint) as client:
        client.send({"type": "generate", "v": P.PROTOCOL_VERSION, "prompt": "x", "seconds": 0.2, "model": 3,
                     "request_id": "m"})  # fmt: skip
        reply = None
        while reply is None or reply.get("request_id") != "m":
            reply, _ = client.receive(10.0)
    assert (reply["type"], reply["code"]) == ("error", "bad_field") and "'model'" in reply["message"]


def test_a_steering_option_on_the_released_model_is_refused(two_models):
    with Client(two_models.endpoint) as client, pytest.raises(DaemonError) as err:
        client.generate("x in D minor", seconds=0.2, steps=1, model="small", scale_lock_db=6.0)
    assert err.value.code == "invalid_request" and "no scale lock db" in err.value.message


def test_an_exact_length_job_is_the_in_process_exact_take_and_not_the_padded_one(two_models):
    """exact_length (1.6) reaches the released family: the daemon's take is the one
    `Pipeline.generate(..., exact_length=True)` makes at the same threads, bit for bit, and another
    take than the padded one (the test can fail: without the field the daemon pads)."""
    from sa3core.pipeline import Pipeline

    with Client(two_models.endpoint) as client:
        exact = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small", exact_length=True)
        padded = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small")
    assert exact.audio.shape == padded.audio.shape == (1, 2, 13_230)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        expected = Pipeline.load(RELEASED_SMALL).generate("dusty breakbeat", 13_230, 2, None, 2, exact_length=True)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(exact.audio, expected)
    assert np.abs(exact.audio - padded.audio).max() > 0.01


def test_the_cli_sends_exact_length_to_the_daemon(two_models, tmp_path):
    """`sa3 generate --daemon E --exact-length` writes the daemon's exact-length take."""
    import soundfile

    out = tmp_path / "exact.wav"
    args = ["generate", "dusty breakbeat", "--seconds", "0.3", "--steps", "2", "--seed", "2", "--quiet"]
    result = run_sa3(*args, "--daemon", two_models.endpoint, "--model", "small", "--exact-length", "-o", out,
                     "--bit-depth", "float")  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Client(two_models.endpoint) as client:
        exact = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small", exact_length=True)
        padded = client.generate("dusty breakbeat", seconds=0.3, steps=2, seed=2, model="small")
    written = soundfile.read(out, dtype="float32")[0].T
    np.testing.assert_allclose(written, exact.audio[0], atol=1e-6)
    assert np.abs(written - padded.audio[0]).max() > 0.01


def test_exact_length_that_is_not_a_bool_is_a_bad_field(two_models):
    from bridge import protocol as P

    with Client(two_models.endpoint) as client:
        client.send({"type": "generate", "v": P.PROTOCOL_VERSION, "prompt": "x", "seconds": 0.2, "model": "small",
                     "exact_length": "yes", "request_id": "e"})  # fmt: skip
        reply = None
        while reply is None or reply.get("request_id") != "e":
            reply, _ = client.receive(10.0)
    assert (reply["type"], reply["code"]) == ("error", "bad_field") and "'exact_length'" in reply["message"]


def test_exact_length_is_refused_to_a_1_5_daemon_in_one_line_and_no_job_is_sent(tmp_path):
    """A 1.5 daemon would ignore exact_length and pad in silence: the client and the CLI say so instead."""
    from sa3core.errors import Sa3Error

    daemon = OldDaemon("1.5")
    try:
        with Client(daemon.endpoint, silence=5.0, retries=0) as client, pytest.raises(Sa3Error) as err:
            client.generate("x", seconds=0.5, exact_length=True)
        message = str(err.value)
        assert "speaks protocol 1.5, which has no exact-length mode (added in 1.6)" in message
        assert len(message.splitlines()) == 1 and daemon.seen == ["hello"]
        result = run_sa3("generate", "x", "--seconds", "0.5", "--exact-length", "--daemon", daemon.endpoint,
                         "-o", tmp_path / "x.wav", "--quiet")  # fmt: skip
        assert result.returncode == 2 and not (tmp_path / "x.wav").exists()
        last = result.stderr.strip().splitlines()[-1]
        assert "speaks protocol 1.5, which has no exact-length mode (added in 1.6)" in last
        assert "drop --exact-length" in last and set(daemon.seen) == {"hello"}
    finally:
        daemon.close()


def test_one_model_given_twice_is_refused_at_start():
    result = run_sa3("serve", "--bind", "tcp://127.0.0.1:*", "--model", "random:tiny", "--model", "random:tiny")
    assert result.returncode == 2
    assert "served as 'random:tiny', which another --model already is" in result.stderr.strip().splitlines()[-1]


def test_an_unknown_second_model_is_refused_before_any_loads():
    result = run_sa3("serve", "--bind", "tcp://127.0.0.1:*", "--model", "random:tiny", "--model", "no-such-model")
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr.strip().splitlines()[-1]
    assert "listening" not in result.stderr
