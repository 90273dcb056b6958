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
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["lofi house loop, 90 BPM, warm rhodes", "Amen break, 174 BPM drum and bass, punchy snare"]


def build(folder: Path) -> None:
    """Random bf16 weights of the real shapes (bench.released_shapes, which the benches use too)."""
    sys.path.insert(0, str(REPO))
    from bench.released_shapes import T5GEMMA, build_text_encoder

    build_text_encoder(folder, seed=0)
    size = (folder / "model.safetensors").stat().st_size
    print(f"wrote {folder} ({size / 1e9:.2f} GB, {T5GEMMA['num_hidden_layers']} layers per half)")


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
