"""The LoRA slots (protocol 1.5) against a real `sa3 serve` on loopback: the released small fixture
(and random:tiny, which no adapter fits) with `--lora-dir` a folder holding copies of the released
dora-rows and lora-xs fixtures. The shim lists the adapters with the models they fit, a job with two
adapters makes the take the Python client gets for the same job and names them, the slot order is
the order they apply, a job without adapters (or with every strength 0) is the base model's take,
the slots and each take's adapters travel in the state, and an adapter that does not fit the chosen
model, or that the daemon no longer has, is one status line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from .conftest import REPO, Daemon, Host, test_signal, wait_for

SMALL = REPO / "tests" / "fixtures" / "released" / "small"
LORAS = REPO / "tests" / "fixtures" / "released" / "lora"
ADAPTERS = ("dora-rows", "lora-xs")
RATE, STEPS, SEED, PROMPT = 44100, 2, 5, "dusty breakbeat, tape hiss"
TAKE_SAMPLES = 88_200  # bar 2 of 4/4 at 120 bpm: 2 s
STYLED = [("dora-rows", 0.7), ("lora-xs", 1.5)]
CEILING_DB = -1.0  # sa3shim.TAKE_CEILING_DB (checked below)


def lora_folder(path):
    path.mkdir(parents=True, exist_ok=True)
    for name in ADAPTERS:
        shutil.copy(LORAS / f"{name}.safetensors", path / f"{name}.safetensors")
    return path


@pytest.fixture(scope="module")
def lora_daemon(tmp_path_factory):
    folder = lora_folder(tmp_path_factory.mktemp("loras"))
    d = Daemon(model=str(SMALL), also=("random:tiny",), args=("--lora-dir", str(folder))).start()
    yield d
    d.kill()


def render(p, timeout=120.0):
    """Render and wait for the take; an earlier error shows until the worker takes the request, so
    only a new take (or an error once the render has started) ends the wait."""
    done = p.renders_completed
    p.request_render()
    wait_for(lambda: p.status == "rendering" or p.renders_completed > done, 30, "the render to start")
    wait_for(lambda: p.renders_completed > done or p.status == "error", timeout, "a take")
    assert p.status != "error", p.status_text
    return p.takes[-1], p.take_audio(len(p.takes) - 1)


def refused(p, why: str) -> None:
    p.request_render()
    try:
        wait_for(lambda: p.status == "error" and p.status_text == why, 30, "the render to be refused")
    except AssertionError as err:
        raise AssertionError(f"{err}; status: {p.status} | {p.status_text}") from None


def one_bar_generator(shim, endpoint):
    """A processor set to fill bar 2 with a generate on the small model, with the daemon's answer in."""
    p = shim.Processor(endpoint=endpoint)
    p.prepare_to_play(RATE, 512)
    p.mode, p.bars, p.region_bars = "generate", 1, (2.0, 2.0)
    p.steps, p.seed, p.prompt = STEPS, SEED, PROMPT
    Host(p, RATE).play(test_signal(2, 4096, RATE))  # the host position: 120 bpm, 4/4
    wait_for(lambda: p.loras, 120, "the daemon's capabilities")
    return p


def client_take(endpoint, loras=None):
    """The same job through the Python client (bridge/client.py): the audio of its one take."""
    from bridge.client import Client

    with Client(endpoint) as client:
        result = client.run(
            "generate", PROMPT, samples=TAKE_SAMPLES, bpm=120.0, meter="4/4", sample_rate=RATE, seed=SEED,
            steps=STEPS, model="small", loras=loras,
        )  # fmt: skip
    assert result.header["loras"] == [{"name": n, "strength": s} for n, s in loras or []]
    return result.audio[0]


def as_the_plugin_plays(audio: np.ndarray) -> np.ndarray:
    """A daemon reply as the plugin keeps it: at most -1 dBFS sample peak, by one gain on the whole
    take (docs/plugin.md). The released family's daemon replies peak at full scale, so its takes
    are turned down; the shape and balance are the reply's."""
    ceiling = 10 ** (CEILING_DB / 20)
    peak = float(np.abs(audio).max())
    return audio if peak <= ceiling else (audio.astype(np.float64) * (ceiling / peak)).astype(np.float32)


def assert_plays(take_audio: np.ndarray, reply: np.ndarray) -> None:
    """The take is the reply held under the ceiling: equal to float32 rounding of the gain."""
    np.testing.assert_allclose(take_audio, as_the_plugin_plays(reply), rtol=0, atol=2e-7)


def test_the_adapters_are_listed_with_the_models_they_fit(shim, lora_daemon):
    from bridge.client import Client

    p = shim.Processor(endpoint=lora_daemon.endpoint)
    wait_for(lambda: p.loras, 120, "the daemon's capabilities")
    with Client(lora_daemon.endpoint) as client:
        told = client.hello()
    assert p.loras == told["loras"] and p.max_loras == told["max_loras"] == shim.MAX_LORAS
    listed = [(a["name"], a["file"], a["adapter_type"], a["fits"]) for a in p.loras]
    assert listed == [
        ("dora-rows", "dora-rows.safetensors", "dora-rows", ["small"]),  # random:tiny has other widths
        ("lora-xs", "lora-xs.safetensors", "lora-xs", ["small"]),
    ]
    assert all(isinstance(a["rank"], int) and a["rank"] > 0 for a in p.loras)
    assert p.job_model == "small"  # none chosen: the daemon's first, whose fits the menus show
    p.model = "random:tiny"
    assert p.job_model == "random:tiny"


def test_two_adapters_make_the_take_the_python_client_makes(shim, lora_daemon):
    assert shim.TAKE_CEILING_DB == CEILING_DB
    base = client_take(lora_daemon.endpoint)  # before any adapter was attached on the daemon
    styled = client_take(lora_daemon.endpoint, STYLED)
    reordered = client_take(lora_daemon.endpoint, STYLED[::-1])
    assert np.abs(styled - base).max() > 1e-3 and np.abs(reordered - styled).max() > 1e-3

    p = one_bar_generator(shim, lora_daemon.endpoint)
    p.lora_slots = STYLED
    take, audio = render(p)
    assert (take["model"], take["length"], take["loras"]) == ("small", TAKE_SAMPLES, STYLED)
    assert_plays(audio, styled)

    p.lora_slots = [None, *STYLED[::-1]]  # the slots' order is the order they apply
    take, audio = render(p)
    assert take["loras"] == STYLED[::-1]
    assert_plays(audio, reordered)

    # No adapters, and adapters at strength 0: the base model's take, bit for bit, though the
    # daemon now keeps a set attached to the model.
    for slots in ([], [("dora-rows", 0.0), None, ("lora-xs", 0.0)]):
        p.lora_slots = slots
        take, audio = render(p)
        assert take["loras"] == []
        assert_plays(audio, base)


def test_the_slots_and_each_takes_adapters_survive_a_state_round_trip(shim, lora_daemon):
    p = one_bar_generator(shim, lora_daemon.endpoint)
    p.lora_slots = [("lora-xs", -0.35), None, ("dora-rows", 1.25)]
    take, audio = render(p)
    assert take["loras"] == [("lora-xs", -0.35), ("dora-rows", 1.25)]
    state = p.get_state()

    reopened = shim.Processor(endpoint="tcp://127.0.0.1:9")  # no daemon there: kept as saved
    assert reopened.set_state(state)
    assert reopened.lora_slots == [("lora-xs", -0.35), (None, 1.0), ("dora-rows", 1.25), (None, 1.0)]
    assert reopened.takes == p.takes and np.array_equal(reopened.take_audio(0), audio)
    assert reopened.get_state() == state

    # Against the daemon, the restored slots make the same take again.
    again = shim.Processor(endpoint=lora_daemon.endpoint)
    assert again.set_state(state)
    again.prepare_to_play(RATE, 512)
    Host(again, RATE).play(test_signal(2, 4096, RATE))
    wait_for(lambda: again.loras, 120, "the daemon's capabilities")
    made, remade = render(again)
    assert made["loras"] == take["loras"]
    np.testing.assert_array_equal(remade, audio)


def test_an_adapter_that_does_not_fit_the_chosen_model_is_one_line(shim, lora_daemon):
    p = one_bar_generator(shim, lora_daemon.endpoint)
    p.model, p.lora_slots = "random:tiny", ["dora-rows"]
    refused(p, "LoRA 'dora-rows' does not fit model 'random:tiny' (it fits small); choose another adapter or model")
    p.model, p.lora_slots = None, [("dusty-tape", 0.5)]  # a project saved against another folder
    refused(
        p,
        f"the daemon at {lora_daemon.endpoint} has no LoRA 'dusty-tape'; choose one of dora-rows, lora-xs in the "
        "LoRA slots, or set that slot to none",
    )
    assert p.online and p.renders_completed == 0 and p.takes == []
    p.lora_slots = ["lora-xs"]  # chosen from the menu: the next render works
    assert render(p)[0]["loras"] == [("lora-xs", 1.0)]


def test_an_adapter_the_daemon_no_longer_has_is_one_line(shim, tmp_path):
    """The daemon comes back on the same port without lora-xs in its folder: the plugin's list follows
    it, and a render naming lora-xs says so instead of hanging, crashing or rendering without it."""
    folder = lora_folder(tmp_path / "loras")
    daemon = Daemon(model=str(SMALL), args=("--lora-dir", str(folder))).start()
    try:
        p = one_bar_generator(shim, daemon.endpoint)
        p.lora_slots = ["lora-xs"]
        render(p)
        daemon.kill()
        (folder / "lora-xs.safetensors").unlink()
        daemon.start()
        wait_for(lambda: [a["name"] for a in p.loras] == ["dora-rows"], 120, "the restarted daemon's adapters")
        refused(
            p,
            f"the daemon at {daemon.endpoint} has no LoRA 'lora-xs'; choose one of dora-rows in the LoRA slots, "
            "or set that slot to none",
        )
        assert p.renders_completed == 1 and len(p.takes) == 1
    finally:
        daemon.kill()
