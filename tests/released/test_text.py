"""sa3's T5Gemma text encoder and tokenizer against the official references and transformers.

The fixtures (tests/fixtures/released/, README there) hold what the official code computed on a
tiny T5Gemma in the released folder layout: tokenizer ids for four prompts (left padding, as
transformers' GemmaTokenizer does without a padding_side, and right padding), and the encoder's
last hidden state in the official bf16 run and with the weights upcast to float32.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sa3core.errors import Sa3Error
from sa3core.released.text import T5GemmaTokenizer, load_text_encoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
TEXT = FIXTURES / "small" / "t5gemma-b-b-ul2"
TOLERANCE_MAX = 2e-3


def prompts() -> list[str]:
    with safe_open(str(FIXTURES / "reference" / "tokenizer.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["fixture"])["prompts"]


def encode_quietly(encoder, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encoder.encode(texts)


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FIXTURES / "reference" / "text_encoder.safetensors"))


@pytest.fixture(scope="module")
def encoder_fp32():
    return load_text_encoder(TEXT, 256)


@pytest.mark.parametrize("variant,folder", [("main", TEXT), ("right", FIXTURES / "tokenizer-right")])
def test_tokenizer_ids_match_the_official_tokenizer(variant, folder):
    expected = load_file(str(FIXTURES / "reference" / "tokenizer.safetensors"))
    with pytest.warns(UserWarning, match="longer than 256 tokens"):
        ids, mask = T5GemmaTokenizer(folder, 256)(prompts())
    assert torch.equal(ids, expected[f"{variant}.input_ids"])
    assert torch.equal(mask, expected[f"{variant}.attention_mask"].bool())


def test_tokenizer_pads_left_without_a_padding_side_and_reads_max_length():
    ids, mask = T5GemmaTokenizer(TEXT, 8)(["ab", ""])
    assert mask.tolist()[1] == [False] * 7 + [True]  # "" is <bos> alone, at the right end
    assert ids[1, -1] == 2 and (ids[:, :5] == 0).all()


@pytest.mark.parametrize("dtype,key", [(torch.float32, "hidden.fp32"), (torch.bfloat16, "hidden.official")])
def test_hidden_states_match_the_official_encoder(dtype, key, reference):
    encoder = load_text_encoder(TEXT, 256, dtype=dtype)
    hidden, mask = encode_quietly(encoder, prompts())
    assert hidden.dtype == torch.float32 and hidden.shape == (4, 256, 768)
    assert torch.equal(mask, reference["attention_mask"].bool())
    rows = reference["rows"]
    got = hidden[rows[:, 0], rows[:, 1]]
    if dtype == torch.float32:
        torch.testing.assert_close(got, reference[key], rtol=1e-5, atol=1e-5)
    else:  # one bf16 step of the values at most (the official run casts the same way)
        torch.testing.assert_close(got, reference[key], rtol=2**-7, atol=1e-2)


def test_a_wrong_prompt_moves_the_output_beyond_the_tolerance(encoder_fp32, reference):
    rows = reference["rows"]
    first = rows[rows[:, 0] == 0]
    texts = prompts()
    wrong = ["lofi house loop, 90 BPM, warm piano"] + texts[1:]  # one word changed
    hidden, _ = encode_quietly(encoder_fp32, wrong)
    got = hidden[first[:, 0], first[:, 1]]
    expected = reference["hidden.fp32"][: len(first)]
    assert (got - expected).abs().max() > 100 * TOLERANCE_MAX
    hidden, _ = encode_quietly(encoder_fp32, texts)
    torch.testing.assert_close(hidden[first[:, 0], first[:, 1]], expected, rtol=1e-5, atol=1e-5)


def test_prompt_conditioner_on_top_gives_the_official_conditioner_output(encoder_fp32):
    from sa3core.released.checkpoint import load_conditioners, open_released

    cond = load_file(str(FIXTURES / "reference" / "conditioner_small.safetensors"))
    with safe_open(str(FIXTURES / "reference" / "conditioner_small.safetensors"), framework="pt") as handle:
        conditioning = json.loads(handle.metadata()["fixture"])["conditioning"]
    hidden, mask = encoder_fp32.encode([c["prompt"] for c in conditioning])
    assert torch.equal(mask, cond["prompt.mask"].bool())
    conditioners = load_conditioners(open_released(FIXTURES / "small"))
    output = conditioners["prompt"](hidden, mask)
    index = cond["prompt.rows_index"]
    torch.testing.assert_close(output[index[:, 0], index[:, 1]], cond["prompt.rows.fp32"], rtol=1e-5, atol=1e-5)
    padding = conditioners["prompt"].padding_embedding
    assert torch.equal(output[~mask], padding.expand(int((~mask).sum()), -1))


def test_embedding_table_stays_the_stored_bf16_tensor(encoder_fp32):
    table = encoder_fp32.encoder.embed_tokens.weight
    assert table.dtype == torch.bfloat16  # rows are upcast after the lookup; the table is not copied
    assert encoder_fp32.encoder.layers[0].self_attn["q_proj"].weight.dtype == torch.float32


def test_same_as_transformers_t5gemma_encoder(reference):
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.from_pretrained(str(TEXT))
    config.is_encoder_decoder = False
    ids, mask = reference["input_ids"], reference["attention_mask"].bool()
    for dtype in (torch.float32, torch.bfloat16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = transformers.T5GemmaEncoderModel.from_pretrained(str(TEXT), config=config, dtype=dtype).eval()
        ours = load_text_encoder(TEXT, 256, dtype=dtype).encoder
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(ids, mask)
        real = mask[..., None].expand_as(got)
        torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad folders
def copy_text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "t5gemma-b-b-ul2"
    shutil.copytree(TEXT, folder)  # follows the symlinks of the fixture folders
    return folder


def rewrite_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda s: s.pop("model.encoder.layers.1.mlp.up_proj.weight"),
            "lacks 'model.encoder.layers.1.mlp.up_proj.weight'",
        ),
        (
            lambda s: s.update({"model.encoder.layers.2.mlp.up_proj.weight": s["model.encoder.norm.weight"].clone()}),
            "has 'model.encoder.layers.2.mlp.up_proj.weight'",
        ),
        (
            lambda s: s.update({"model.encoder.norm.weight": s["model.encoder.norm.weight"][:10]}),
            "'model.encoder.norm.weight' has shape (10,)",
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_strict_loading_names_the_key(tmp_path, change, message):
    folder = copy_text_folder(tmp_path)
    rewrite_weights(folder, change)
    with pytest.raises(Sa3Error, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_text_encoder(folder, 256)
    assert "\n" not in str(err.value)


def test_decoder_weights_are_skipped_but_not_needed(tmp_path):
    folder = copy_text_folder(tmp_path)
    rewrite_weights(folder, lambda s: [s.pop(k) for k in list(s) if k.startswith("model.decoder.")])
    load_text_encoder(folder, 256)


def test_bad_folders_are_one_line_errors(tmp_path):
    folder = copy_text_folder(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Sa3Error, match="truncated or not a safetensors file"):
        load_text_encoder(folder, 256)
    (folder / "model.safetensors").unlink()
    with pytest.raises(Sa3Error, match="has no model.safetensors"):
        load_text_encoder(folder, 256)

    folder = copy_text_folder(tmp_path / "b")
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["hidden_activation"] = "relu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Sa3Error, match="hidden_activation = 'relu' is not supported"):
        load_text_encoder(folder, 256)
    config["encoder"]["hidden_activation"] = "gelu_pytorch_tanh"
    del config["encoder"]["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Sa3Error, match="lacks 'num_hidden_layers'"):
        load_text_encoder(folder, 256)

    folder = copy_text_folder(tmp_path / "c")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(Sa3Error, match="no tokenizer.json"):
        load_text_encoder(folder, 256)


def test_prompts_must_be_a_list_of_strings(encoder_fp32):
    for bad in ("a prompt", [], [1]):
        with pytest.raises(Sa3Error, match="list of strings"):
            encoder_fp32.encode(bad)


def test_padding_side_from_a_padding_section_of_tokenizer_json(tmp_path):
    """No padding_side in tokenizer_config.json but a padding section in tokenizer.json: its
    direction wins over the Gemma default (transformers 5.25 gives [2, 283, 297, 0, 0, 0] here)."""
    folder = copy_text_folder(tmp_path)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "<pad>",
    }
    (folder / "tokenizer.json").write_text(json.dumps(data))
    ids, mask = T5GemmaTokenizer(folder, 6)(["ab"])
    assert ids.tolist() == [[2, 283, 297, 0, 0, 0]]
    assert mask.tolist() == [[True, True, True, False, False, False]]


def test_a_backend_encodes_a_prompt_batch_once_and_hands_out_copies(monkeypatch):
    """The released backend keeps the last 16 distinct prompt batches' encoder outputs
    (EncodedPrompts): another take of a prompt skips T5Gemma and gets what the first call
    computed, bit for bit; changing what it got does not reach the cache; the least recently used
    batch goes first."""
    from sa3core.released.backend import load
    from sa3core.released.text import T5GemmaEncoder

    backend = load(FIXTURES / "small", bf16=False)
    calls = []
    forward = T5GemmaEncoder.forward
    monkeypatch.setattr(T5GemmaEncoder, "forward", lambda self, *a: calls.append(1) or forward(self, *a))
    first, mask = backend.encode_text(["warm pad", ""])
    again, again_mask = backend.encode_text(["warm pad", ""])
    assert len(calls) == 1 and torch.equal(again, first) and torch.equal(again_mask, mask)
    with torch.inference_mode():  # where the pipeline works: its tensors can change in place there
        again.add_(1.0)  # a caller's change stays with the caller
    assert torch.equal(backend.encode_text(["warm pad", ""])[0], first) and len(calls) == 1
    backend.encode_text(["warm pad"])  # another batch is another entry
    assert len(calls) == 2
    for i in range(16):  # 16 new batches push the first two out
        backend.encode_text([f"prompt {i}"])
    assert len(calls) == 18
    backend.encode_text(["warm pad", ""])
    assert len(calls) == 19
    for bad in ("a prompt", [], [1], [["a list"]]):  # the encoder's one-line error, not the cache's TypeError
        with pytest.raises(Sa3Error, match="list of strings"):
            backend.encode_text(bad)
