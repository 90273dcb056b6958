"""`sa3 encode` / `sa3 decode` run as real commands on generated WAV files."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sa3core.checkpoint import save_model
from sa3core.models.same import SAME, SAMEConfig
from tests.conftest import run_sa3 as sa3


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SAME(SAMEConfig(width=32, heads=2, encoder_layers=2, decoder_layers=2, mlp_hidden=64))
    folder = tmp_path_factory.mktemp("model")
    save_model(folder / "same.safetensors", "same", model)
    return folder


def _wav(path: Path, samples: int, rate: int = 44_100, channels: int = 2) -> Path:
    t = np.arange(samples) / rate
    tone = 0.3 * np.sin(2 * np.pi * 330 * t)
    sf.write(path, np.stack([tone] * channels).T, rate)
    return path


def test_round_trip_restores_the_exact_length(tmp_path, small_model):
    source = _wav(tmp_path / "in.wav", 10_001)
    latents = tmp_path / "in.safetensors"
    done = sa3("encode", source, "-o", latents, "--model", small_model)
    assert done.returncode == 0, done.stderr
    with safe_open(str(latents), framework="pt") as handle:
        assert handle.get_tensor("latents").shape == (256, 3)
        assert handle.metadata()["samples"] == "10001"
    out = tmp_path / "out.wav"
    done = sa3("decode", latents, "-o", out, "--model", small_model / "same.safetensors", "--bit-depth", "float")
    assert done.returncode == 0, done.stderr
    info = sf.info(str(out))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (10_001, 2, 44_100, "FLOAT")
    # --samples overrides; a second write needs --overwrite
    assert sa3("decode", latents, "-o", out, "--model", small_model, "--samples", 5000).returncode == 2
    done = sa3("decode", latents, "-o", out, "--model", small_model, "--samples", 5000, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sf.info(str(out)).frames == 5000


def test_other_rates_and_mono_are_converted(tmp_path, small_model):
    source = _wav(tmp_path / "mono48k.wav", 48_000, rate=48_000, channels=1)  # 1 s at 48 kHz
    latents, out = tmp_path / "l.safetensors", tmp_path / "o.wav"
    assert sa3("encode", source, "-o", latents, "--model", small_model).returncode == 0
    assert sa3("decode", latents, "-o", out, "--model", small_model).returncode == 0
    assert sf.info(str(out)).frames == 44_100 and sf.info(str(out)).channels == 2


def test_bad_inputs_give_one_line_errors_and_write_nothing(tmp_path, small_model):
    out = tmp_path / "out.safetensors"
    missing = sa3("encode", tmp_path / "nope.wav", "-o", out, "--model", small_model)
    not_audio_file = tmp_path / "text.wav"
    not_audio_file.write_text("hello")
    not_audio = sa3("encode", not_audio_file, "-o", out, "--model", small_model)
    for done, needle in ((missing, "does not exist"), (not_audio, "not an audio file")):
        assert done.returncode == 2
        assert done.stderr.startswith("sa3: error:") and needle in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()

    wav_out = tmp_path / "o.wav"
    save_file({"weights": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    for latents, needle in (
        (_wav(tmp_path / "a.wav", 100), "not a latent file"),
        (tmp_path / "other.safetensors", "not an sa3 latent file"),
    ):
        done = sa3("decode", latents, "-o", wav_out, "--model", small_model)
        assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr
    assert not wav_out.exists()
    done = sa3("encode", _wav(tmp_path / "b.wav", 100), "-o", tmp_path / "x.npy", "--model", small_model)
    assert done.returncode == 2 and ".safetensors" in done.stderr


def test_decode_refines_phases_as_the_model_folder_says(tmp_path, small_model):
    """A folder's model.json `phase_iterations` is what `sa3 decode` uses; --phase-iterations overrides it."""
    import json

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "same.safetensors").write_bytes((small_model / "same.safetensors").read_bytes())
    latents = tmp_path / "in.safetensors"
    assert sa3("encode", _wav(tmp_path / "in.wav", 30_000), "-o", latents, "--model", folder).returncode == 0

    def decode(name: str, *flags: str) -> np.ndarray:
        done = sa3("decode", latents, "-o", tmp_path / name, "--model", folder, "--bit-depth", "float", *flags)
        assert done.returncode == 0, done.stderr
        return sf.read(tmp_path / name)[0]

    plain = decode("plain.wav")  # no model.json: predicted phases
    (folder / "model.json").write_text(json.dumps({"format": 1, "phase_iterations": 3}))
    refined = decode("refined.wav")
    assert not np.allclose(plain, refined, atol=1e-4)
    np.testing.assert_array_equal(decode("three.wav", "--phase-iterations", "3"), refined)
    np.testing.assert_array_equal(decode("zero.wav", "--phase-iterations", "0"), plain)
    done = sa3("decode", latents, "-o", tmp_path / "bad.wav", "--model", folder, "--phase-iterations", "-1")
    assert done.returncode == 2 and "--phase-iterations -1" in done.stderr and not (tmp_path / "bad.wav").exists()


@pytest.mark.slow  # about 20 s of search; .ci/run runs it
def test_encode_search_decodes_closer_to_the_source(tmp_path, small_model):
    """`sa3 encode --search N`: the latents decode with a lower log-mel distance than the plain encoder's."""
    from sa3.eval.metrics import log_mel_l1
    from sa3core.audio import load_audio

    source = _wav(tmp_path / "in.wav", 3 * 4096)
    scores = {}
    for steps in (0, 5):
        latents, out = tmp_path / f"s{steps}.safetensors", tmp_path / f"s{steps}.wav"
        done = sa3("encode", source, "-o", latents, "--model", small_model, "--search", steps, "--quiet")
        assert done.returncode == 0, done.stderr
        with safe_open(str(latents), framework="pt") as handle:
            assert handle.metadata()["search_steps"] == str(steps)
        assert sa3("decode", latents, "-o", out, "--model", small_model, "--bit-depth", "float").returncode == 0
        scores[steps] = log_mel_l1(load_audio(str(source)), load_audio(str(out)))
    assert scores[5] < scores[0]
    done = sa3("encode", source, "-o", tmp_path / "bad.safetensors", "--model", small_model, "--search", -2)
    assert done.returncode == 2 and "--search -2" in done.stderr and "Traceback" not in done.stderr


# --- released autoencoders (SAME-S / SAME-L in the released layout) -------------------------------
RELEASED = Path(__file__).resolve().parents[1] / "fixtures" / "released"


def _same_repo(folder: Path, dit_folder: Path) -> Path:
    """A SAME repo (the autoencoder alone, keys without prefix) cut from a DiT fixture folder."""
    import json

    from safetensors.torch import load_file

    config = json.loads((dit_folder / "model_config.json").read_text())
    folder.mkdir()
    same = {"model_type": "autoencoder", "sample_rate": 44100, "model": config["model"]["pretransform"]["config"]}
    (folder / "model_config.json").write_text(json.dumps(same))
    prefix = "pretransform.model."
    tensors = {
        k[len(prefix) :]: v for k, v in load_file(dit_folder / "model.safetensors").items() if k.startswith(prefix)
    }
    save_file(tensors, folder / "model.safetensors")
    return folder


def _reference(name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(RELEASED / "reference" / f"{name}.safetensors")


def test_released_same_encodes_and_decodes_as_the_official_code(tmp_path):
    """`--model` a released folder: `sa3 encode` gives the official SAME-S encoder's latents, and
    `sa3 decode --seed 23` the official decoder's audio for the seed it drew its noise from
    (tests/fixtures/released: encode of input_audio[:, :8192], decode of 2 frames after manual_seed(23))."""
    same = _reference("same_s")
    audio = _reference("input_audio")["audio"].float()[:, :8192]
    source = tmp_path / "in.wav"
    sf.write(source, audio.T.numpy(), 44_100, subtype="FLOAT")
    latents = tmp_path / "in.safetensors"
    done = sa3("encode", source, "-o", latents, "--model", RELEASED / "small")
    assert done.returncode == 0, done.stderr
    with safe_open(str(latents), framework="pt") as handle:
        encoded = handle.get_tensor("latents")
    torch.testing.assert_close(encoded, same["encode.latents"][0], rtol=0, atol=1e-4)

    frames = tmp_path / "z.safetensors"
    z = same["decode.latents"].float()[0].contiguous()
    save_file({"latents": z}, frames, metadata={"sa3_latents": "1", "samples": "8192"})
    out = tmp_path / "out.wav"
    done = sa3("decode", frames, "-o", out, "--model", RELEASED / "small", "--seed", "23", "--bit-depth", "float")
    assert done.returncode == 0, done.stderr
    decoded = torch.from_numpy(sf.read(out, dtype="float32")[0].T.copy())
    expected = same["decode.audio"][0].clamp(-1, 1)
    assert decoded.shape == (2, 8192)
    assert (decoded - expected).abs().max() < 2e-3
    other = tmp_path / "other.wav"
    sa3("decode", frames, "-o", other, "--model", RELEASED / "small", "--seed", "24", "--bit-depth", "float")
    moved = torch.from_numpy(sf.read(other, dtype="float32")[0].T.copy())
    assert not torch.equal(moved, decoded)  # the seed is the decoder's noise: another seed, another file


def test_a_same_repo_and_its_dit_repo_are_the_same_autoencoder(tmp_path):
    """A SAME repo (no prefix) and the DiT repo holding the same SAME write the same latents and the
    same identity, so decoding with either raises no warning; another SAME warns."""
    repo = _same_repo(tmp_path / "same-s", RELEASED / "small")
    source = _wav(tmp_path / "in.wav", 20_000)
    results = {}
    for name, model in (("repo", repo), ("dit", RELEASED / "small")):
        done = sa3("encode", source, "-o", tmp_path / f"{name}.safetensors", "--model", model)
        assert done.returncode == 0, done.stderr
        with safe_open(str(tmp_path / f"{name}.safetensors"), framework="pt") as handle:
            results[name] = (handle.get_tensor("latents"), handle.metadata()["autoencoder"])
    torch.testing.assert_close(results["repo"][0], results["dit"][0], rtol=0, atol=0)
    assert results["repo"][1] == results["dit"][1]
    same = sa3("decode", tmp_path / "repo.safetensors", "-o", tmp_path / "a.wav", "--model", RELEASED / "small")
    assert same.returncode == 0 and "different autoencoder" not in same.stderr
    assert sf.info(tmp_path / "a.wav").frames == 20_000
    other = sa3("decode", tmp_path / "repo.safetensors", "-o", tmp_path / "b.wav", "--model", RELEASED / "medium")
    assert other.returncode == 0 and "different autoencoder" in other.stderr


@pytest.mark.slow  # seven sa3 processes, about 18 s; .ci/run runs it
def test_released_autoencoder_errors_are_one_line(tmp_path, monkeypatch):
    source = _wav(tmp_path / "in.wav", 9_000)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    missing = sa3("encode", source, "-o", tmp_path / "x.safetensors", "--model", "same-l")
    assert missing.returncode == 2 and "sa3 model pull same-l" in missing.stderr.strip().splitlines()[-1]
    search = sa3("encode", source, "-o", tmp_path / "x.safetensors", "--model", RELEASED / "small", "--search", "3")
    assert search.returncode == 2 and "--search" in search.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.safetensors").exists()
    sa3("encode", source, "-o", tmp_path / "z.safetensors", "--model", RELEASED / "small")
    phases = sa3("decode", tmp_path / "z.safetensors", "-o", tmp_path / "o.wav", "--model", RELEASED / "small",
                 "--phase-iterations", "4")  # fmt: skip
    assert phases.returncode == 2 and "--phase-iterations" in phases.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o.wav").exists()
    for bad in ("", str(tmp_path / "nothing-here")):
        done = sa3("encode", source, "-o", tmp_path / "y.safetensors", "--model", bad)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
