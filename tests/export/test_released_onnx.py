"""ONNX export of a released Stable Audio 3 folder and its onnx backend, against the float32
torch backend (``bf16=False, text_dtype=float32``: the graphs are float32; the torch backend's
default bf16 T5Gemma moves the audio by ~2e-3).

The small random-weight fixture (tests/fixtures/released/small) is exported once per module
(about 65 s on 2 cores, its self-check included: the tests that need it are marked slow and run
in CI's slow stage), then whole requests run through the
pipeline on both backends: generate below one SAME window and across the released 128-latent
windows, and inpaint (the encoder, the local input). The parity is tight (max |diff| < 1e-4,
correlation > 0.999999) and can fail: another prompt or another seed moves the audio by > 0.1.

The DiT step's attention is onnxruntime's flash attention (export/released_graphs.py): the graph
holds ``com.microsoft.MultiHeadAttention`` nodes and no softmax, and at 8000 frames one step
needs less memory than a single [B, H, N, N] score matrix (the MatMul-Softmax graph needed
four and a half), with the output still torch's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export import released_graphs as rg
from export.manifest import read_manifest
from export.released_export import TOLERANCE, compare, export_released_onnx, inputs_at, torch_reference
from sa3core.errors import Sa3Error
from sa3core.pipeline import Pipeline, Region

from ..conftest import REPO, run_sa3, stereo_tone

SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "released" / "small"
MEDIUM = SMALL.parent / "medium"  # differential DiT, SAME-L: band attention, encoder token noise
AUDIO_TOLERANCE = 1e-4  # max |onnx - torch| on [-1, 1] audio (measured 8.6e-6 small, 6.9e-5 medium: docs/export.md)
MIN_CORRELATION = 0.999999
FAR = 0.1  # what a wrong prompt or seed moves the audio by, at least (measured ~0.5)


def exported_copy(source: Path, tmp_path_factory) -> Path:
    """A copy of a fixture folder with its export in ``onnx/`` (written and self-checked by the exporter)."""
    folder = tmp_path_factory.mktemp("released") / source.name
    shutil.copytree(source, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_released_onnx(folder, folder / "onnx", progress=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return exported_copy(SMALL, tmp_path_factory)


@pytest.fixture(scope="module")
def pipelines(small_folder):
    reference = Pipeline.load(small_folder, bf16=False, text_dtype=torch.float32)
    return reference, Pipeline.load(small_folder, backend="onnx")


def _close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float(np.abs(a - b).max()), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_manifest_records_the_parts_and_the_measured_differences(small_folder):
    manifest = read_manifest(small_folder / "onnx", runtime="onnx")
    assert manifest.model["family"] == "released" and manifest.tolerance == TOLERANCE
    assert set(manifest.parts) == {"text_encoder", "dit_condition", "dit_step", "same_encoder", "same_decoder"}
    for part, spec in manifest.parts.items():
        assert 0 <= spec.checked_max_abs_diff < 1e-2, part
    assert manifest.codec["window_latents"] == 128 and manifest.codec["overlap_latents"] == 32
    assert (small_folder / "onnx" / "conditioners.safetensors").is_file()


def test_the_export_attention_is_the_masked_softmax():
    """In torch: the key mask folded into one more q/k column gives the masked softmax's numbers,
    and a differential DiT's step graph equals the eager DiT with it swapped in."""
    from export.released_export import build_graph, load_released_for_export

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 64, generator=g) for n in (7, 11, 11))
    key_mask = torch.ones(2, 1, 1, 11, dtype=torch.bool)
    key_mask[1, ..., 4:] = False  # padded keys: their q.k would move the output by ~0.3
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(2, 7, 192)
    torch.testing.assert_close(rg.multi_head_attention(q, k, v, key_mask), want, rtol=0, atol=1e-6)
    assert (rg.multi_head_attention(q, k, v, None) - want).abs().max() > 0.1

    backend = load_released_for_export(MEDIUM)  # differential attention: two attentions subtracted
    graph = build_graph("dit_step", backend)
    inputs = inputs_at("dit_step", backend, 3, 19, 9, g)
    with torch.no_grad(), rg.onnxruntime_attention():
        got = graph(*inputs)
    torch.testing.assert_close(got.numpy(), torch_reference("dit_step", backend, inputs)[0], rtol=0, atol=1e-5)


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_the_step_graph_uses_onnxruntime_flash_attention(small_folder):
    import onnx

    model = onnx.load(small_folder / "onnx" / "dit_step.onnx", load_external_data=False)
    ops = [(node.domain, node.op_type) for node in model.graph.node]
    depth = read_manifest(small_folder / "onnx", runtime="onnx").dit["depth"]
    assert ops.count(("com.microsoft", "MultiHeadAttention")) == 2 * depth  # self and cross, every block
    assert not any(op in ("Softmax", "LogSoftmax") for _, op in ops)


# A child process (in the repository) opens the step as the onnx backend does, runs it once and
# prints its peak resident set's growth (MiB).
_STEP_PEAK = """
import sys
from pathlib import Path
import numpy as np
from bench.common import peak_rss_mib
from sa3core.onnx_backend import open_session
session = open_session(Path(sys.argv[1]), threads=1)
feeds = dict(np.load(sys.argv[2]))
before = peak_rss_mib()
np.save(sys.argv[3], session.run(None, feeds)[0])
print(peak_rss_mib() - before)
"""


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_the_step_needs_less_than_one_score_matrix_at_8000_frames(small_folder, pipelines, tmp_path):
    """Flash attention streams the scores: one step at 8000 frames (8064 tokens) grows the peak
    resident set by less than one [1, H, N, N] float32 score matrix (248 MiB for the fixture's
    one head; measured 82 MiB; the MatMul-Softmax graph: 1112 MiB), and equals torch there."""
    manifest = read_manifest(small_folder / "onnx", runtime="onnx")
    backend = pipelines[0].backend  # the float32 torch backend
    inputs = inputs_at("dit_step", backend, 1, 8000, 9, torch.Generator().manual_seed(2))  # 1/3 padded
    feeds = {spec.name: t.numpy() for spec, t in zip(manifest.parts["dit_step"].inputs, inputs, strict=True)}
    np.savez(tmp_path / "feeds.npz", **feeds)
    graph, out = small_folder / "onnx" / "dit_step.onnx", tmp_path / "velocity.npy"
    done = subprocess.run([sys.executable, "-c", _STEP_PEAK, graph, tmp_path / "feeds.npz", out],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tokens = 8000 + manifest.dit["num_memory_tokens"]
    score_mib = manifest.dit["num_heads"] * tokens * tokens * 4 / 2**20
    assert float(done.stdout) < score_mib, (float(done.stdout), score_mib)
    compare("dit_step", [np.load(out)], torch_reference("dit_step", backend, inputs), TOLERANCE, "at 8000 frames")


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_the_lean_step_session_gives_the_same_bits_as_buffer_reuse(small_folder, pipelines):
    """The onnx backend opens the DiT step ``lean`` (no buffer reuse, its arena shrunk after each
    run: flatter memory with the length, docs/export.md); the plan changes where tensors live,
    not what they hold: a reuse session gives the same velocity bit for bit, at two lengths in one
    session each (buffers from the first length are where the second one's go)."""
    from sa3core.onnx_backend import lean_run_options, open_session

    manifest = read_manifest(small_folder / "onnx", runtime="onnx")
    lean = pipelines[1].backend.sessions["dit_step"]
    assert not lean.get_session_options().enable_mem_reuse
    reuse = open_session(small_folder / "onnx" / "dit_step.onnx")  # the backend's threads, as lean
    backend = pipelines[0].backend
    for frames in (300, 40):
        inputs = inputs_at("dit_step", backend, 1, frames, 3, torch.Generator().manual_seed(frames))
        feeds = {spec.name: t.numpy() for spec, t in zip(manifest.parts["dit_step"].inputs, inputs, strict=True)}
        a = lean.run(None, feeds, lean_run_options())[0]
        b = reuse.run(None, feeds)[0]
        assert a.shape[-1] == frames
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
@pytest.mark.parametrize("seconds", [2.0, 14.0])  # 2 s: one SAME pass (72 frames); 14 s: two released windows
def test_generate_matches_torch_and_a_wrong_prompt_or_seed_does_not(pipelines, seconds):
    reference, onnx = pipelines
    samples = int(seconds * 44_100)
    want = reference.generate("warm analog pad", samples, seed=3)
    got = onnx.generate("warm analog pad", samples, seed=3)
    difference, correlation = _close(got, want)
    assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)
    # the same check fails for another prompt or another seed (the parity is not vacuous)
    assert np.abs(onnx.generate("a different prompt", samples, seed=3) - want).max() > FAR
    assert np.abs(onnx.generate("warm analog pad", samples, seed=4) - want).max() > FAR


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
@pytest.mark.parametrize("part", ["same_encoder", "same_decoder"])
def test_the_codec_runs_on_the_kept_frames_and_gives_the_whole_windows_output(small_folder, part):
    """The backend runs of each released window only the frames the join keeps, widened by the
    manifest's span context (SAME-S: encoder 1, decoder 2): the same output as whole windows bit
    for bit, torch's within the tolerance; without the context it moves far."""
    import onnxruntime

    from sa3core.released.backend import load
    from sa3core.released.onnx_backend import code_in_windows

    codec = read_manifest(small_folder / "onnx").codec
    role = part.split("_")[1]
    assert (codec["encoder_span_context"], codec["decoder_span_context"]) == (1, 2)
    session = onnxruntime.InferenceSession(str(small_folder / "onnx" / f"{part}.onnx"))

    def run(feeds):
        return session.run(None, feeds)[0]

    def coded(context: int | None | str = "manifest") -> np.ndarray:
        options = codec if context == "manifest" else {**codec, f"{role}_span_context": context}
        return code_in_windows(part, run, x, options, torch.Generator().manual_seed(7)).numpy()

    same = load(small_folder, bf16=False).autoencoder
    if part == "same_encoder":
        x = 0.3 * torch.randn(1, 2, 300 * 4096, generator=torch.Generator().manual_seed(2))
        want = same.encode(x, torch.Generator().manual_seed(7)).numpy()
    else:
        x = torch.randn(1, same.config.latent_dim, 300, generator=torch.Generator().manual_seed(2))
        want = same.decode(x, torch.Generator().manual_seed(7)).numpy()
    got = coded()
    assert np.array_equal(got, coded(None))
    assert np.abs(got - want).max() < AUDIO_TOLERANCE
    assert np.abs(coded(0) - want).max() > 10 * AUDIO_TOLERANCE


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_inpaint_matches_torch(pipelines):
    reference, onnx = pipelines
    audio = stereo_tone(4.0)
    regions = [Region.from_seconds(1.0, 2.5)]
    want = reference.inpaint(audio, "drum fill", regions, seed=5)
    got = onnx.inpaint(audio, "drum fill", regions, seed=5)
    difference, correlation = _close(got, want)
    assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_the_export_folder_itself_loads(small_folder):
    pipeline = Pipeline.load(small_folder / "onnx", backend="onnx")
    assert pipeline.family.name == "released" and pipeline.backend.name == "onnx"


@pytest.mark.slow  # the module's export of the small fixture: about 65 s on 2 cores
def test_user_errors_are_one_line(small_folder, tmp_path):
    onnx = Pipeline.load(small_folder, backend="onnx")
    with pytest.raises(Sa3Error, match="LoRA files need the torch backend"):
        onnx.backend.attach_loras(None, merge=True)
    with pytest.raises(Sa3Error, match="torch or onnx backend"):
        Pipeline.load(small_folder, backend="coreml")
    bare = tmp_path / "bare"
    shutil.copytree(SMALL, bare)
    with pytest.raises(Sa3Error, match="holds no ONNX export; run `sa3 export onnx --model"):
        Pipeline.load(bare, backend="onnx")
    with pytest.raises(Sa3Error, match="takes no phase iterations option"):
        Pipeline.load(small_folder, backend="onnx", phase_iterations=2)


@pytest.mark.slow
def test_medium_generate_and_inpaint_match_torch(tmp_path_factory):
    """The medium fixture (differential attention, SAME-L with its encoder's token noise) end to end."""
    folder = exported_copy(MEDIUM, tmp_path_factory)
    reference = Pipeline.load(folder, bf16=False, text_dtype=torch.float32)
    onnx = Pipeline.load(folder, backend="onnx")
    samples = int(14.0 * 44_100)
    for want, got in (
        (reference.generate("warm analog pad", samples, seed=3), onnx.generate("warm analog pad", samples, seed=3)),
        (
            reference.inpaint(stereo_tone(4.0), "drum fill", [Region.from_seconds(1.0, 2.5)], seed=5),
            onnx.inpaint(stereo_tone(4.0), "drum fill", [Region.from_seconds(1.0, 2.5)], seed=5),
        ),
    ):
        difference, correlation = _close(got, want)
        assert difference < AUDIO_TOLERANCE and correlation > MIN_CORRELATION, (difference, correlation)


@pytest.mark.slow
def test_cli_export_then_generate_with_the_onnx_backend(tmp_path):
    folder = tmp_path / "small"
    shutil.copytree(SMALL, folder)
    done = run_sa3("export", "onnx", "--model", folder, "-o", folder / "onnx")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dit_step" in done.stdout
    out = tmp_path / "take.wav"
    options = ["--backend", "onnx", "--threads", "1"]  # --threads reaches the onnx sessions as an option
    done = run_sa3("generate", "warm analog pad", "--model", folder, *options, "--seconds", "2", "-o", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()
