"""The plugin's scale lock against real `sa3 serve` daemons: a set value reaches the daemon's
pipeline as the job's scale_lock_db, the model's setting leaves the field out, and each take
records the value it was made with (docs/protocol.md 4.2, added in 1.1)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import Daemon, Host, test_signal, wait_for

RATE, BPM, METER = 44100, 120.0, (4, 4)
KEYED_PROMPT = "warm pad chords in A minor"


def render_take(p, host, audio):
    """Render with the processor's settings (transport running) and return the new take's index."""
    done = p.renders_completed
    stale_error = p.status == "error"  # the last render's: wait until this one has started
    p.request_render()
    if stale_error:
        wait_for(lambda: p.status != "error" or p.renders_completed > done, 10, "the render to start")
    wait_for(lambda: p.renders_completed > done or p.status == "error", 60, "a take")
    assert p.status != "error", p.status_text
    host.play(audio[:, :512])
    return len(p.takes) - 1


def generate_processor(shim, daemon, seed: int):
    """A processor set to generate one bar at bar 2, online, having heard a block."""
    p = shim.Processor(endpoint=daemon.endpoint)
    p.prepare_to_play(RATE, 512)
    p.mode, p.bars, p.steps, p.seed, p.region_bars, p.prompt = "generate", 1, 2, seed, (2.0, 2.0), KEYED_PROMPT
    host = Host(p, RATE, bpm=BPM, meter=METER)
    audio = test_signal(2, RATE * 4, RATE)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio[:, :512])
    return p, host, audio


@pytest.fixture(scope="module")
def keyed_model(tmp_path_factory):
    """A small random model whose autoencoder has semitone channels, so the lock acts on a key;
    its model.json asks for 12 dB, the shipped model's setting."""
    import torch

    from sa3core.families.sa3 import ModelSettings
    from sa3core.models.dit import DiT, DiTConfig
    from sa3core.models.same import SAME, SAMEConfig
    from sa3core.pipeline import Pipeline
    from sa3core.text import TEXT_ENCODERS

    torch.manual_seed(0)
    same = SAME(
        SAMEConfig(
            width=32, heads=2, encoder_layers=1, decoder_layers=1, mlp_hidden=64, chunk_frames=0, pitch_channels=60
        )
    )
    text_dim = TEXT_ENCODERS.get("hash")().dim
    dit = DiT(DiTConfig(width=64, depth=2, heads=2, mlp_dim=128, memory_tokens=8, fourier_dim=32, text_dim=text_dim))
    settings = ModelSettings(name="keyed-small", text_encoder="hash", sampler="euler", steps=3, scale_lock_db=12.0)
    return Pipeline.from_parts(same, dit, settings).save(tmp_path_factory.mktemp("models") / "keyed")


@pytest.fixture(scope="module")
def keyed_daemon(keyed_model):
    d = Daemon(model=str(keyed_model)).start()
    yield d
    d.kill()


def test_a_set_scale_lock_reaches_the_daemon_and_the_models_setting_is_left_to_it(shim, keyed_daemon, keyed_model):
    """On a model that locks at 12 dB: left at the model's setting, the take is the model's own
    locked take; set to 0 or 24 dB, it is the take the pipeline makes when asked for exactly that.
    Three different takes, so the daemon saw three different requests: no field, 0, 24."""
    import torch

    from bridge import protocol as P
    from bridge.render import to_rate
    from sa3core.pipeline import Pipeline

    p, host, audio = generate_processor(shim, keyed_daemon, seed=5)
    for db in (None, 0.0, 24.0):
        p.scale_lock_db = db
        index = render_take(p, host, audio)
        assert p.takes[index]["scale_lock_db"] == db  # recorded on the take as asked
    assert [t["seed"] for t in p.takes] == [5, 5, 5] and [t["steps"] for t in p.takes] == [2, 2, 2]

    samples = p.takes[0]["length"]
    fields = {"prompt": KEYED_PROMPT, "samples": samples, "sample_rate": RATE, "seed": 5, "steps": 2}
    job = P.parse_job({"v": P.PROTOCOL_VERSION, "type": "generate", **fields, "bpm": BPM}, [], P.Limits())
    pipeline = Pipeline.load(keyed_model)  # the weights the daemon serves
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the daemon runs: the same sums
    try:
        want = {
            db: to_rate(
                pipeline.generate(
                    KEYED_PROMPT, job.model_samples, steps=2, seed=5, bpm=BPM, meter="4/4", scale_lock_db=db
                ),
                RATE,
                job.reply_samples,
            )[0]
            for db in (None, 0.0, 24.0)
        }
    finally:
        torch.set_num_threads(threads)
    assert np.abs(want[None] - want[0.0]).max() > 1e-3 and np.abs(want[None] - want[24.0]).max() > 1e-3
    for index, db in enumerate((None, 0.0, 24.0)):
        np.testing.assert_allclose(p.take_audio(index), want[db], atol=1e-6, rtol=0, err_msg=f"scale lock {db}")


def test_a_model_without_semitones_refuses_a_set_lock_and_takes_the_models_setting(shim, daemon):
    """The random tiny model cannot lock notes: any scale_lock_db above 0 with a keyed prompt is
    refused (so the field arrives), while the model's setting (no field) and 0 render. Takes and
    the processor's setting survive the state round trip."""
    p, host, audio = generate_processor(shim, daemon, seed=3)
    assert p.scale_lock_db is None
    render_take(p, host, audio)

    p.scale_lock_db = 6.0
    done = p.renders_completed
    p.request_render()
    wait_for(lambda: p.status == "error", 60, "the daemon's refusal")
    assert "cannot lock notes" in p.status_text, p.status_text
    assert p.renders_completed == done and len(p.takes) == 1

    p.scale_lock_db = 0.0
    render_take(p, host, audio)
    assert [t["scale_lock_db"] for t in p.takes] == [None, 0.0]

    reopened = shim.Processor(endpoint="tcp://127.0.0.1:9")
    assert reopened.set_state(p.get_state())
    assert reopened.scale_lock_db == 0.0 and reopened.takes == p.takes


def test_a_lock_above_the_daemons_limit_is_refused_before_sending(shim, daemon):
    """The core itself (as the JUCE front-end drives it) refuses more than MAX_SCALE_LOCK_DB with a
    status line; Python cannot set it, so this goes through a state blob."""
    import struct

    p, host, audio = generate_processor(shim, daemon, seed=1)
    state = p.get_state()
    at = 64  # the settings' scale lock in a version 2 state (plugin_shim/src/state.cpp)
    assert state[at : at + 8] == struct.pack("<d", -1.0)
    assert p.set_state(state[:at] + struct.pack("<d", shim.MAX_SCALE_LOCK_DB + 12) + state[at + 8 :])
    p.request_render()
    wait_for(lambda: p.status == "error", 30, "the refusal")
    assert p.status_text == "scale lock 60 dB is above the 48 dB the daemon takes; lower it"
    assert not p.takes
