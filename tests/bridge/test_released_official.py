"""A daemon serving released-layout folders made by the official code (`sa3 serve --fp32`) gives
the official audio for generate, inpaint (inside the region), continue (the new part) and
transform: the references in tests/fixtures/released, within the parity tolerance."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from bridge.client import Client
from tests.released.test_pipeline_parity import (
    FADE,
    FIXTURES,
    RATE,
    assert_far,
    assert_parity,
    official_audio,
    reference,
)


@pytest.fixture(scope="module")
def official_daemon():
    from tests.bridge.conftest import DaemonProcess

    daemon = DaemonProcess(
        "--threads", "2", "--fp32", "--model", str(FIXTURES / "medium"), model=str(FIXTURES / "small")
    )
    yield daemon.wait_ready()
    daemon.stop()


def test_every_mode_through_the_daemon_is_the_official_audio(official_daemon):
    source = load_file(str(FIXTURES / "reference" / "input_audio.safetensors"))["audio"].float().numpy()
    gen, gen_call = reference("small_pingpong")
    inp, inp_call = reference("small_inpaint")
    cont, cont_call = reference("small_continue")
    a2a, a2a_call = reference("medium_a2a")
    two = int(0.2 * RATE)
    start, end = int(inp_call["inpaint_mask_start_seconds"] * RATE), int(inp_call["inpaint_mask_end_seconds"] * RATE)
    kept = int(cont_call["inpaint_mask_start_seconds"] * RATE)
    with Client(official_daemon.endpoint) as client:
        seconds = gen_call["duration"]
        made = client.generate(gen_call["prompt"], seconds=seconds, steps=8, seed=gen_call["seed"]).audio[0]
        other = client.generate(gen_call["prompt"], seconds=seconds, steps=8, seed=gen_call["seed"] + 1).audio[0]
        inpainted = client.inpaint(
            source[:, :two], inp_call["prompt"], regions=[(start, end)], steps=8, seed=inp_call["seed"]
        ).audio[0]
        continued = client.continue_(
            source[:, :kept], cont_call["prompt"], samples=two - kept, steps=8, seed=cont_call["seed"]
        ).audio[0]
        transformed = client.transform(
            source[:, :two], a2a_call["prompt"], init_noise_level=a2a_call["init_noise_level"], steps=8,
            seed=a2a_call["seed"], model="medium",
        ).audio[0]  # fmt: skip
    assert_parity(made, official_audio(gen)[0])
    assert_far(other, official_audio(gen)[0])
    inside = slice(start + FADE, end - FADE)
    assert_parity(inpainted[:, inside], official_audio(inp)[0][:, inside])
    assert (inpainted[:, :start] == source[:, :start]).all()
    new_part = slice(kept + FADE, two)
    assert_parity(continued[:, new_part], official_audio(cont)[0][:, new_part])
    assert (continued[:, :kept] == source[:, :kept]).all()
    assert_parity(transformed, official_audio(a2a)[0])
