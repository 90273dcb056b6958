"""The generic Pipeline (and the real `sa3` command) on released-layout folders gives the official audio.

Every whole-call reference in tests/fixtures/released that the pipeline can express is run
through ``Pipeline.load(folder)`` at float32 (``--fp32``) and compared with the official output:
max difference at most 1e-2 and correlation at least 0.9999 per sample (inpainting: inside the
region, past its crossfades; outside it the input is returned bit-exact). On the CPU that made the
references the whole calls agree to about 1e-6; the bound covers another CPU's kernels: the text
encoder runs in bf16 (as the official code runs it), and where a bf16 product rounds the other
way, a whole 8-step call moves by up to 4.3e-3 (measured on an AMD EPYC against references made
on an Intel Xeon; correlation 0.999997). Each case also shows
that a deliberately wrong input (another prompt or seed) moves the output far beyond that
tolerance, so a pass means the right thing was reproduced.

References with a padded frame (the 0.2 s calls) are compared with their ``trained`` variant: sa3
follows the padding semantics the weights were trained with, not the official CPU path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sa3core.errors import Sa3Error
from sa3core.families.released import ReleasedFamily, padded_frames, valid_frames
from sa3core.pipeline import Pipeline, Region
from tests.conftest import run_sa3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
REFERENCE = FIXTURES / "reference"
TOLERANCE_MAX, TOLERANCE_CORR = 1e-2, 0.9999
RATE = 44_100
FADE = 441  # splicing's 10 ms crossfade at each inner border of a region


def reference(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = REFERENCE / f"generate_{name}.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        call = json.loads(handle.metadata()["fixture"])["call"]
    return load_file(str(path)), call


def official_audio(tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """The reference under the trained padding semantics (the same as ``audio`` without padding)."""
    return tensors.get("audio.trained", tensors["audio"]).numpy()


def compare(ours: np.ndarray, official: np.ndarray) -> tuple[float, float]:
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(official, np.float64).ravel()
    return float(np.abs(a - b).max()), float(np.corrcoef(a, b)[0, 1])


def assert_parity(ours: np.ndarray, official: np.ndarray) -> None:
    assert ours.shape == official.shape
    diff, corr = compare(ours, official)
    assert diff <= TOLERANCE_MAX and corr >= TOLERANCE_CORR, f"max diff {diff:.2e}, correlation {corr:.7f}"


def assert_far(wrong: np.ndarray, official: np.ndarray) -> None:
    """A wrong input misses the reference by ten times the tolerance or more, on one measure."""
    diff, corr = compare(wrong, official)
    assert diff > 10 * TOLERANCE_MAX or corr < 1 - 10 * (1 - TOLERANCE_CORR), f"max diff {diff:.3f}, corr {corr:.5f}"


@pytest.fixture(scope="module")
def pipelines():
    loaded: dict[str, Pipeline] = {}

    def get(folder: str) -> Pipeline:
        if folder not in loaded:
            loaded[folder] = Pipeline.load(FIXTURES / folder, bf16=False)
        return loaded[folder]

    return get


@pytest.fixture(scope="module")
def input_audio() -> np.ndarray:
    return load_file(str(REFERENCE / "input_audio.safetensors"))["audio"].float().numpy()  # (2, 24576)


def generate(pipeline: Pipeline, call: dict, **change) -> np.ndarray:
    call = {**call, **change}
    return pipeline.generate(
        call["prompt"],
        int(call["duration"] * RATE),
        steps=call["steps"],
        cfg=call.get("cfg_scale"),
        seed=call["seed"],
        negative_prompt=call.get("negative_prompt"),
    )


GENERATE_CASES = [  # (folder, reference, the wrong input)
    ("small", "small_pingpong", {"prompt": "rain on a tin roof at night"}),
    ("small-base", "small_base_euler_apg", {"seed": 13}),
    ("small-base", "small_base_negative", {"negative_prompt": None}),
    ("medium", "medium_pingpong", {"seed": 15}),
    ("medium-base", "medium_base_euler_apg", {"prompt": "rain on a tin roof at night"}),
]


@pytest.mark.parametrize(("folder", "name", "wrong"), GENERATE_CASES, ids=[c[1] for c in GENERATE_CASES])
def test_generate_gives_the_official_audio(pipelines, folder, name, wrong):
    tensors, call = reference(name)
    pipeline = pipelines(folder)
    official = official_audio(tensors)
    assert_parity(generate(pipeline, call), official)
    assert_far(generate(pipeline, call, **wrong), official)


def test_the_defaults_are_the_official_ones_per_objective(pipelines):
    """Post-trained: ping-pong, 8 steps, no guidance; base: Euler, 50 steps, guidance 7 (APG)."""
    post, base = pipelines("small").settings, pipelines("small-base").settings
    assert (post.objective, post.sampler, post.steps, post.cfg) == ("rf_denoiser", "pingpong", 8, 1.0)
    assert (base.objective, base.sampler, base.steps, base.cfg) == ("rectified_flow", "euler", 50, 7.0)
    tensors, call = reference("small_pingpong")  # the defaults are the reference's call
    out = pipelines("small").generate(call["prompt"], int(call["duration"] * RATE), seed=call["seed"])
    assert_parity(out, official_audio(tensors))


def test_a_float32_text_encoder_is_the_official_fp32_text_reference():
    """The text encoder's precision is part of the official numbers: bf16 (the default) gives the
    official run, float32 text the fixture's fp32-text reference, 2.3e-3 from it. Float32 text
    lands on its own reference, at least ten times nearer than on the bf16 run."""
    fp32_text = Pipeline.load(FIXTURES / "small", bf16=False, text_dtype=torch.float32)
    tensors, call = reference("small_pingpong")
    ours = generate(fp32_text, call)
    fp32_reference = load_file(str(REFERENCE / "generate_small_pingpong_text_fp32.safetensors"))["audio"].numpy()
    assert_parity(ours, fp32_reference)
    assert 10 * compare(ours, fp32_reference)[0] < compare(ours, official_audio(tensors))[0]


def test_inpaint_gives_the_official_audio_inside_the_region(pipelines, input_audio):
    tensors, call = reference("small_inpaint")
    pipeline = pipelines("small")
    source = input_audio[:, : int(call["duration"] * RATE)]
    region = Region(int(call["inpaint_mask_start_seconds"] * RATE), int(call["inpaint_mask_end_seconds"] * RATE))
    inside = slice(region.start + FADE, region.end - FADE)

    def inpaint(**change) -> np.ndarray:
        asked = {**call, **change}
        return pipeline.inpaint(source, asked["prompt"], [region], steps=asked["steps"], seed=asked["seed"])[0]

    ours, official = inpaint(), official_audio(tensors)[0]
    assert_parity(ours[:, inside], official[:, inside])
    np.testing.assert_array_equal(ours[:, : region.start], source[:, : region.start])
    np.testing.assert_array_equal(ours[:, region.end :], source[:, region.end :])
    assert_far(inpaint(prompt="funky slap bass groove, 110 BPM")[:, inside], official[:, inside])


def test_continue_gives_the_official_continuation(pipelines, input_audio, tmp_path):
    """`continue_` (and `sa3 continue`) = the official inpaint of [source, silence] from the source's
    end: the new part is the official audio (past the splice), the source comes back bit-exact."""
    from sa3core.audio import read_audio, save_audio

    tensors, call = reference("small_continue")
    kept, total = int(call["inpaint_mask_start_seconds"] * RATE), int(call["duration"] * RATE)
    source = input_audio[:, :kept]
    official = official_audio(tensors)[0]
    new_part = slice(kept + FADE, total)

    def continued(**change) -> np.ndarray:
        asked = {**call, **change}
        return pipelines("small").continue_(source, asked["prompt"], total - kept, asked["steps"], seed=asked["seed"])[
            0
        ]

    ours = continued()
    assert ours.shape == (2, total)
    assert_parity(ours[:, new_part], official[:, new_part])
    np.testing.assert_array_equal(ours[:, :kept], source)
    assert_far(continued(prompt="rain on a tin roof at night")[:, new_part], official[:, new_part])

    path, out = tmp_path / "in.wav", tmp_path / "out.wav"
    save_audio(path, source, RATE, "float")
    result = run_sa3(
        "continue", path, call["prompt"], "--seconds", (total - kept) / RATE, "--model", FIXTURES / "small",
        "--seed", call["seed"], "--steps", call["steps"], "--fp32", "--bit-depth", "float", "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = read_audio(out)[0]
    assert_parity(command[:, new_part], official[:, new_part])
    np.testing.assert_array_equal(command[:, :kept], source)


def test_transform_gives_the_official_audio_to_audio(pipelines, input_audio):
    tensors, call = reference("medium_a2a")
    pipeline = pipelines("medium")
    source = input_audio[:, : int(call["duration"] * RATE)]

    def transform(**change) -> np.ndarray:
        asked = {**call, **change}
        level = asked["init_noise_level"]
        return pipeline.transform(source, asked["prompt"], level, steps=asked["steps"], seed=asked["seed"])

    official = official_audio(tensors)
    assert_parity(transform(), official)
    assert_far(transform(prompt="funky slap bass groove, 110 BPM"), official)
    assert_far(transform(seed=16), official)


def test_sa3_generate_command_gives_the_official_audio(tmp_path):
    """The real command, as a user types it, on a released-layout folder."""
    from sa3core.audio import read_audio

    tensors, call = reference("small_pingpong")
    official = official_audio(tensors)[0]
    takes = {}
    for seed in (call["seed"], call["seed"] + 1):
        out = tmp_path / f"take-{seed}.wav"
        result = run_sa3(
            "generate", call["prompt"], "--model", FIXTURES / "small", "--seconds", call["duration"],
            "--seed", seed, "--steps", call["steps"], "--fp32", "--bit-depth", "float", "-o", out, "--quiet",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        takes[seed], rate = read_audio(out)
        assert rate == RATE
    assert_parity(takes[call["seed"]], official)
    assert_far(takes[call["seed"] + 1], official)


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("scale_lock_db", 12.0, "no scale lock db"),
        ("tempo_grid", True, "no tempo grid"),
        ("tail_seconds", 0.1, "no tail"),
    ],
)
def test_sa3_steering_options_are_one_line_errors(pipelines, option, value, words):
    with pytest.raises(Sa3Error, match=f"this model \\(released family\\) has {words}") as caught:
        pipelines("small").generate("x", 4410, steps=1, **{option: value})
    assert "\n" not in str(caught.value)


def test_padding_follows_the_official_length_rule(pipelines):
    """+6 s, whole frames, an even count (the encoder's alignment), the sample_size cap; valid
    frames are the request's plus 64 headroom frames."""
    settings = pipelines("small").settings
    assert settings.align_frames == 2 and pipelines("medium").settings.align_frames == 2
    assert (padded_frames(4410, settings), valid_frames(4410, 66)) == (66, 66)  # 0.1 s: no padded frame
    assert (padded_frames(8820, settings), valid_frames(8820, 68)) == (68, 67)  # 0.2 s: one padded frame
    cap = int(settings.max_seconds * RATE) // 4096
    assert padded_frames(int(settings.max_seconds * RATE), settings) == cap
    assert valid_frames(int(settings.max_seconds * RATE), cap) == cap


def test_released_folders_are_recognised_and_bad_requests_refused(tmp_path, pipelines):
    assert pipelines("small").family.name == "released"
    assert ReleasedFamily().recognises(FIXTURES / "medium-base")  # symlinked weights, as in the HF cache
    assert not ReleasedFamily().recognises(tmp_path)
    with pytest.raises(Sa3Error, match="holds no ONNX export; run `sa3 export onnx --model"):
        Pipeline.load(FIXTURES / "small", backend="onnx")  # export first (tests/export/test_released_onnx.py)
    with pytest.raises(Sa3Error, match="runs on the torch or onnx backend, not 'coreml'"):
        Pipeline.load(FIXTURES / "small", backend="coreml")
    with pytest.raises(Sa3Error, match="no phase iterations option"):
        Pipeline.load(FIXTURES / "small", phase_iterations=4)
    with pytest.raises(Sa3Error, match="init noise level"):
        pipelines("small").transform(np.zeros((2, 4410), np.float32), "x", 1.5)


def test_sa3_transform_command_gives_the_official_audio_to_audio(tmp_path, input_audio):
    from sa3core.audio import read_audio, save_audio

    tensors, call = reference("medium_a2a")
    source = tmp_path / "in.wav"
    save_audio(source, input_audio[:, : int(call["duration"] * RATE)], RATE, "float")
    out = tmp_path / "out.wav"
    result = run_sa3(
        "transform", source, call["prompt"], "--init-noise-level", call["init_noise_level"], "--model",
        FIXTURES / "medium", "--seed", call["seed"], "--steps", call["steps"], "--fp32", "--bit-depth", "float",
        "-o", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_parity(read_audio(out)[0], official_audio(tensors)[0])


def test_sa3_inpaint_command_gives_the_official_audio_inside_the_region(tmp_path, input_audio):
    """`sa3 inpaint --region` on a released folder: the official inpaint inside the region, the
    file's own samples bit-exact outside it (float WAV in, float WAV out)."""
    from sa3core.audio import read_audio, save_audio

    tensors, call = reference("small_inpaint")
    source = input_audio[:, : int(call["duration"] * RATE)]
    path = tmp_path / "in.wav"
    save_audio(path, source, RATE, "float")
    start, end = call["inpaint_mask_start_seconds"], call["inpaint_mask_end_seconds"]
    takes = {}
    for prompt in (call["prompt"], "funky slap bass groove, 110 BPM"):
        out = tmp_path / f"{len(takes)}.wav"
        result = run_sa3(
            "inpaint", path, prompt, "--region", f"{start}:{end}", "--model", FIXTURES / "small",
            "--seed", call["seed"], "--steps", call["steps"], "--fp32", "--bit-depth", "float", "-o", out, "--quiet",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        takes[prompt] = read_audio(out)[0]
    region = Region(int(start * RATE), int(end * RATE))
    inside = slice(region.start + FADE, region.end - FADE)
    ours, official = takes[call["prompt"]], official_audio(tensors)[0]
    assert_parity(ours[:, inside], official[:, inside])
    np.testing.assert_array_equal(ours[:, : region.start], source[:, : region.start])
    np.testing.assert_array_equal(ours[:, region.end :], source[:, region.end :])
    assert_far(takes["funky slap bass groove, 110 BPM"][:, inside], official[:, inside])


def test_transform_at_level_one_is_generate_when_the_encoder_draws_nothing(pipelines, input_audio):
    """SAME-S draws no encoder noise, so at level 1 the input leaves nothing behind."""
    pipeline = pipelines("small")
    source = input_audio[:, :4410]
    transformed = pipeline.transform(source, "rain on a tin roof at night", 1.0, steps=2, seed=4)
    generated = pipeline.generate("rain on a tin roof at night", 4410, steps=2, seed=4)
    np.testing.assert_allclose(transformed, generated, rtol=0, atol=1e-5)


def test_sa3_info_describes_a_released_folder():
    result = run_sa3("info", "--model", FIXTURES / "small-base", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["text_encoder"] == "t5gemma" and info["sampler"] == "euler, 50 steps, cfg 7"


def test_a_same_folder_alone_is_refused_in_one_line(tmp_path):
    from tests.released.released_folder import autoencoder_config

    folder = tmp_path / "SAME-S"
    folder.mkdir()
    config = {"model_type": "autoencoder", "sample_rate": RATE, "model": autoencoder_config()}
    (folder / "model_config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(Sa3Error, match="SAME autoencoder alone") as caught:
        Pipeline.load(folder)
    assert "\n" not in str(caught.value)
