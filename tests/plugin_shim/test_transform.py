"""The "transform the selection" mode (protocol 1.4) against a real `sa3 serve` (random tiny model):
the selection's own audio is made again after the prompt, the take is exactly the selection's
length at the host rate, in place on the timeline, and it is what the model makes of that audio
at the init noise level asked for."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import Host, test_signal, wait_for

CEILING = 10 ** (-1 / 20)  # -1 dBFS, docs/plugin.md


@pytest.mark.parametrize(
    "rate,bpm,meter,loop,on_bar_line",
    [
        (48000, 120.0, (4, 4), (4.0, 7.0), True),  # bar 2 to the third beat of bar 2
        (44100, 90.0, (3, 4), (4.0, 6.5), False),  # from the second beat of bar 2 of 3/4
        (96000, 137.0, (7, 8), (3.5, 5.25), True),  # bar 2 of 7/8 (3.5 quarters a bar); odd lengths
    ],
)
def test_a_transform_take_is_the_selection_made_again(shim, daemon, tiny_pipeline, rate, bpm, meter, loop, on_bar_line):
    import torch

    p = shim.Processor(endpoint=daemon.endpoint, context_seconds=1.0)
    p.prepare_to_play(rate, 512)
    p.mode, p.steps, p.seed, p.init_noise_level, p.prompt = "transform", 2, 3, 0.6, "tape-warped choir"
    host = Host(p, rate, bpm=bpm, meter=meter)
    audio = test_signal(2, int(rate * 5), rate)
    wait_for(lambda: p.online, 60, "the daemon")
    host.play(audio, block_sizes=(480, 512, 7), loop_points=loop)
    done = p.renders_completed
    p.request_render()
    wait_for(lambda: p.renders_completed > done or p.status == "error", 60, "the take")
    assert p.status == "idle", p.status_text

    start, end = (shim.ppq_to_samples(b, bpm, rate) for b in loop)
    assert (shim.bar_line_at_or_before(start, bpm, meter, rate) == start) == on_bar_line
    take = p.takes[-1]
    assert (take["start"], take["length"], take["sample_rate"]) == (start, end - start, rate)  # exactly the selection
    assert (take["mode"], take["init_noise_level"], take["model"], take["steps"]) == (
        "transform",
        0.6,
        "random:tiny",
        2,
    )
    made = p.take_audio(len(p.takes) - 1)
    assert made.shape == (2, end - start) and np.abs(made).max() <= CEILING

    out = host.play(audio, block_sizes=(333, 4096), loop_points=loop)
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, end:], audio[:, end:])
    assert np.array_equal(out[:, start:end], made)

    # What the model makes of the selection at 0.6, told the song's tempo only when the selection
    # starts on a bar line (the daemon runs with one thread: the same bf16 sums).
    told = {"bpm": bpm, "meter": f"{meter[0]}/{meter[1]}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        selection = audio[:, start:end]
        expected = tiny_pipeline.transform(
            selection, p.prompt, 0.6, steps=2, seed=3, sample_rate=rate, **(told if on_bar_line else {})
        )[0]
        at_default = tiny_pipeline.transform(
            selection, p.prompt, 0.9, steps=2, seed=3, sample_rate=rate, **(told if on_bar_line else {})
        )[0]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(made, expected, atol=1e-6, rtol=0)
    assert np.abs(made - at_default).max() > 1e-3  # the level asked for reached the model
    assert np.abs(made - selection).max() > 1e-3  # made again, not passed through
