"""Protocol 1.6's `exact_length` (docs/protocol.md 4.2) as the shim speaks it.

Against a stand-in daemon that records every header: the job carries `exact_length: true` only while
the setting is on, in every mode, and the take records it; a daemon that says less than 1.6 (which
would ignore the field and pad the take in silence), or a model whose `steering` lacks the option, is
one status line and nothing is sent; a job with it on waits for the daemon's capabilities; the
setting and each take's flag travel in the state, and a state saved before them loads with both off.

Against a real `sa3 serve` with the released small fixture: the exact-length take is
`Pipeline.generate(..., exact_length=True)` bit for bit (as the plugin plays it), and not the padded
take; on sa3's own tiny model it changes nothing.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from .conftest import REPO, Daemon, Host, test_signal, wait_for
from .test_processor import OFFLINE, loras, string
from .test_wire_1_4 import MODELS as MODELS_1_4
from .test_wire_1_4 import ready
from .test_wire_1_5 import LoraStandIn, ready_without_capabilities, refused, render, waited

# What a 1.6 daemon lists: both shipped families take exact_length. "keyed" and "plain" stand for a
# model whose family does not (none ships, but the shim must not send what the daemon refuses).
MODELS = [
    {"name": "house", "family": "sa3", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 380.0,
     "steering": ["exact_length", "scale_lock_db", "tail_seconds", "tempo_grid"]},
    {"name": "small", "family": "released", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 120.0,
     "steering": ["exact_length"]},
    {"name": "keyed", "family": "other", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 60.0,
     "steering": ["scale_lock_db", "tail_seconds"]},
    {"name": "plain", "family": "other", "default_steps": 8, "default_cfg": 1.0, "max_seconds": 60.0,
     "steering": []},
]  # fmt: skip


@pytest.fixture
def stand_in(request):
    d = LoraStandIn(**({"version": "1.6", "models": MODELS} | getattr(request, "param", {})))
    yield d
    d.close()


def test_the_shim_speaks_1_6(shim, stand_in):
    from bridge.protocol import PROTOCOL_VERSION

    assert shim.PROTOCOL_VERSION == PROTOCOL_VERSION == "1.6"
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert stand_in.hellos[0]["v"] == "1.6" and p.daemon_version == "1.6"
    assert [m["steering"] for m in p.models] == [m["steering"] for m in MODELS]


def test_exact_length_is_off_until_set(shim):
    p = shim.Processor(endpoint=OFFLINE)
    assert p.exact_length is False
    p.exact_length = True
    assert p.exact_length is True
    p.exact_length = False
    assert p.exact_length is False


@pytest.mark.parametrize("mode", ["generate", "inpaint", "continue", "transform"])
def test_exact_length_goes_with_a_job_only_when_on_and_the_take_records_it(shim, stand_in, mode):
    p, _, _ = ready(shim, stand_in.endpoint, mode)
    header, _ = render(p, stand_in.jobs)  # off (the default): the field is left out
    assert header["type"] == mode and "exact_length" not in header
    assert p.takes[-1]["exact_length"] is False

    p.exact_length = True
    header, _ = render(p, stand_in.jobs)
    assert header["type"] == mode and header["exact_length"] is True
    assert p.takes[-1]["exact_length"] is True  # the daemon's result does not echo it: the take keeps what was asked
    assert p.takes[-2]["exact_length"] is False  # earlier takes keep theirs

    p.exact_length = False
    header, _ = render(p, stand_in.jobs)
    assert "exact_length" not in header and p.takes[-1]["exact_length"] is False


@pytest.mark.parametrize("stand_in", [{"version": "1.5"}, {"version": "1.4", "models": MODELS_1_4}], indirect=True)
def test_a_daemon_before_1_6_never_gets_exact_length(shim, stand_in):
    """It would ignore the field and pad the take in silence: the render stops with one line instead."""
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    assert p.daemon_version == stand_in.version
    header, _ = render(p, stand_in.jobs)  # nothing of 1.6 asked for: it renders, as before
    assert "exact_length" not in header and p.takes[-1]["exact_length"] is False
    p.exact_length = True
    refused(
        p,
        stand_in.jobs,
        f"the daemon at {stand_in.endpoint} speaks protocol {stand_in.version}, which has no exact-length mode "
        "(added in 1.6); update sa3 there or turn exact length off",
    )
    assert len(p.takes) == 1  # no padded take made in its place
    p.exact_length = False  # turned off: it renders again
    assert "exact_length" not in render(p, stand_in.jobs)[0]


def test_a_model_whose_steering_lacks_exact_length_is_one_line(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "generate")
    p.exact_length = True
    p.model = "plain"
    refused(
        p,
        stand_in.jobs,
        "model 'plain' has no exact-length mode (it takes no steering options); "
        "turn exact length off or choose another model",
    )
    p.model = "keyed"
    refused(
        p,
        stand_in.jobs,
        "model 'keyed' has no exact-length mode (its steering options are scale_lock_db, tail_seconds); "
        "turn exact length off or choose another model",
    )
    p.exact_length = False  # the model runs without it
    header, _ = render(p, stand_in.jobs)
    assert header["model"] == "keyed" and "exact_length" not in header
    p.exact_length = True
    for model in ("small", "house", None):  # models that take it; None: the daemon's first, house
        p.model = model
        header, _ = render(p, stand_in.jobs)
        assert header["exact_length"] is True and header["model"] == (model or "house")


@pytest.mark.parametrize("version", ["1.6", "1.5"])
def test_a_job_with_exact_length_waits_for_the_daemons_capabilities(shim, version):
    """A daemon heard from (heartbeats) whose capabilities have not arrived (a dropped hello) might be a
    1.5 one, which would pad in silence: the job waits for them, asking again."""
    stand_in = LoraStandIn(version=version, models=MODELS)
    stand_in.hello_gate.clear()
    try:
        p, _, _ = ready_without_capabilities(shim, stand_in)
        p.exact_length = True
        p.request_render()
        waited(p, lambda: p.status_text.startswith("waiting for the daemon's capabilities"), "the job to wait")
        assert p.status_text == "waiting for the daemon's capabilities before asking for exact length"
        hellos = len(stand_in.hellos)
        time.sleep(1.5)  # three heartbeats
        assert stand_in.jobs == [] and p.status == "rendering"
        assert len(stand_in.hellos) > hellos  # asked again
        stand_in.hello_gate.set()
        if version == "1.6":
            waited(p, lambda: p.renders_completed == 1, "the take")
            assert stand_in.jobs[0][0]["exact_length"] is True and p.takes[0]["exact_length"] is True
        else:
            waited(p, lambda: p.status == "error", "the render to be refused")
            assert "speaks protocol 1.5, which has no exact-length mode" in p.status_text
            time.sleep(0.2)
            assert stand_in.jobs == [] and p.takes == []
    finally:
        stand_in.close()


# ---- state -----------------------------------------------------------------------------------


def test_the_setting_and_each_takes_flag_survive_a_state_round_trip(shim, stand_in):
    p, _, _ = ready(shim, stand_in.endpoint, "inpaint")
    render(p, stand_in.jobs)
    p.exact_length = True
    render(p, stand_in.jobs)
    state = p.get_state()
    assert [t["exact_length"] for t in p.takes] == [False, True]

    reopened = shim.Processor(endpoint=OFFLINE)
    assert reopened.set_state(state)
    assert reopened.exact_length is True
    assert reopened.takes == p.takes and np.array_equal(reopened.take_audio(1), p.take_audio(1))
    assert reopened.get_state() == state

    # The setting is a u8 right after the LoRA slots (all empty here); each take's follows its adapters
    # (none), just before its length and audio.
    slots = loras([("", 1.0)] * shim.LORA_SLOTS)
    setting_at = state.index(slots) + len(slots)
    assert state[setting_at] == 1
    last_take_at = len(state) - 8 * p.takes[1]["length"] - 8 - 1
    assert state[last_take_at] == 1
    assert state[last_take_at - 4 : last_take_at] == struct.pack("<I", 0)  # the take's (empty) adapter list
    for at in (setting_at, last_take_at):
        for flag in (2, 255):  # a flag is 0 or 1: anything else is no state
            r = shim.Processor(endpoint=OFFLINE)
            assert not r.set_state(state[:at] + bytes([flag]) + state[at + 1 :])
            assert r.exact_length is False and r.takes == []
    off = shim.Processor(endpoint=OFFLINE)
    assert off.set_state(
        state[:setting_at] + b"\0" + state[setting_at + 1 : last_take_at] + b"\0" + state[last_take_at + 1 :]
    )
    assert off.exact_length is False and [t["exact_length"] for t in off.takes] == [False, False]


def version_4_state(take_audio: np.ndarray) -> bytes:
    """A state saved before exact length (version 4, protocol 1.5), written here by hand."""
    settings = struct.pack("<IidiidddQid", 4, 0, 97.5, 7, 8, 3.0, 7.5, 6.0, 4242, 12, -1.0)  # version, mode ... lock
    state = b"SA3S" + settings + string("glassy") + string("tcp://127.0.0.1:6001") + string("") + string("small")
    state += struct.pack("<d", 0.9) + loras([("dusty-tape", 0.5), ("", 1.0), ("", 1.0), ("", 1.0)])
    state += struct.pack("<QiQ", 8, 0, 1)  # next take id, active take, one take
    state += struct.pack("<Q", 7) + string("old take") + struct.pack("<Qid", 99, 4, -1.0)  # id ... scale lock
    state += struct.pack("<idiidq", 0, 97.5, 7, 8, 48000.0, 96000)  # mode ... start
    state += string("small") + string("") + struct.pack("<d", 0.0) + loras([("dusty-tape", 0.5)])
    return state + struct.pack("<Q", take_audio.shape[1]) + take_audio.astype("<f4").tobytes()


def test_a_state_saved_before_exact_length_loads_with_it_off(shim):
    audio = test_signal(2, 4800, 48000)
    p = shim.Processor(endpoint=OFFLINE)
    p.exact_length = True  # what was set before the project opened does not leak into it
    assert p.set_state(version_4_state(audio))
    assert p.exact_length is False
    assert (p.mode, p.prompt, p.model, p.lora_slots[0]) == ("generate", "glassy", "small", ("dusty-tape", 0.5))
    take = p.takes[0]
    assert (take["prompt"], take["model"], take["loras"], take["exact_length"]) == (
        "old take",
        "small",
        [("dusty-tape", 0.5)],
        False,  # made by a 1.5 daemon: with the headroom
    )
    assert np.array_equal(p.take_audio(0), audio)
    q = shim.Processor(endpoint=OFFLINE)  # saved again, it is a current state
    assert q.set_state(p.get_state()) and q.takes == p.takes and q.exact_length is False


# ---- the real daemon, the released small fixture ---------------------------------------------

SMALL = REPO / "tests" / "fixtures" / "released" / "small"
RATE, STEPS, SEED, PROMPT = 44100, 2, 5, "dusty breakbeat, tape hiss"
TAKE_SAMPLES = 88_200  # bar 2 of 4/4 at 120 bpm: 2 s
CEILING_DB = -1.0  # sa3shim.TAKE_CEILING_DB (checked below)


@pytest.fixture(scope="module")
def released_daemon():
    d = Daemon(model=str(SMALL), also=("random:tiny",)).start()
    yield d
    d.kill()


def one_bar_generator(shim, endpoint, model):
    """A processor set to fill bar 2 with a generate on `model`, with the daemon's answer in."""
    p = shim.Processor(endpoint=endpoint)
    p.prepare_to_play(RATE, 512)
    p.mode, p.bars, p.region_bars, p.model = "generate", 1, (2.0, 2.0), model
    p.steps, p.seed, p.prompt = STEPS, SEED, PROMPT
    Host(p, RATE).play(test_signal(2, 4096, RATE))  # the host position: 120 bpm, 4/4
    wait_for(lambda: p.models, 120, "the daemon's capabilities")
    return p


def render_take(p, timeout=180.0):
    """Render and wait for the take; its description and audio."""
    done = p.renders_completed
    p.request_render()
    waited(p, lambda: p.status == "rendering" or p.renders_completed > done, "the render to start")
    waited(p, lambda: p.renders_completed > done or p.status == "error", "a take", timeout)
    assert p.status != "error", p.status_text
    return p.takes[-1], p.take_audio(len(p.takes) - 1)


def as_the_plugin_plays(audio: np.ndarray) -> np.ndarray:
    """A daemon reply as the plugin keeps it, bit for bit: sa3::limitTakePeak in float32 (one gain on
    the whole take when its sample peak is above -1 dBFS, stepped down until peak * gain is not)."""
    audio = np.asarray(audio, np.float32)
    peak = np.float32(np.abs(audio).max())
    ceiling = np.float32(10.0 ** (CEILING_DB / 20.0))
    if not peak > ceiling:
        return audio
    gain = np.float32(ceiling / peak)
    while np.float32(peak * gain) > ceiling:
        gain = np.nextafter(gain, np.float32(0.0))
    return audio * gain


def test_the_daemon_lists_exact_length_for_both_families(shim, released_daemon):
    p = shim.Processor(endpoint=released_daemon.endpoint)
    wait_for(lambda: p.models, 120, "the daemon's capabilities")
    assert p.daemon_version == "1.6"
    assert [(m["name"], m["family"]) for m in p.models] == [("small", "released"), ("random:tiny", "sa3")]
    assert all("exact_length" in m["steering"] for m in p.models)


def test_an_exact_length_take_is_the_pipelines_and_not_the_padded_one(shim, released_daemon, single_thread_torch):
    from sa3core.pipeline import Pipeline

    assert shim.TAKE_CEILING_DB == CEILING_DB
    p = one_bar_generator(shim, released_daemon.endpoint, "small")
    padded_take, padded = render_take(p)
    p.exact_length = True
    exact_take, exact = render_take(p)
    assert (padded_take["model"], padded_take["length"], padded_take["exact_length"]) == ("small", TAKE_SAMPLES, False)
    assert (exact_take["model"], exact_take["length"], exact_take["exact_length"]) == ("small", TAKE_SAMPLES, True)

    small = Pipeline.load(SMALL)
    job = dict(steps=STEPS, seed=SEED, bpm=120.0, meter="4/4", sample_rate=RATE)  # what the shim sends
    expected = small.generate(PROMPT, TAKE_SAMPLES, exact_length=True, **job)[0]
    np.testing.assert_array_equal(exact, as_the_plugin_plays(expected))
    np.testing.assert_array_equal(padded, as_the_plugin_plays(small.generate(PROMPT, TAKE_SAMPLES, **job)[0]))
    # The released model made another take without its headroom: the field reached it.
    assert np.abs(exact - padded).max() > 1e-3


def test_exact_length_changes_nothing_on_sa3s_own_models(shim, released_daemon):
    p = one_bar_generator(shim, released_daemon.endpoint, "random:tiny")
    _, padded = render_take(p)
    p.exact_length = True
    take, exact = render_take(p)
    assert (take["model"], take["exact_length"]) == ("random:tiny", True)
    np.testing.assert_array_equal(exact, padded)
