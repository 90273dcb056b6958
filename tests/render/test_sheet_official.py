"""`sa3 render --fp32` on released-layout folders made by the official code gives the official
audio for every mode a sheet has: generate, inpaint (inside the region), continue (the new part)
and transform; the takes are the model's audio as made (no chain, no loudness target)."""

from __future__ import annotations

import textwrap

import numpy as np
import soundfile as sf
from safetensors.torch import load_file

from sa3.render.runner import recorded_comment
from sa3core.audio import save_audio
from tests.conftest import REPO, run_sa3
from tests.released.test_pipeline_parity import (
    FADE,
    RATE,
    assert_far,
    assert_parity,
    official_audio,
    reference,
)

FIXTURES = REPO / "tests" / "fixtures" / "released"


def test_a_sheet_of_every_mode_renders_the_official_audio(tmp_path):
    input_audio = load_file(str(FIXTURES / "reference" / "input_audio.safetensors"))["audio"].float().numpy()
    gen, gen_call = reference("small_pingpong")
    inp, inp_call = reference("small_inpaint")
    cont, cont_call = reference("small_continue")
    a2a, a2a_call = reference("medium_a2a")
    two = int(0.2 * RATE)
    save_audio(tmp_path / "two.wav", input_audio[:, :two], RATE, "float")
    kept = int(cont_call["inpaint_mask_start_seconds"] * RATE)
    save_audio(tmp_path / "head.wav", input_audio[:, :kept], RATE, "float")
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(
        textwrap.dedent(
            f"""
            defaults: {{bit_depth: float, steps: 8, model: {FIXTURES / "small"}}}
            jobs:
              - {{name: gen, prompt: "{gen_call["prompt"]}", seconds: {gen_call["duration"]}, seed: {gen_call["seed"]}}}
              - {{name: other, prompt: "{gen_call["prompt"]}", seconds: {gen_call["duration"]}, seed: {gen_call["seed"] + 1}}}
              - name: inp
                mode: inpaint
                prompt: "{inp_call["prompt"]}"
                source: two.wav
                regions: ["{inp_call["inpaint_mask_start_seconds"]}:{inp_call["inpaint_mask_end_seconds"]}"]
                seed: {inp_call["seed"]}
              - {{name: cont, mode: continue, prompt: "{cont_call["prompt"]}", source: head.wav,
                  seconds: {(two - kept) / RATE}, seed: {cont_call["seed"]}}}
              - {{name: a2a, mode: transform, prompt: "{a2a_call["prompt"]}", source: two.wav, seed: {a2a_call["seed"]},
                  init_noise_level: {a2a_call["init_noise_level"]}, model: {FIXTURES / "medium"}}}
            """
        ).lstrip()
    )
    result = run_sa3("render", sheet, "-o", tmp_path / "out", "--fp32", "--quiet")
    assert result.returncode == 0, result.stderr

    def take(name: str) -> np.ndarray:
        return sf.read(tmp_path / "out" / f"{name}.wav", dtype="float32", always_2d=True)[0].T

    assert_parity(take("gen"), official_audio(gen)[0])
    assert_far(take("other"), official_audio(gen)[0])
    start, end = int(inp_call["inpaint_mask_start_seconds"] * RATE), int(inp_call["inpaint_mask_end_seconds"] * RATE)
    inside = slice(start + FADE, end - FADE)
    assert_parity(take("inp")[:, inside], official_audio(inp)[0][:, inside])
    np.testing.assert_array_equal(take("inp")[:, :start], input_audio[:, :start])
    new_part = slice(kept + FADE, two)
    assert_parity(take("cont")[:, new_part], official_audio(cont)[0][:, new_part])
    np.testing.assert_array_equal(take("cont")[:, :kept], input_audio[:, :kept])
    assert_parity(take("a2a"), official_audio(a2a)[0])
    fp32_gen = take("gen")
    # The default precision (bf16 matmuls where the CPU has them) makes other takes: a render without
    # --fp32 must not take the float32 files as finished (the precision is part of the identity).
    again = run_sa3("render", sheet, "-o", tmp_path / "out", "--quiet", "--jobs-only", "gen")
    assert again.returncode == 0, again.stderr
    from sa3core.backends import cpu_has_bf16

    if cpu_has_bf16():
        assert not np.array_equal(take("gen"), fp32_gen)
    assert "model=small:" in recorded_comment(tmp_path / "out" / "gen.wav")
    assert ":fp32" not in recorded_comment(tmp_path / "out" / "gen.wav")
