"""The model menu (protocol 1.4) against a real `sa3 serve --model A --model B`: the shim reads the
served models from the daemon's capabilities reply, every job names one, the take records the model
that made it, a model the daemon does not serve is one status line, and the choice (with the mode,
the negative prompt and the init noise level) travels in the state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import Daemon, Host, test_signal, wait_for

GUIDED = "tiny-guided"  # the second model: a folder's own name is the name it is served as


@pytest.fixture(scope="module")
def guided_model(tiny_pipeline, tmp_path_factory):
    """The tiny model saved with other defaults than random:tiny's: 3 steps and cfg 3 (it guides,
    so a negative prompt changes what it makes)."""
    folder = tiny_pipeline.save(tmp_path_factory.mktemp("models") / GUIDED)
    settings = json.loads((folder / "model.json").read_text())
    settings |= {"steps": 3, "cfg": 3.0}
    (folder / "model.json").write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def two_models(guided_model):
    d = Daemon(model="random:tiny", also=(str(guided_model),)).start()
    yield d
    d.kill()


def render(p, timeout=60.0):
    """Render and wait for the take; the status may still show an earlier error until the worker
    has taken the request, so that counts only once the request has started."""
    done = p.renders_completed
    p.request_render()
    wait_for(lambda: p.status == "rendering" or p.renders_completed > done, 30, "the render to start")
    wait_for(lambda: p.renders_completed > done or p.status == "error", timeout, "a take")
    assert p.status != "error", p.status_text


def generate_one_bar(p, rate=44100):
    """Capture a little audio (so the host position is known) and fill bar 2 with a generate."""
    p.prepare_to_play(rate, 512)
    p.mode, p.bars, p.region_bars = "generate", 1, (2.0, 2.0)
    Host(p, rate).play(test_signal(2, 4096, rate))
    wait_for(lambda: p.models, 60, "the daemon's capabilities")
    render(p)
    return p.takes[-1], p.take_audio(len(p.takes) - 1)


def test_the_menu_lists_the_models_the_daemon_serves(shim, two_models):
    from bridge.client import Client

    p = shim.Processor(endpoint=two_models.endpoint)
    wait_for(lambda: p.models, 60, "the daemon's capabilities")
    with Client(two_models.endpoint) as client:
        told = client.hello()
    assert [m["name"] for m in p.models] == ["random:tiny", GUIDED]
    # every field the daemon sends for each model, as the Python client reads them
    assert p.models == [{key: entry[key] for key in p.models[0]} for entry in told["models"]]
    assert set(p.models[0]) == {"name", "family", "default_steps", "default_cfg", "max_seconds", "steering"}
    assert [(m["default_steps"], m["default_cfg"]) for m in p.models] == [(8, 1.0), (3, 3.0)]
    assert p.daemon_version == told["v"] == shim.PROTOCOL_VERSION
    assert p.model is None and p.model_default_steps == 8  # the daemon's default: its first model
    p.model = GUIDED
    assert p.model == GUIDED and p.model_default_steps == 3
    p.model = "medium"
    assert p.model_default_steps is None  # not a model it serves: not known
    p.model = ""
    assert p.model is None


def test_a_job_with_no_choice_runs_on_the_daemons_first_model(shim, two_models):
    p = shim.Processor(endpoint=two_models.endpoint)
    take, _ = generate_one_bar(p)
    assert (take["model"], take["steps"]) == ("random:tiny", 8)


def test_a_job_on_the_second_model_comes_back_from_it(shim, two_models, guided_model, single_thread_torch):
    from sa3core.pipeline import Pipeline

    p = shim.Processor(endpoint=two_models.endpoint)
    p.model, p.seed, p.prompt = GUIDED, 5, "glassy bells"
    take, audio = generate_one_bar(p)
    assert (take["model"], take["steps"], take["length"]) == (GUIDED, 3, 88_200)  # its default steps, not tiny's 8
    guided = Pipeline.load(guided_model)
    expected = guided.generate("glassy bells", 88_200, seed=5, bpm=120.0, meter="4/4")  # its defaults: 3 steps, cfg 3
    np.testing.assert_allclose(audio, expected[0], atol=1e-6, rtol=0)

    # The negative prompt reaches the model (it guides), and the take records it.
    p.negative_prompt = "low drone"
    take, steered = generate_one_bar(p)
    assert (take["model"], take["negative_prompt"]) == (GUIDED, "low drone")
    expected = guided.generate("glassy bells", 88_200, seed=5, bpm=120.0, meter="4/4", negative_prompt="low drone")
    np.testing.assert_allclose(steered, expected[0], atol=1e-6, rtol=0)
    assert np.abs(steered - audio).max() > 1e-3


def test_a_model_the_daemon_does_not_serve_is_one_clear_line(shim, two_models):
    p = shim.Processor(endpoint=two_models.endpoint)
    p.model = "medium"  # e.g. a project saved against another daemon
    p.prepare_to_play(44100, 512)
    p.mode, p.bars = "generate", 1
    Host(p, 44100).play(test_signal(2, 4096, 44100))
    wait_for(lambda: p.models, 60, "the daemon's capabilities")
    p.request_render()
    wait_for(lambda: p.status == "error", 30, "the render to be refused")
    assert p.status_text == (
        f"the daemon at {two_models.endpoint} does not serve model 'medium'; "
        "choose one of random:tiny, tiny-guided in the model menu"
    )
    assert p.online and p.renders_completed == 0 and p.takes == []
    p.model = GUIDED  # chosen from the menu: the next render works
    render(p)
    assert p.takes[0]["model"] == GUIDED


def test_a_model_gone_after_a_daemon_restart_is_one_clear_line(shim, guided_model):
    """The daemon comes back on the same port serving fewer models: the menu follows it, and a render
    on the model it dropped says so instead of hanging or crashing."""
    daemon = Daemon(model="random:tiny", also=(str(guided_model),)).start()
    try:
        p = shim.Processor(endpoint=daemon.endpoint, heartbeat_ms=200, offline_after_ms=60_000)
        p.prepare_to_play(44100, 512)
        p.mode, p.bars, p.steps, p.model = "generate", 1, 1, GUIDED
        Host(p, 44100).play(test_signal(2, 4096, 44100))
        wait_for(lambda: len(p.models) == 2, 60, "the daemon's capabilities")
        render(p)
        daemon.kill()
        daemon.also = ()
        daemon.start()
        wait_for(lambda: [m["name"] for m in p.models] == ["random:tiny"], 60, "the restarted daemon's models")
        p.request_render()
        wait_for(lambda: p.status == "error", 30, "the render to be refused")
        assert p.status_text == (
            f"the daemon at {daemon.endpoint} does not serve model '{GUIDED}'; "
            "choose one of random:tiny in the model menu"
        )
        assert p.renders_completed == 1 and len(p.takes) == 1
    finally:
        daemon.kill()


def test_model_mode_noise_level_and_negative_prompt_survive_a_state_round_trip(shim, two_models):
    rate, loop = 48000, (4.0, 6.0)
    p = shim.Processor(endpoint=two_models.endpoint)
    p.prepare_to_play(rate, 512)
    p.model, p.mode, p.init_noise_level, p.negative_prompt, p.steps = GUIDED, "transform", 0.35, "hiss", 1
    host = Host(p, rate)
    audio = test_signal(2, rate * 4, rate)
    wait_for(lambda: p.models, 60, "the daemon's capabilities")
    host.play(audio, loop_points=loop)
    render(p)
    take = p.takes[0]
    assert (take["model"], take["mode"], take["init_noise_level"], take["negative_prompt"]) == (
        GUIDED,
        "transform",
        0.35,
        "hiss",
    )
    state = p.get_state()

    reopened = shim.Processor(endpoint="tcp://127.0.0.1:9")  # no daemon there: the choice is kept as saved
    assert reopened.set_state(state)
    saved = (reopened.model, reopened.mode, reopened.init_noise_level, reopened.negative_prompt)
    assert saved == (GUIDED, "transform", 0.35, "hiss")
    assert reopened.takes == p.takes and np.array_equal(reopened.take_audio(0), p.take_audio(0))
    assert reopened.get_state() == state

    # Against the daemon, the restored instance renders on the saved model.
    again = shim.Processor(endpoint=two_models.endpoint)
    assert again.set_state(state)
    again.prepare_to_play(rate, 512)
    Host(again, rate).play(audio, loop_points=loop)
    wait_for(lambda: again.models, 60, "the daemon's capabilities")
    render(again)
    assert (again.takes[-1]["model"], again.takes[-1]["init_noise_level"]) == (GUIDED, 0.35)
