"""The released DiT: the released state-dict layout, a from-the-spec reference forward, padding
invariance, memory tokens, the local input, differential attention, the condition cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sa3core.released.conditioners import ExpoFourierFeatures
from sa3core.released.config import ReleasedDiTConfig
from sa3core.released.dit import Attention, ReleasedCondition, ReleasedDiT, parameter_count

from .released_folder import dit_config, randomize


def make_dit(seed: int = 0, **kwargs) -> ReleasedDiT:
    return randomize(ReleasedDiT(ReleasedDiTConfig.from_dict(dit_config(**kwargs))), seed).eval()


def make_inputs(dit: ReleasedDiT, frames: int, batch: int = 1, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    keep = (torch.rand(batch, 1, frames, generator=gen) > 0.5).float()
    return dict(
        x=torch.randn(batch, 256, frames, generator=gen),
        t=torch.rand(batch, generator=gen),
        context=torch.randn(batch, 257, 768, generator=gen),
        global_cond=torch.randn(batch, 768, generator=gen),
        local=torch.cat([keep, keep * torch.randn(batch, 256, frames, generator=gen)], dim=1),
    )


def run(dit: ReleasedDiT, inputs: dict, local: bool = True, frame_mask=None) -> torch.Tensor:
    with torch.no_grad():
        cond = dit.encode_condition(inputs["context"], inputs["global_cond"])
        return dit(inputs["x"], inputs["t"], cond, inputs["local"] if local else None, frame_mask)


# ----------------------------------------------------------------------------- layout
def released_keys(E: int, depth: int, differential: bool) -> dict[str, tuple[int, ...]]:
    """The DiT's keys and shapes under ``model.model.``, written from the released-format notes."""
    s = 2 if differential else 1
    keys = {
        "to_timestep_embed.0.weight": (E, 256), "to_timestep_embed.0.bias": (E,),
        "to_timestep_embed.2.weight": (E, E), "to_timestep_embed.2.bias": (E,),
        "to_cond_embed.0.weight": (E, 768), "to_cond_embed.2.weight": (E, E),
        "to_global_embed.0.weight": (E, 768), "to_global_embed.2.weight": (E, E),
        "preprocess_conv.weight": (256, 256, 1), "postprocess_conv.weight": (256, 256, 1),
        "transformer.project_in.weight": (E, 256), "transformer.project_out.weight": (256, E),
        "transformer.memory_tokens": (64, E), "transformer.rotary_pos_emb.inv_freq": (16,),
        "transformer.global_cond_embedder.0.weight": (E, E), "transformer.global_cond_embedder.0.bias": (E,),
        "transformer.global_cond_embedder.2.weight": (6 * E, E), "transformer.global_cond_embedder.2.bias": (6 * E,),
    }  # fmt: skip
    block = {
        "pre_norm.gamma": (E,), "cross_attend_norm.gamma": (E,), "ff_norm.gamma": (E,),
        "self_attn.to_qkv.weight": ((3 + 2 * (s - 1)) * E, E), "self_attn.to_out.weight": (E, E),
        "self_attn.q_norm.gamma": (64,), "self_attn.k_norm.gamma": (64,),
        "cross_attn.to_q.weight": (s * E, E), "cross_attn.to_kv.weight": ((s + 1) * E, E),
        "cross_attn.to_out.weight": (E, E), "cross_attn.q_norm.gamma": (64,), "cross_attn.k_norm.gamma": (64,),
        "ff.ff.0.proj.weight": (8 * E, E), "ff.ff.0.proj.bias": (8 * E,),
        "ff.ff.2.weight": (E, 4 * E), "ff.ff.2.bias": (E,),
        "to_local_embed.0.weight": (E, 257), "to_local_embed.0.bias": (E,),
        "to_local_embed.2.weight": (E, E), "to_local_embed.2.bias": (E,),
        "to_scale_shift_gate": (6 * E,),
    }  # fmt: skip
    for i in range(depth):
        keys.update({f"transformer.layers.{i}.{k}": shape for k, shape in block.items()})
    return keys


@pytest.mark.parametrize(
    "size, E, depth, heads, differential, params",
    [("small", 1024, 20, 16, False, 459), ("medium", 1536, 24, 24, True, None)],
)
def test_state_dict_is_the_released_layout(size, E, depth, heads, differential, params):
    config = ReleasedDiTConfig.from_dict(dit_config(E, depth, heads, differential, memory=64))
    with torch.device("meta"):
        state = ReleasedDiT(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == released_keys(E, depth, differential)
    if size == "medium":
        assert len(state) == 522  # the count of the released medium checkpoint's DiT tensors
    if params:  # the paper's count for small, with the per-block inpaint MLPs
        assert round(parameter_count(config) / 1e6) == params


# ----------------------------------------------------------------------------- reference forward
def reference_forward(dit: ReleasedDiT, x, t, context, global_cond, local) -> torch.Tensor:
    """The DiT written again, plainly, from the released-format notes ("What the DiT computes")."""
    sd = {k: v.double() for k, v in dit.state_dict().items()}
    c = dit.config
    H, M, hd = c.num_heads, c.num_memory_tokens, c.head_dim
    x, t, context, global_cond, local = (a.double() for a in (x, t, context, global_cond, local))

    def mlp(prefix, h, bias=True):
        h = h @ sd[f"{prefix}.0.weight"].T + (sd[f"{prefix}.0.bias"] if bias else 0)
        h = h * torch.sigmoid(h)
        return h @ sd[f"{prefix}.2.weight"].T + (sd[f"{prefix}.2.bias"] if bias else 0)

    def rms(h, gamma, eps):
        return h / torch.sqrt((h * h).mean(-1, keepdim=True) + eps) * gamma

    # Timestep angles reach 2 pi * 10^4 rad, so the last bit of a float32 frequency moves them by
    # ~1e-2: frequencies and angles are computed in float32 the released way, the rest in float64.
    ramp = torch.linspace(0, 1, 128)
    f = torch.exp(ramp * (math.log(10_000.0) - math.log(0.5)) + math.log(0.5))
    angle = (t.float()[:, None] * f * 2 * math.pi).double()
    g = mlp("to_global_embed", global_cond, False) + mlp("to_timestep_embed", torch.cat([angle.cos(), angle.sin()], -1))
    g = mlp("transformer.global_cond_embedder", g)  # (B, 6E)
    ctx = mlp("to_cond_embed", context, False)
    h = x + torch.einsum("oi,bit->bot", sd["preprocess_conv.weight"][..., 0], x)
    h = h.transpose(1, 2) @ sd["transformer.project_in.weight"].T
    h = torch.cat([sd["transformer.memory_tokens"].expand(x.shape[0], -1, -1), h], 1)  # (B, M+T, E)
    pos = torch.arange(h.shape[1], dtype=torch.float64)[:, None] * sd["transformer.rotary_pos_emb.inv_freq"]
    freqs = torch.cat([pos, pos], -1)  # (N, 32): rotate-half pairing over the first 32 dims

    def rope(q):
        r, rest = q[..., :32], q[..., 32:]
        rotated = torch.cat([-r[..., 16:], r[..., :16]], -1)
        return torch.cat([r * freqs.cos() + rotated * freqs.sin(), rest], -1)

    def attention(q_parts, k_parts, v, out_w, p, use_rope):
        out = 0
        for sign, q, k in zip((1, -1), q_parts, k_parts):
            q = rms(q.unflatten(-1, (H, hd)).transpose(1, 2), sd[f"{p}.q_norm.gamma"], 1e-6)
            k = rms(k.unflatten(-1, (H, hd)).transpose(1, 2), sd[f"{p}.k_norm.gamma"], 1e-6)
            if use_rope:
                q, k = rope(q), rope(k)
            w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1)
            out = out + sign * (w @ v.unflatten(-1, (H, hd)).transpose(1, 2))
        return out.transpose(1, 2).flatten(2) @ out_w.T

    for i in range(c.depth):
        p = f"transformer.layers.{i}"
        scale_a, shift_a, gate_a, scale_f, shift_f, gate_f = (sd[f"{p}.to_scale_shift_gate"] + g)[:, None].chunk(6, -1)
        a = rms(h, sd[f"{p}.pre_norm.gamma"], 1e-5) * (1 + scale_a) + shift_a
        qkv = (a @ sd[f"{p}.self_attn.to_qkv.weight"].T).chunk(5 if c.attn_kwargs.differential else 3, -1)
        h = h + torch.sigmoid(1 - gate_a) * attention(
            qkv[0::3], qkv[1::3], qkv[2], sd[f"{p}.self_attn.to_out.weight"], f"{p}.self_attn", True
        )
        a = rms(h, sd[f"{p}.cross_attend_norm.gamma"], 1e-5)
        q = (a @ sd[f"{p}.cross_attn.to_q.weight"].T).chunk(2 if c.attn_kwargs.differential else 1, -1)
        kv = (ctx @ sd[f"{p}.cross_attn.to_kv.weight"].T).chunk(len(q) + 1, -1)
        h = h + attention(q, kv[:-1], kv[-1], sd[f"{p}.cross_attn.to_out.weight"], f"{p}.cross_attn", False)
        h = h + F.pad(mlp(f"{p}.to_local_embed", local.transpose(1, 2)), (0, 0, M, 0))
        a = rms(h, sd[f"{p}.ff_norm.gamma"], 1e-5) * (1 + scale_f) + shift_f
        value, gate = (a @ sd[f"{p}.ff.ff.0.proj.weight"].T + sd[f"{p}.ff.ff.0.proj.bias"]).chunk(2, -1)
        ff = (value * gate * torch.sigmoid(gate)) @ sd[f"{p}.ff.ff.2.weight"].T + sd[f"{p}.ff.ff.2.bias"]
        h = h + torch.sigmoid(1 - gate_f) * ff
    out = (h[:, M:] @ sd["transformer.project_out.weight"].T).transpose(1, 2)
    return out + torch.einsum("oi,bit->bot", sd["postprocess_conv.weight"][..., 0], out)


@pytest.mark.parametrize("differential", [False, True])
def test_forward_matches_the_written_numerics(differential):
    dit = make_dit(differential=differential)
    inputs = make_inputs(dit, frames=9, batch=2)
    expected = reference_forward(dit, *(inputs[k] for k in ("x", "t", "context", "global_cond", "local")))
    got = run(dit, inputs)
    assert got.dtype == torch.float32 and got.shape == (2, 256, 9)
    assert (got.double() - expected).abs().max() <= 1e-4 * expected.abs().max()
    # A wrong input moves it far beyond that tolerance: another prompt, a missing block.
    other = dict(inputs, context=inputs["context"].flip(0))  # each item gets the other's prompt
    assert (run(dit, other).double() - expected).abs().max() > 1e-2 * expected.abs().max()
    with torch.no_grad():  # the DiT without its last block, on the right inputs
        cond = dit.encode_condition(inputs["context"], inputs["global_cond"])
        dit.transformer.layers = dit.transformer.layers[:-1]
        cond = ReleasedCondition(cond.global_embed, cond.keys[:-1], cond.values[:-1])
        missing = dit(inputs["x"], inputs["t"], cond, inputs["local"])
    assert (missing.double() - expected).abs().max() > 1e-2 * expected.abs().max()


def test_timestep_features_are_exponential_cos_then_sin():
    features = ExpoFourierFeatures(256)(torch.tensor([0.0, 0.5]))
    assert features.shape == (2, 256)
    assert torch.equal(features[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    # At t = 0.5 the lowest frequency (0.5) turns a quarter (cos 0, sin 1), the highest (10^4)
    # 5000 whole turns; float32 angles near 3e4 rad carry ~2e-3 rad of rounding, as released.
    torch.testing.assert_close(features[1, [0, 128]], torch.tensor([0.0, 1.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(features[1, [127, 255]], torch.tensor([1.0, 0.0]), rtol=0, atol=5e-3)


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("differential", [False, True])
def test_padded_frames_do_not_change_real_frames(differential):
    dit = make_dit(differential=differential)
    short, long = make_inputs(dit, frames=5, seed=2), make_inputs(dit, frames=11, seed=3)
    alone = [run(dit, short), run(dit, long)]

    def padded(tensor, frames):  # loud junk in the padding: it must not leak
        junk = torch.full((*tensor.shape[:-1], frames - tensor.shape[-1]), 7.0)
        return torch.cat([tensor, junk], dim=-1)

    batch = {
        key: torch.cat([padded(short[key], 11), long[key]])
        if key in ("x", "local")
        else torch.cat([short[key], long[key]])
        for key in short
    }
    frame_mask = torch.stack([torch.arange(11) < 5, torch.ones(11, dtype=torch.bool)])
    together = run(dit, batch, frame_mask=frame_mask)
    torch.testing.assert_close(together[0, :, :5], alone[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[1], alone[1][0], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(together).all()


def test_self_attention_and_feed_forward_write_zero_at_padded_frames():
    dit = make_dit()
    block = dit.transformer.layers[0]
    x = torch.randn(2, 7, 128)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    cos, sin = dit.transformer.rotary_pos_emb.cos_sin(7, x.device)
    with torch.no_grad():
        out = block.self_attn.self_attend(x, cos, sin, mask)
        assert torch.equal(out[1, 4:], torch.zeros(3, 128)) and out[1, :4].abs().min() > 0
        h = torch.where(mask[..., None], block.ff(x), 0.0)  # what the block adds before the gate
        assert torch.equal(h[1, 4:], torch.zeros(3, 128))


# ----------------------------------------------------------------------------- memory tokens, local input
def test_memory_tokens_take_part_but_get_no_local_input():
    dit = make_dit()
    inputs = make_inputs(dit, frames=6)
    before = run(dit, inputs)
    with torch.no_grad():
        dit.transformer.memory_tokens.add_(1.0)
    assert (run(dit, inputs) - before).abs().max() > 1e-2  # the frames attend to them
    block = dit.transformer.layers[0]
    M = dit.config.num_memory_tokens
    x = torch.randn(1, M + 6, 128)
    cos, sin = dit.transformer.rotary_pos_emb.cos_sin(M + 6, x.device)
    cond = dit.encode_condition(inputs["context"], inputs["global_cond"])
    g = torch.randn(1, 6 * 128)
    with torch.no_grad():
        a = block(x, g, cos, sin, None, cond.keys[0], cond.values[0], torch.randn(1, 6, 257), M)
        b = block(x, g, cos, sin, None, cond.keys[0], cond.values[0], torch.randn(1, 6, 257), M)
    assert torch.equal(a[:, :M], b[:, :M]) and not torch.equal(a[:, M:], b[:, M:])


def test_a_zero_local_input_is_applied_and_equals_none():
    dit = make_dit()
    inputs = make_inputs(dit, frames=6)
    zero = dict(inputs, local=torch.zeros(1, 257, 6))
    none = run(dit, inputs, local=False)
    torch.testing.assert_close(none, run(dit, zero), rtol=1e-5, atol=1e-5)  # one row for all frames
    with torch.no_grad():
        dit.transformer.layers[0].to_local_embed[0].bias.add_(1.0)
    assert (run(dit, inputs, local=False) - none).abs().max() > 1e-2  # the zero input's MLP output counts


# ----------------------------------------------------------------------------- differential attention, cache
def test_differential_with_zero_diff_projections_is_plain_minus_the_mean_value():
    """q_diff = k_diff = 0 make the second softmax uniform: out = plain - to_out(mean of real v)."""
    torch.manual_seed(0)
    plain = Attention(128, 64, differential=False, qk_eps=1e-6, cross=False)
    diff = Attention(128, 64, differential=True, qk_eps=1e-6, cross=False)
    with torch.no_grad():
        diff.to_qkv.weight.copy_(torch.cat([plain.to_qkv.weight, torch.zeros(256, 128)]))
        diff.to_out.weight.copy_(plain.to_out.weight)
    x = torch.randn(2, 9, 128)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    cos, sin = torch.ones(9, 16), torch.zeros(9, 16)
    with torch.no_grad():
        v = x @ plain.to_qkv.weight[256:].T  # (B, N, E)
        mean_v = (v * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        expected = plain.self_attend(x, cos, sin, mask) - plain.to_out(mean_v).expand(-1, 9, -1)
        expected = torch.where(mask[..., None], expected, 0.0)
        torch.testing.assert_close(diff.self_attend(x, cos, sin, mask), expected, rtol=1e-5, atol=1e-5)


def test_condition_cache_batches_like_separate_requests():
    dit = make_dit(differential=True)
    first, second = make_inputs(dit, frames=6, seed=4), make_inputs(dit, frames=6, seed=5)
    with torch.no_grad():
        conds = [dit.encode_condition(i["context"], i["global_cond"]) for i in (first, second)]
        both = dit(
            torch.cat([first["x"], second["x"]]),
            torch.cat([first["t"], second["t"]]),
            ReleasedCondition.cat(conds),
            torch.cat([first["local"], second["local"]]),
        )
    torch.testing.assert_close(both[:1], run(dit, first), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1:], run(dit, second), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("differential", [False, True])
def test_half_precision_stays_close_to_float32(differential):
    """Under bf16 autocast and with bf16 weights (norms, RoPE and the timestep features in
    float32) the velocity stays within 3 % of float32 (measured: about 1 %)."""
    dit = make_dit(differential=differential)
    inputs = make_inputs(dit, frames=12, batch=2)
    reference = run(dit, inputs)
    with torch.autocast("cpu", torch.bfloat16):
        autocast = run(dit, inputs)
    half = {k: v if k == "t" else v.bfloat16() for k, v in inputs.items()}
    weights = run(dit.to(torch.bfloat16), half)
    assert dit.transformer.rotary_pos_emb.inv_freq.dtype == torch.float32  # not rounded to bf16
    for got in (autocast, weights):
        assert got.dtype == torch.float32
        assert (got - reference).norm() < 0.03 * reference.norm()
