"""sa3's T5Gemma encoder against transformers' T5GemmaEncoderModel: parity, cold start, memory.

    # a random-weight folder of the real b-b-ul2 shapes (12 layers, width 768, 12 heads of 64,
    # GeGLU 2048, vocabulary 256,000; encoder and decoder, bf16, about 1.2 GB; nothing downloaded)
    .venv/bin/python scripts/released/measure_text_encoder.py build /tmp/t5gemma-real
    # one cold process per row: import + load + first encode, peak RSS
    .venv/bin/python scripts/released/measure_text_encoder.py run sa3 float32 /tmp/t5gemma-real
    .venv/bin/python scripts/released/measure_text_encoder.py run transformers float32 /tmp/t5gemma-real
    # hidden states of both at one dtype, max difference over the real positions
    .venv/bin/python scripts/released/measure_text_encoder.py parity float32 /tmp/t5gemma-real

The tokenizer files are the fixture's (tests/fixtures/released/small/t5gemma-b-b-ul2/), whose ids
are all inside the large vocabulary. ``run`` prints one JSON line. Measured numbers are in
docs/notes/2026-12-06-official-numerics.md.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from pathlib import Path

FIXTURE_TEXT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "released" / "small" / "t5gemma-b-b-ul2"
PROMPTS = ["lofi house loop, 90 BPM, warm rhodes", "Amen break, 174 BPM drum and bass, punchy snare"]
REAL = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "query_pre_attn_scalar": 64,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": 256000,
    "max_position_embeddings": 8192,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "model_type": "t5_gemma_module",
}


def build(folder: Path) -> None:
    """Random bf16 weights of the real shapes, keys as the released file (model.encoder/decoder.*)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        shutil.copy(FIXTURE_TEXT / name, folder / name)
    config = json.loads((FIXTURE_TEXT / "config.json").read_text())
    config["encoder"] = dict(REAL)
    config["decoder"] = {**REAL, "is_decoder": True, "cross_attention_hidden_size": 768}
    config["vocab_size"] = REAL["vocab_size"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(0)
    width, inner, heads = REAL["hidden_size"], REAL["intermediate_size"], REAL["num_attention_heads"] * 64
    state = {}

    def add(name: str, *shape: int) -> None:
        std = 0.02 if len(shape) == 1 or name.endswith("embed_tokens.weight") else 1 / math.sqrt(shape[-1])
        state[name] = (torch.randn(shape, generator=generator) * std).to(torch.bfloat16)

    for half in ("encoder", "decoder"):
        add(f"model.{half}.embed_tokens.weight", REAL["vocab_size"], width)
        add(f"model.{half}.norm.weight", width)
        for i in range(REAL["num_hidden_layers"]):
            p = f"model.{half}.layers.{i}."
            attentions = ("self_attn", "cross_attn") if half == "decoder" else ("self_attn",)
            for attn in attentions:
                add(p + f"{attn}.q_proj.weight", heads, width)
                add(p + f"{attn}.k_proj.weight", heads, width)
                add(p + f"{attn}.v_proj.weight", heads, width)
                add(p + f"{attn}.o_proj.weight", width, heads)
            add(p + "mlp.gate_proj.weight", inner, width)
            add(p + "mlp.up_proj.weight", inner, width)
            add(p + "mlp.down_proj.weight", width, inner)
            norms = ["pre_self_attn", "post_self_attn", "pre_feedforward", "post_feedforward"]
            if half == "decoder":
                norms += ["pre_cross_attn", "post_cross_attn"]
            for norm in norms:
                add(p + f"{norm}_layernorm.weight", width)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    size = (folder / "model.safetensors").stat().st_size
    print(f"wrote {folder} ({size / 1e9:.2f} GB, {sum(t.numel() for t in state.values()) / 1e6:.0f} M parameters)")


def load(kind: str, dtype_name: str, folder: Path):
    import torch

    dtype = getattr(torch, dtype_name)
    if kind == "sa3":
        from sa3core.released.text import load_text_encoder

        text = load_text_encoder(folder, 256, dtype=dtype)
        return lambda prompts: text.encode(prompts)[0]
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.AutoConfig.from_pretrained(str(folder))
    config.is_encoder_decoder = False  # as the official conditioner
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.T5GemmaEncoderModel.from_pretrained(str(folder), config=config, dtype=dtype).eval()

    def encode(prompts):
        enc = tokenizer(prompts, truncation=True, max_length=256, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"].bool()).last_hidden_state

    return encode


def run(kind: str, dtype_name: str, folder: Path) -> None:
    start = time.perf_counter()
    import torch

    torch.set_num_threads(2)
    imported = time.perf_counter()
    encode = load(kind, dtype_name, folder)
    loaded = time.perf_counter()
    encode(PROMPTS[:1])
    first = time.perf_counter()
    warm = []
    for _ in range(3):  # the machine is shared: the best of three
        tick = time.perf_counter()
        encode(PROMPTS[:1])
        warm.append(time.perf_counter() - tick)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "kind": kind,
                "dtype": dtype_name,
                "import_s": round(imported - start, 2),
                "load_s": round(loaded - imported, 2),
                "first_encode_s": round(first - loaded, 2),
                "cold_total_s": round(first - start, 2),
                "warm_encode_s": round(min(warm), 3),
                "peak_rss_mb": round(peak_mb),
            }
        )
    )


def parity(dtype_name: str, folder: Path) -> None:
    import torch

    torch.set_num_threads(2)
    ours = load("sa3", dtype_name, folder)(PROMPTS)
    theirs = load("transformers", dtype_name, folder)(PROMPTS)
    from sa3core.released.text import T5GemmaTokenizer

    _, mask = T5GemmaTokenizer(folder, 256)(PROMPTS)
    diff = (ours.float() - theirs.float())[mask].abs()
    scale = theirs.float()[mask].abs().max()
    print(json.dumps({"dtype": dtype_name, "max_abs_diff": diff.max().item(), "max_abs_value": scale.item()}))


def main() -> None:
    command, *rest = sys.argv[1:]
    if command == "build":
        build(Path(rest[0]))
    elif command == "run":
        run(rest[0], rest[1], Path(rest[2]))
    elif command == "parity":
        parity(rest[0], Path(rest[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
