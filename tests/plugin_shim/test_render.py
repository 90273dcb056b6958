"""The shim against a real `sa3 serve` daemon (random tiny model): regions regenerated in time,
everything else sample-identical, takes kept in the state, and a daemon that dies and returns."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import Daemon, Host, test_signal, wait_for

SIZES = (1, 4096, 64, 333, 2048, 7, 512, 1024, 4000, 128)  # block sizes change on every call


def render(p, host, audio, timeout=60.0, **play):
    """Ask for a render and keep the transport running (as a DAW would) until the take lands."""
    done = p.renders_completed
    p.request_render()
    wait_for(lambda: p.renders_completed > done or p.status == "error", timeout, "a take", tick=None)
    assert p.status != "error", p.status_text
    return host.play(audio, **play)


@pytest.mark.parametrize(
    "rate,bpm,meter,loop",
    [(44100, 120.0, (4, 4), (4.0, 8.0)), (48000, 90.0, (3, 4), None), (96000, 140.0, (7, 8), (3.5, 7.0))],
)
def test_region_is_regenerated_and_the_rest_is_sample_identical(shim, daemon, rate, bpm, meter, loop):
    p = shim.Processor(endpoint=daemon.endpoint, context_seconds=1.0)
    p.prepare_to_play(rate, 4096)
    p.steps = 2
    p.seed = 7
    p.region_bars = (2.0, 3.0)  # used when the host does not loop
    host = Host(p, rate, bpm=bpm, meter=meter)
    audio = test_signal(2, int(rate * 6), rate)
    wait_for(lambda: p.online, 60, "the daemon")
    first = host.play(audio, block_sizes=SIZES, loop_points=loop)
    assert np.array_equal(first, audio)  # dry until a result is ready

    out = render(p, host, audio, block_sizes=SIZES, loop_points=loop)
    region = p.resolve_region()
    start, end = region["start"], region["end"]
    if loop is None:
        assert (start, end) == (
            shim.bar_start_sample(2, bpm, meter, rate),
            shim.bar_start_sample(3, bpm, meter, rate),
        )
    else:
        assert (start, end) == (shim.ppq_to_samples(loop[0], bpm, rate), shim.ppq_to_samples(loop[1], bpm, rate))
    take = p.takes[-1]
    assert (take["start"], take["length"], take["sample_rate"], take["mode"]) == (start, end - start, rate, "inpaint")
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, end:], audio[:, end:])
    assert np.array_equal(out[:, start:end], p.take_audio(len(p.takes) - 1))
    assert not np.allclose(out[:, start:end], audio[:, start:end], atol=1e-3)
    assert np.isfinite(out).all()


def test_fill_generates_n_bars_on_a_bar_line(shim, daemon):
    rate, bpm, meter = 48000, 150.0, (3, 4)
    p = shim.Processor(endpoint=daemon.endpoint)
    p.prepare_to_play(rate, 512)
    p.mode, p.bars, p.steps, p.region_bars = "generate", 2, 2, (3.0, 3.0)
    host = Host(p, rate, bpm=bpm, meter=meter)
    audio = test_signal(2, rate * 5, rate)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio[:, :512])
    out = render(p, host, audio, block_sizes=(480, 512))
    start = shim.bar_start_sample(3, bpm, meter, rate)  # 2 bars of 1.2 s in
    length = shim.bars_to_samples(2, bpm, meter, rate)
    assert (start, length) == (115_200, 115_200)
    assert (p.takes[0]["start"], p.takes[0]["length"], p.takes[0]["mode"]) == (start, length, "generate")
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, start + length :], audio[:, start + length :])
    assert np.array_equal(out[:, start : start + length], p.take_audio(0))


def test_continue_follows_the_captured_audio(shim, daemon):
    rate = 44100
    p = shim.Processor(endpoint=daemon.endpoint, context_seconds=2.0)
    p.prepare_to_play(rate, 512)
    p.mode, p.bars, p.steps, p.region_bars = "continue", 1, 2, (3.0, 3.0)
    host = Host(p, rate)
    audio = test_signal(2, rate * 8, rate)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio)
    out = render(p, host, audio)
    start, length = 176_400, 88_200  # bar 3 of 4/4 at 120 bpm; one bar
    assert (p.takes[0]["start"], p.takes[0]["length"], p.takes[0]["mode"]) == (start, length, "continue")
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, start + length :], audio[:, start + length :])


def test_takes_survive_a_state_round_trip(shim, daemon):
    rate = 48000
    p = shim.Processor(endpoint=daemon.endpoint, context_seconds=1.0)
    p.prepare_to_play(rate, 512)
    p.steps, p.prompt = 2, "glassy bells"
    host = Host(p, rate)
    audio = test_signal(2, rate * 5, rate)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio, loop_points=(2.0, 4.0))
    render(p, host, audio, loop_points=(2.0, 4.0))
    p.seed, p.prompt = 99, "dark drone"
    last = render(p, host, audio, loop_points=(2.0, 4.0))
    assert [t["seed"] for t in p.takes] == [0, 99] and p.active_take == 1
    state = p.get_state()

    reopened = shim.Processor(endpoint="tcp://127.0.0.1:9")  # the daemon is not needed to play takes
    assert reopened.set_state(state)
    reopened.prepare_to_play(rate, 512)
    assert reopened.takes == p.takes and reopened.active_take == 1
    for i in range(2):
        assert np.array_equal(reopened.take_audio(i), p.take_audio(i))
    assert np.array_equal(Host(reopened, rate).play(audio, loop_points=(2.0, 4.0)), last)
    # The user switches between takes, or back to the dry track.
    reopened.select_take(0)
    first = Host(reopened, rate).play(audio)
    assert np.array_equal(first[:, rate : 2 * rate], p.take_audio(0))
    reopened.select_take(-1)
    assert np.array_equal(Host(reopened, rate).play(audio), audio)
    reopened.select_take(1)
    reopened.delete_take(0)
    assert [t["seed"] for t in reopened.takes] == [99] and reopened.active_take == 0
    # Reopened at another rate, takes play resampled at the same timeline position.
    at96 = shim.Processor(endpoint="tcp://127.0.0.1:9")
    at96.prepare_to_play(96000, 512)
    assert at96.set_state(state)
    assert (at96.takes[1]["start"], at96.takes[1]["length"], at96.takes[1]["sample_rate"]) == (96000, 96000, 96000)


def test_daemon_killed_mid_request_then_restarted(shim):
    rate = 44100
    daemon = Daemon().start()
    try:
        p = shim.Processor(endpoint=daemon.endpoint, context_seconds=1.0, heartbeat_ms=200, offline_after_ms=1000)
        p.prepare_to_play(rate, 512)
        p.steps = 40  # long enough to be killed in the middle
        host = Host(p, rate)
        audio = test_signal(2, rate * 8, rate)
        wait_for(lambda: p.online, 60, "the daemon")
        host.play(audio, loop_points=(8.0, 12.0))
        p.request_render()
        wait_for(lambda: p.status == "rendering" and p.progress > 0, 60, "the render to start")
        daemon.kill()

        # Audio keeps flowing, dry, while the plugin notices the daemon is gone.
        block = audio[:, :512]
        flowed = []

        def tick():
            out = block.copy()
            p.process_block(out, time_in_samples=0, is_playing=True)
            flowed.append(np.array_equal(out, block))

        wait_for(lambda: p.status == "offline", 10, "offline", tick=tick)
        assert flowed and all(flowed)
        assert np.array_equal(host.play(audio, block_sizes=SIZES, loop_points=(8.0, 12.0)), audio)
        assert p.renders_completed == 0

        # Back on the same port: the plugin reconnects by itself and resubmits the lost job.
        daemon.start()
        wait_for(lambda: p.online, 60, "reconnection")
        wait_for(lambda: p.renders_completed == 1, 120, "the resubmitted render")
        assert p.status == "idle", p.status_text
        out = host.play(audio, loop_points=(8.0, 12.0))
        start, end = 4 * rate, 6 * rate
        assert np.array_equal(out[:, :start], audio[:, :start])
        assert np.array_equal(out[:, end:], audio[:, end:])
        assert not np.allclose(out[:, start:end], audio[:, start:end], atol=1e-3)
    finally:
        daemon.kill()


def test_fill_tells_the_model_the_song_tempo(shim, daemon, tiny_pipeline):
    """The plugin sends the host's tempo and meter with the job, so the take is what the model
    makes when told them (the daemon serves random:tiny, the same weights as tiny_pipeline)."""
    import torch

    from bridge import protocol as P
    from bridge.render import to_rate

    rate, bpm, meter = 48000, 150.0, (3, 4)
    p = shim.Processor(endpoint=daemon.endpoint)
    p.prepare_to_play(rate, 512)
    p.mode, p.bars, p.steps, p.seed, p.region_bars = "generate", 2, 2, 11, (3.0, 3.0)
    host = Host(p, rate, bpm=bpm, meter=meter)
    audio = test_signal(2, rate * 5, rate)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio[:, :512])
    render(p, host, audio, block_sizes=(480, 512))
    take = p.take_audio(0)
    fields = {"prompt": p.prompt, "samples": take.shape[1], "sample_rate": rate, "seed": 11, "steps": 2}
    job = P.parse_job(
        {"v": P.PROTOCOL_VERSION, "type": "generate", **fields, "bpm": bpm, "meter": "3/4"}, [], P.Limits()
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the daemon runs: the same bf16 sums
    try:
        told = tiny_pipeline.generate(p.prompt, job.model_samples, steps=2, seed=11, bpm=bpm, meter="3/4")
        untold = tiny_pipeline.generate(p.prompt, job.model_samples, steps=2, seed=11)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(take, to_rate(told, rate, job.reply_samples)[0], atol=1e-6, rtol=0)
    assert np.abs(take - to_rate(untold, rate, job.reply_samples)[0]).max() > 1e-3


@pytest.fixture(scope="module")
def daemon_3_steps(tiny_pipeline, tmp_path_factory):
    """A daemon whose model's default is 3 steps (not the plugin's old 8)."""
    import json

    folder = tiny_pipeline.save(tmp_path_factory.mktemp("models") / "tiny-3-steps")
    settings = json.loads((folder / "model.json").read_text())
    settings["steps"] = 3
    (folder / "model.json").write_text(json.dumps(settings))
    d = Daemon(model=str(folder)).start()
    yield d
    d.kill()


def test_steps_follow_the_daemons_model_default(shim, daemon_3_steps):
    rate = 44100
    p = shim.Processor(endpoint=daemon_3_steps.endpoint, context_seconds=1.0)
    p.prepare_to_play(rate, 512)
    assert p.steps is None  # nothing set: the model's default, which only the daemon knows
    host = Host(p, rate)
    audio = test_signal(2, rate * 4, rate)
    wait_for(lambda: p.model_default_steps is not None, 60, "the daemon's capabilities")
    assert p.model_default_steps == 3
    host.play(audio, loop_points=(2.0, 4.0))
    render(p, host, audio, loop_points=(2.0, 4.0))
    assert p.takes[-1]["steps"] == 3  # the request left `steps` out; the take says what ran
    p.steps = 2
    render(p, host, audio, loop_points=(2.0, 4.0))
    assert p.takes[-1]["steps"] == 2


def start_long_render(p, host, audio, loop):
    """Ask for a render long enough (100 steps) to be in flight when its daemon is killed."""
    p.steps = 100
    host.play(audio, loop_points=loop)
    p.request_render()
    wait_for(lambda: p.status == "rendering" and p.progress > 0, 60, "the render to start")


def test_daemon_restarted_before_the_plugin_sees_it_offline(shim):
    """Killed and back on the same port within the plugin's offline timeout: the new daemon
    answers the heartbeats, so only its daemon_id (protocol 1.3) tells the job is gone. The plugin
    resubmits it once instead of waiting for a result that never comes."""
    rate, loop = 44100, (8.0, 12.0)
    daemon = Daemon().start()
    try:
        p = shim.Processor(
            endpoint=daemon.endpoint,
            context_seconds=1.0,
            heartbeat_ms=200,
            offline_after_ms=60_000,  # longer than the restart: the plugin never sees it offline
            request_timeout_ms=600_000,  # nor gives up on its own
        )
        p.prepare_to_play(rate, 512)
        host = Host(p, rate)
        audio = test_signal(2, rate * 8, rate)
        wait_for(lambda: p.online, 60, "the daemon")
        start_long_render(p, host, audio, loop)
        daemon.kill()
        daemon.start()
        wait_for(lambda: "restarted" in p.status_text or p.renders_completed, 30, "the restart to be noticed")
        wait_for(lambda: p.renders_completed == 1 or p.status == "error", 60, "the resubmitted render")
        assert p.status == "idle", p.status_text
        assert p.takes[0]["steps"] == 100
        out = host.play(audio, loop_points=loop)
        start, end = 4 * rate, 6 * rate
        assert np.array_equal(out[:, :start], audio[:, :start])
        assert not np.allclose(out[:, start:end], audio[:, start:end], atol=1e-3)
    finally:
        daemon.kill()


def test_a_render_lost_to_a_second_restart_fails_with_one_line(shim):
    rate, loop = 44100, (8.0, 12.0)
    daemon = Daemon().start()
    try:
        p = shim.Processor(endpoint=daemon.endpoint, context_seconds=1.0, heartbeat_ms=200, offline_after_ms=60_000)
        p.prepare_to_play(rate, 512)
        host = Host(p, rate)
        audio = test_signal(2, rate * 8, rate)
        wait_for(lambda: p.online, 60, "the daemon")
        start_long_render(p, host, audio, loop)
        daemon.kill()
        daemon.start()
        wait_for(lambda: "rendering again" in p.status_text and p.progress > 0, 60, "the resubmitted render")
        daemon.kill()
        daemon.start()
        wait_for(lambda: p.status == "error", 30, "the render to fail")
        assert p.status_text == "the daemon restarted again and lost the render a second time; render again"
        assert p.renders_completed == 0 and p.online
        p.steps = 2  # and the next render works
        p.request_render()
        wait_for(lambda: p.renders_completed == 1, 60, "the next render")
        assert p.status == "idle" and len(p.takes) == 1
    finally:
        daemon.kill()
