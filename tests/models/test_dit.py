"""DiT invariants: padding never changes real frames, the condition cache batches correctly,
unconditional rows are well defined, bf16 stays close to fp32, checkpoints round-trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sa3core import checkpoint
from sa3core.models.dit import Condition, DiT, DiTConfig, dit_preset, parameter_count

# Smaller than the tiny preset so every test runs in well under a second.
SMALL_TEST = DiTConfig(width=128, depth=2, heads=2, mlp_dim=256, text_dim=32, memory_tokens=8, fourier_dim=32)


def make_model(differential: bool = False, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    return DiT(dataclasses.replace(SMALL_TEST, differential=differential)).eval()


def make_inputs(model: DiT, lengths: list[int], text_lengths: list[int], seed: int = 1):
    """Per-item unpadded inputs: x, t, text, inpaint latents and mask, seconds."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for frames, words in zip(lengths, text_lengths, strict=True):
        items.append(
            dict(
                x=torch.randn(1, 256, frames, generator=gen),
                t=torch.rand(1, generator=gen),
                text=torch.randn(1, words, model.config.text_dim, generator=gen),
                latents=torch.randn(1, 256, frames, generator=gen),
                keep=(torch.rand(1, 1, frames, generator=gen) > 0.5).float(),
                seconds=torch.tensor([frames / 10.77]),
            )
        )
    return items


def run_alone(model: DiT, item: dict) -> torch.Tensor:
    mask = torch.ones(item["text"].shape[:2], dtype=torch.bool)
    cond = model.encode_condition(item["text"], mask, item["seconds"])
    return model(item["x"], item["t"], cond, item["latents"], item["keep"], None)


def pad_to(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = length - tensor.shape[dim]
    return torch.cat([tensor, torch.full(shape, 7.0)], dim=dim)  # loud junk: it must not leak


def run_padded(model: DiT, items: list[dict]) -> torch.Tensor:
    frames = max(i["x"].shape[-1] for i in items)
    words = max(i["text"].shape[1] for i in items)
    x = torch.cat([pad_to(i["x"], frames, 2) for i in items])
    latents = torch.cat([pad_to(i["latents"], frames, 2) for i in items])
    keep = torch.cat([pad_to(i["keep"], frames, 2) for i in items])
    text = torch.cat([pad_to(i["text"], words, 1) for i in items])
    frame_mask = torch.stack([torch.arange(frames) < i["x"].shape[-1] for i in items])
    text_mask = torch.stack([torch.arange(words) < i["text"].shape[1] for i in items])
    cond = model.encode_condition(text, text_mask, torch.cat([i["seconds"] for i in items]))
    return model(x, torch.cat([i["t"] for i in items]), cond, latents, keep, frame_mask), frame_mask


@pytest.mark.parametrize("differential", [False, True])
def test_padding_does_not_change_real_frames(differential):
    # Tolerance 1e-5 (fp32): the padded and unpadded runs take different SDPA kernels and
    # matmul shapes, so bit equality is not expected, but any leak of the junk (value 7.0)
    # through attention would show up as errors of order 1e-1.
    model = make_model(differential)
    items = make_inputs(model, lengths=[37, 100], text_lengths=[3, 9])
    with torch.no_grad():
        batched, frame_mask = run_padded(model, items)
        for row, item in enumerate(items):
            alone = run_alone(model, item)
            frames = item["x"].shape[-1]
            torch.testing.assert_close(batched[row : row + 1, :, :frames], alone, atol=1e-5, rtol=1e-5)
        assert torch.all(batched[0, :, 37:] == 0), "padded frames must return zero velocity"
    assert batched.dtype == torch.float32 and batched.shape == (2, 256, 100)


def test_compute_follows_length():
    # No hidden fixed window: a 5-frame request produces 5 frames (and memory tokens are dropped).
    model = make_model()
    item = make_inputs(model, lengths=[5], text_lengths=[2])[0]
    with torch.no_grad():
        assert run_alone(model, item).shape == (1, 256, 5)


def test_unconditional_row_ignores_text_and_differs_from_prompt():
    model = make_model()
    torch.manual_seed(3)
    x, t, seconds = torch.randn(1, 256, 20), torch.tensor([0.6]), torch.tensor([2.0])
    empty = torch.zeros(1, 4, dtype=torch.bool)
    with torch.no_grad():
        a = model(x, t, model.encode_condition(torch.randn(1, 4, 32), empty, seconds))
        b = model(x, t, model.encode_condition(torch.randn(1, 4, 32) * 100, empty, seconds))
        prompted = model(x, t, model.encode_condition(torch.randn(1, 4, 32), ~empty, seconds))
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (a - prompted).abs().max() > 1e-3


def test_condition_cat_and_repeat_match_one_batch():
    # The pipeline's CFG batches a prompt with the empty prompt either in one encode call or by
    # concatenating two conditions of different context lengths: both must agree.
    model = make_model(differential=True)
    torch.manual_seed(4)
    text = torch.randn(2, 6, 32)
    text_mask = torch.tensor([[True] * 6, [False] * 6])
    seconds = torch.tensor([3.0, 3.0])
    x, t = torch.randn(2, 256, 16), torch.tensor([0.3, 0.3])
    with torch.no_grad():
        together = model(x, t, model.encode_condition(text, text_mask, seconds))
        prompt = model.encode_condition(text[:1], text_mask[:1], seconds[:1])
        uncond = model.encode_condition(torch.zeros(1, 1, 32), torch.zeros(1, 1, dtype=torch.bool), seconds[:1])
        joined = Condition.cat([prompt, uncond])
        apart = model(x, t, joined)
        doubled = model(torch.cat([x[:1], x[:1]]), t, prompt.repeat(2))
    torch.testing.assert_close(apart, together, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(doubled[0], doubled[1], atol=0, rtol=0)
    assert joined.mask.shape == (2, 8) and not joined.mask[1, 2:].any()


def test_inpaint_inputs_and_condition_matter():
    model = make_model()
    torch.manual_seed(5)
    x, latents = torch.randn(1, 256, 12), torch.randn(1, 256, 12)
    cond = model.encode_condition(torch.randn(1, 3, 32), torch.ones(1, 3, dtype=torch.bool), torch.tensor([1.0]))
    with torch.no_grad():
        none = model(x, torch.tensor([0.5]), cond)
        zero_mask = model(x, torch.tensor([0.5]), cond, latents, torch.zeros(1, 1, 12))
        keep = model(x, torch.tensor([0.5]), cond, latents, torch.ones(1, 1, 12))
        later = model(x, torch.tensor([0.9]), cond)
    torch.testing.assert_close(none, zero_mask, atol=0, rtol=0)  # None means "regenerate all"
    assert (keep - none).abs().max() > 1e-3
    assert (later - none).abs().max() > 1e-3


def test_nothing_kept_shortcut_equals_the_per_frame_inpaint_path():
    # With no frame kept the inpaint MLPs run on one zero row; the per-frame path is forced here by
    # keeping one *padded* frame, which padding invariance says cannot change the real frames.
    model = make_model()
    torch.manual_seed(6)
    x, latents = torch.randn(1, 256, 10), torch.randn(1, 256, 11)
    cond = model.encode_condition(torch.randn(1, 3, 32), torch.ones(1, 3, dtype=torch.bool), torch.tensor([1.0]))
    keep = torch.zeros(1, 1, 11)
    keep[..., 10] = 1.0
    frame_mask = torch.arange(11)[None] < 10
    with torch.no_grad():
        shortcut = model(x, torch.tensor([0.5]), cond, latents[..., :10], torch.zeros(1, 1, 10))
        per_frame = model(torch.cat([x, x[..., :1]], -1), torch.tensor([0.5]), cond, latents, keep, frame_mask)
    torch.testing.assert_close(shortcut, per_frame[..., :10], atol=1e-5, rtol=1e-5)


def test_bf16_autocast_close_to_fp32():
    model = make_model(differential=True)
    item = make_inputs(model, lengths=[40], text_lengths=[5])[0]
    with torch.no_grad():
        full = run_alone(model, item)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = run_alone(model, item)
    assert half.dtype == torch.float32
    relative = (half - full).norm() / full.norm()
    assert relative < 0.05, f"bf16 relative error {relative:.3f}"
    # A condition cached under one precision serves steps run under the other.
    mask = torch.ones(item["text"].shape[:2], dtype=torch.bool)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cond_half = model.encode_condition(item["text"], mask, item["seconds"])
        mixed = model(item["x"], item["t"], cond_half, item["latents"], item["keep"])
    assert (mixed - full).norm() / full.norm() < 0.05


def test_every_parameter_gets_a_gradient():
    # One prompted and one unconditional row, so the null token is used too.
    model = make_model(differential=True).train()
    torch.manual_seed(6)
    text_mask = torch.tensor([[True, True, False], [False, False, False]])
    cond = model.encode_condition(torch.randn(2, 3, 32), text_mask, torch.tensor([1.0, 2.0]))
    x, latents, keep = torch.randn(2, 256, 10), torch.randn(2, 256, 10), torch.ones(2, 1, 10)
    model(x, torch.tensor([0.2, 0.7]), cond, latents, keep).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_checkpoint_round_trip(tmp_path):
    model = make_model(differential=True)
    item = make_inputs(model, lengths=[9], text_lengths=[2])[0]
    path = checkpoint.save_model(tmp_path / "dit.safetensors", "dit", model)
    loaded, _ = checkpoint.load_model(path, expect_kind="dit")
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(run_alone(loaded, item), run_alone(model, item), atol=0, rtol=0)


def test_preset_sizes():
    # The paper's small DiT has 459M parameters counting the inpaint MLPs.
    assert abs(parameter_count(dit_preset("small")) - 459e6) / 459e6 < 0.01
    sizes = [parameter_count(dit_preset(name)) for name in ("tiny", "small", "medium", "large")]
    assert sizes == sorted(sizes) and sizes[0] < 20e6
    assert dit_preset("medium").differential and not dit_preset("small").differential


def test_rope_depends_only_on_relative_position_and_stays_fp32():
    from sa3core.modules.rope import apply_rope, rope_angles

    torch.manual_seed(7)
    q, k = torch.randn(64), torch.randn(64)
    cos, sin = rope_angles(4200, rotary_dims=32)
    assert cos.dtype == torch.float32 and cos.shape == (4200, 16)

    def score(m: int, n: int) -> float:
        rq = apply_rope(q.to(torch.bfloat16)[None], cos[m : m + 1], sin[m : m + 1])
        rk = apply_rope(k.to(torch.bfloat16)[None], cos[n : n + 1], sin[n : n + 1])
        assert rq.dtype == torch.float32
        return (rq * rk).sum().item()

    assert score(10, 3) == pytest.approx(score(4107, 4100), abs=1e-3)  # same offset, far along
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)
    rotated = apply_rope(q[None], cos[4000:4001], sin[4000:4001])
    torch.testing.assert_close(rotated.norm(), q.norm())  # a rotation keeps the length
    torch.testing.assert_close(rotated[0, 32:], q[32:], atol=0, rtol=0)  # only half the dims rotate


def test_tiny_preset_runs_on_text_encoder_tokens():
    from sa3core.text import TEXT_ENCODERS

    torch.manual_seed(8)
    model = DiT(dit_preset("tiny")).eval()
    tokens, mask = TEXT_ENCODERS.get("hash")().encode(["deep house bassline", ""])
    with torch.no_grad():
        cond = model.encode_condition(tokens, mask, torch.tensor([1.0, 1.0]))
        v = model(torch.randn(2, 256, 11), torch.tensor([1.0, 1.0]), cond)
    assert v.shape == (2, 256, 11) and torch.isfinite(v).all()
    assert (v[0] - v[1]).abs().max() > 1e-4  # prompt vs unconditional differ
