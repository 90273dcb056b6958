"""Build the released-checkpoint parity fixtures by running the official Stable Audio 3 code.

    /work/official-venv/bin/python scripts/released/make_fixtures.py --official DIR --out tests/fixtures/released

DIR is a checkout of the official implementation (Stability-AI/stable-audio-3, MIT); it is imported
from there, never copied, downloaded or built. The Python that runs this needs torch, transformers
(with T5Gemma), safetensors, einops, einops-exts, sentencepiece and tokenizers; not sa3.

What it writes (tests/fixtures/released/README.md explains each file):
1. Small random-weight checkpoints in the released layout (model_config.json, model.safetensors with
   the model.model. / conditioner.conditioners. / pretransform.model. prefixes, a t5gemma-b-b-ul2/
   folder with config.json, model.safetensors and tokenizer files): a DiT-small-like model with a
   SAME-S-like autoencoder, a DiT-medium-like one (differential attention) with a SAME-L-like
   autoencoder, their -base configurations, and a second tokenizer configuration.
2. Reference inputs and outputs of the official code on them, on CPU at fp32, with fixed seeds:
   tokenizer ids, text-encoder hidden states, conditioner outputs, DiT forwards, SAME encode and
   decode, sampling schedules and whole generate / inpaint / audio-to-audio calls.

The random weights are scaled so that every stage passes its input on (a randomly initialised SAME
decoder barely depends on its latents), and the script asserts that changing the prompt or the seed
changes the final audio by far more than the parity tolerance (max 2e-3, correlation 0.9999).

Documented deviations from running the official code as is (each is listed in manifest.json):
- ``torchaudio`` has no CPU build for this torch here; when it does not import, a stub module stands
  in whose Resample raises. Nothing here resamples (every input is at 44,100 Hz).
- The text encoder is loaded from the fixture folder instead of the hub (``repo_id`` points at the
  local folder while the official objects are built); HF_HUB_OFFLINE is set.
- Padding: the official CPU attention only zeroes padded values (padded keys keep softmax weight);
  the weights were trained with flash-attention varlen, where padded keys leave the softmax, padded
  query rows and feed-forward outputs are zero. References with padded frames are written twice:
  ``cpu`` (the official CPU code as is) and ``trained`` (the varlen semantics, by the monkeypatch in
  ``trained_padding_semantics``). sa3 follows ``trained``.
- Text encoder precision: transformers 5.x loads the bf16 weights as bf16 and runs them so, also on
  CPU. References say which they used: ``official`` (as is, bf16) or ``fp32`` (the same bf16-stored
  weights upcast: a float32 copy of the conditioner's model, swapped in by ``text_encoder_in_fp32``;
  the model as loaded is never cast, which would also round its float32 RoPE buffer to bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import sys
import types
import warnings
from pathlib import Path

from official_defaults import write_defaults  # this script's folder is on sys.path

HIDDEN = 768  # T5Gemma b-b-ul2 width; the official conditioner hard-codes it for this model name
MAX_LENGTH = 256
SAMPLE_RATE = 44100
LATENT_DIM = 32  # smaller than the released 256 to keep the fixtures small; read it from the config
T5_FOLDER = "t5gemma-b-b-ul2"

CORPUS = [
    "lofi house loop with warm rhodes chords and vinyl crackle, 90 BPM",
    "Amen break, 174 BPM drum and bass, punchy snare",
    "a dog barking next to a waterfall",
    "cinematic orchestral swell with strings and brass",
    "808 kick drum one shot, deep sub",
    "ambient pad, slow evolving texture in C minor",
    "rain on a tin roof at night, distant thunder",
    "funky slap bass groove with clavinet, 110 BPM",
    "techno hi-hats, sixteenth notes, open hat on the off-beat",
    "solo acoustic guitar fingerpicking in D major",
]
TEXT_PROMPTS = [
    "lofi house loop, 90 BPM, warm rhodes",
    "",
    "Café — 808 kick ✓ ñ  double  space\nnew line\ttab",
    " ".join(CORPUS * 6),  # far more than 256 tokens: truncation
]
PROMPT_A = "funky slap bass groove, 110 BPM"
PROMPT_B = "rain on a tin roof at night"
NEGATIVE = "distorted, noisy"


# ----------------------------------------------------------------------------- environment
def stub_torchaudio() -> bool:
    """Install a stand-in ``torchaudio`` when the real one does not import; True if stubbed."""
    try:
        import torchaudio  # noqa: F401

        return False
    except Exception:  # a CUDA-only wheel raises OSError while loading its extension
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]

    class Resample:  # only built for sample-rate conversion, which the fixtures never need
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchaudio stub: resampling is not available (fixtures are 44.1 kHz)")

    import importlib.machinery

    module = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None, is_package=True)
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchaudio.transforms", None)
    transforms.Resample = Resample
    module.transforms = transforms
    sys.modules["torchaudio"] = module
    sys.modules["torchaudio.transforms"] = transforms
    return True


# ----------------------------------------------------------------------------- tokenizer
def build_tokenizer(folder: Path) -> None:
    """A Gemma-style byte-fallback BPE tokenizer (sentencepiece model + tokenizer.json) of 320 pieces.

    tokenizer.json is derived from tokenizer.model the way transformers converts Gemma tokenizers
    (normalizer " " -> "▁", byte fallback, <bos> prepended by the post-processor); the script checks
    that both give the same pieces on the fixture prompts.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=320,
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<mask>"],
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []  # (rank of the merged piece, left id, right id, left, right)
    for piece, index in vocab.items():
        if sp.is_control(index) or sp.is_unknown(index) or sp.is_byte(index) or piece == "<mask>":
            continue
        for split in range(1, len(piece)):
            left, right = piece[:split], piece[split:]
            if left in vocab and right in vocab:
                merges.append((index, vocab[left], vocab[right], left, right))
    merges.sort()
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(left, right) for *_, left, right in merges],
            unk_token="<unk>",
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    for prompt in TEXT_PROMPTS + [PROMPT_A, PROMPT_B, NEGATIVE]:
        ids = tokenizer.encode(prompt).ids
        assert ids[0] == 2 and ids[1:] == sp.encode(prompt), f"tokenizer.json and tokenizer.model differ on {prompt!r}"
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    write_json(folder / "special_tokens_map.json", {**special, "mask_token": "<mask>"})
    # No padding_side: transformers' GemmaTokenizer then pads on the LEFT (its class default). The
    # add_*_token flags are written as the 4.x tokenizers did; transformers 5.x ignores them and
    # keeps tokenizer.json's post-processor (checked below and recorded in the manifest).
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            **special,
            "mask_token": "<mask>",
            "model_max_length": 1000000000000000019884624838656,
            "clean_up_tokenization_spaces": False,
        },
    )


def build_tokenizer_variant(main_folder: Path, folder: Path) -> None:
    """The same tokenizer with an explicit right padding side (tokenizer files only)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer.model", "special_tokens_map.json"):
        link(folder / name, main_folder / name)
    config = json.loads((main_folder / "tokenizer_config.json").read_text())
    write_json(folder / "tokenizer_config.json", {**config, "padding_side": "right"})


# ----------------------------------------------------------------------------- text encoder
T5_ENCODER = {
    "hidden_size": HIDDEN,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "query_pre_attn_scalar": 8,
    "sliding_window": 3,  # real: 4096 (never reached at 256 tokens); tiny here so the band is exercised
    "layer_types": ["sliding_attention", "full_attention"],
    "attn_logit_softcapping": 5.0,  # real: 50; small so the tanh cap changes the logits
    "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "max_position_embeddings": 8192,
    "vocab_size": 320,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "dropout_rate": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "model_type": "t5_gemma_module",
}
T5_DECODER = {
    **T5_ENCODER,
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "layer_types": ["sliding_attention"],
    "cross_attention_hidden_size": HIDDEN,
    "is_decoder": True,
}


def build_text_encoder(folder: Path, torch) -> None:
    """Tiny T5Gemma (encoder AND decoder, as the released folder), random weights stored as bf16."""
    from safetensors.torch import save_file
    from transformers import T5GemmaConfig, T5GemmaForConditionalGeneration

    config_json = {
        "architectures": ["T5GemmaForConditionalGeneration"],
        "model_type": "t5gemma",
        "encoder": T5_ENCODER,
        "decoder": T5_DECODER,
        "is_encoder_decoder": True,
        "dropout_rate": 0.0,
        "attention_dropout": 0.0,
        "classifier_dropout_rate": 0.0,
        "tie_word_embeddings": True,
        "vocab_size": 320,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.53.0",
    }
    model = T5GemmaForConditionalGeneration(T5GemmaConfig.from_dict(config_json))
    generator = torch.Generator().manual_seed(1)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.out_proj.weight":  # tied to the decoder's embeddings; not stored
            continue
        shape = tuple(tensor.shape)
        if name.endswith("embed_tokens.weight"):
            value = randn(torch, generator, shape, 0.06)
        elif "norm" in name:  # Gemma RMSNorm multiplies by (1 + w)
            value = randn(torch, generator, shape, 0.25)
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            value = randn(torch, generator, shape, 2.5 / math.sqrt(shape[1]))  # logits reach the soft cap
        else:
            value = randn(torch, generator, shape, 1.0 / math.sqrt(shape[1]))
        state[name] = value.to(torch.bfloat16).contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_json(folder / "config.json", config_json)
    write_json(folder / "generation_config.json", {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0})


# ----------------------------------------------------------------------------- checkpoints
def same_config(large: bool) -> dict:
    common = {
        "channels": 8,
        "c_mults": [4],  # width 32 (released: 768 / 1536)
        "strides": [16],
        "latent_dim": LATENT_DIM,
        "transformer_depths": [2],  # released: 6 / 12
        "dim_heads": 16,  # released: 64
        "differential": True,
        "dyt": True,
        "variable_stride": True,
        "checkpointing": False,
    }
    if large:
        windows = {"sliding_window": [1, 1]}
        encoder = {**common, **windows, "in_channels": 512, "mask_noise": 0.001}
        decoder = {**common, **windows, "out_channels": 512, "mask_noise": 0.1, "sinusoidal_blocks": [2]}
    else:
        chunks = {"chunk_size": 32, "chunk_midpoint_shift": True}
        encoder = {**common, **chunks, "in_channels": 512}
        decoder = {**common, **chunks, "out_channels": 512, "conv_mapping": True, "mask_noise": 0.01}
    return {
        "encoder": {"type": "same", "config": encoder},
        "decoder": {"type": "same", "config": decoder},
        "bottleneck": {
            "type": "softnorm",
            "config": {"dim": LATENT_DIM, "noise_augment_dim": 0, "noise_regularize": True, "auto_scale": True},
        },
        "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 256}},
        "latent_dim": LATENT_DIM,
        "downsampling_ratio": 4096,
        "io_channels": 2,
    }


def model_config(medium: bool, objective: str) -> dict:
    dit = {
        "io_channels": LATENT_DIM,
        "embed_dim": 64,  # released: 1536 / 1024
        "depth": 2,  # released: 24 / 20
        # small: one head of 64 (as released), RoPE on 32 of its dims; medium: two heads of 32, RoPE on all
        "num_heads": 2 if medium else 1,
        "cond_token_dim": HIDDEN,
        "global_cond_dim": HIDDEN,
        "local_add_cond_dim": LATENT_DIM + 1,
        "project_cond_tokens": True,
        "project_global_cond": True,
        "global_cond_type": "adaLN",
        "timestep_features_type": "expo",
        "transformer_type": "continuous_transformer",
        "norm_type": "rms_norm",
        "norm_kwargs": {"force_fp32": True},
        "ff_kwargs": {"mult": 2},  # released: 4
        "num_memory_tokens": 64,
        "attn_kwargs": {"qk_norm": "rms", **({"differential": True} if medium else {})},
    }
    repo = "stabilityai/stable-audio-3-medium" if medium else "stabilityai/stable-audio-3-small-music"
    if objective == "rectified_flow":
        repo += "-base"
    return {
        "model_type": "diffusion_cond_inpaint",
        "sample_size": 16777216 if medium else 5292032,
        "sample_rate": SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "io_channels": LATENT_DIM,
            "conditioning": {
                "cond_dim": HIDDEN,
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {
                            "max_length": MAX_LENGTH,
                            "padding_mode": "learned",
                            "repo_id": repo,
                            "subfolder": T5_FOLDER,
                        },
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"},
                    },
                ],
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": objective,
                "config": dit,
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "distribution_shift_options": {"type": "full", "min_length": 256, "max_length": 4096},
                "sampling_distribution_shift_options": None,
                "mask_padding_attention": True,
                "use_effective_length_for_schedule": True,
            },
            "pretransform": {"type": "autoencoder", "chunked": True, "config": same_config(large=medium)},
        },
    }


def local_config(config: dict, folder: Path) -> dict:
    """The config the official objects are built from: the text encoder comes from the local folder."""
    config = json.loads(json.dumps(config))
    for entry in config["model"]["conditioning"]["configs"]:
        if entry["type"] == "t5gemma":
            entry["config"]["repo_id"] = str(folder)
    return config


def init_weights(model, torch, seed: int) -> dict:
    """Random weights scaled so that each stage's output depends on its input (see module docstring).

    Returns the checkpoint dict (every persistent tensor of the official wrapper's state_dict, with
    buffers such as RoPE inv_freq kept as the constructor computed them).
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        last = name.rsplit(".", 1)[-1]
        if last == "inv_freq" or tensor.numel() == 0:
            value = tensor.clone()
        elif last == "alpha":  # DynamicTanh: keep tanh out of saturation
            value = 0.6 + 0.5 * torch.rand(shape, generator=generator)
        elif last == "gamma" and "pretransform" in name and ("q_norm" in name or "k_norm" in name):
            value = 3.0 * (1.0 + randn(torch, generator, shape, 0.15))  # peaked attention in SAME
        elif last == "gamma":
            value = 1.0 + randn(torch, generator, shape, 0.15)
        elif last == "beta":
            value = randn(torch, generator, shape, 0.05)
        elif last == "bias" and "bottleneck" not in name:
            value = randn(torch, generator, shape, 0.05)
        elif name.endswith("memory_tokens") or name.endswith("padding_embedding"):
            value = randn(torch, generator, shape, 1.0)
        elif last == "new_tokens":  # small against the latent tokens, so the decoder follows its latents
            value = randn(torch, generator, shape, 0.05)
        elif last == "to_scale_shift_gate":
            value = randn(torch, generator, shape, 0.3)
        elif name.endswith("bottleneck.scaling_factor"):
            value = 1.0 + randn(torch, generator, shape, 0.1)
        elif name.endswith("bottleneck.bias"):
            value = randn(torch, generator, shape, 0.1)
        elif name.endswith("bottleneck.running_std"):
            value = torch.full(shape, 0.9)
        elif last == "weight_v":
            value = randn(torch, generator, shape, 1.0)
        elif last == "weight_g":  # encoder: audio patches of ~0.3 become tokens of ~1
            value = torch.full(shape, 4.0 if ".encoder." in name else 1.0)
        elif last == "weight":
            fan_in = math.prod(shape[1:])
            gain = 1.0
            if name.endswith("global_cond_embedder.2.weight"):
                gain = 0.3  # adaLN modulation of a few tenths
            elif "process_conv" in name:
                gain = 0.5  # residual 1x1 convolutions
            elif "cross_attn.to_out" in name:
                gain = 2.5  # the prompt reaches the DiT through cross-attention only
            elif "pretransform" in name and "to_out" in name:
                gain = 4.0  # differential attention subtracts two similar averages
            elif "pretransform" in name and "ff.ff.2" in name:
                gain = 0.3  # keep the feed-forward from drowning what attention brings from the latents
            value = randn(torch, generator, shape, gain / math.sqrt(fan_in))
        else:
            raise SystemExit(f"no initialisation rule for {name} {shape}")
        state[name] = value.float().contiguous()
    model.load_state_dict(state, strict=True)
    return state


def calibrate_decoder(model, torch, latent_frames: int = 4) -> None:
    """Scale the decoder's output mapping so decoded audio has an RMS of about 0.2 (no clipping)."""
    autoencoder = model.pretransform.model
    mapping = autoencoder.decoder.layers[-1].mapping
    torch.manual_seed(0)
    probe = torch.randn(2, LATENT_DIM, latent_frames)
    with torch.no_grad():
        rms = autoencoder.decode(probe).pow(2).mean().sqrt().item()
        mapping.weight_g.mul_(0.2 / rms)


def save_checkpoint(model, path: Path, torch) -> None:
    """Weights as the released files store them: one flat dict with the wrapper's prefixes.

    Parameters are stored as bfloat16 to keep the fixtures small (the released files are fp32; the official loader
    copies either into its fp32 modules). The official model is then reloaded from this file so the
    references use exactly the stored values.
    """
    from safetensors.torch import save_file

    # RoPE frequencies stay float32: rounded, they would no longer be what the formula gives.
    state = {
        k: (v if k.endswith("inv_freq") else v.to(torch.bfloat16)).contiguous() for k, v in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"format": "pt"})


def load_official(folder: Path, torch, official):
    """The official StableAudioModel on CPU at fp32, loaded the official way, then checked strictly."""
    from safetensors.torch import load_file

    config = local_config(json.loads((folder / "model_config.json").read_text()), folder.resolve())
    with contextlib.redirect_stdout(io.StringIO()) as log:
        model = official.loading_utils.load_diffusion_cond(config, str(folder / "model.safetensors"), device="cpu")
    if "Skipping" in log.getvalue():
        raise SystemExit(f"official loader skipped keys of {folder}: {log.getvalue()}")
    stored = load_file(str(folder / "model.safetensors"))
    current = model.state_dict()
    missing = sorted(set(current) - set(stored))
    unexpected = sorted(set(stored) - set(current))
    if missing or unexpected:
        raise SystemExit(f"{folder}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in stored.items():
        if not torch.equal(current[key], value.float()):
            raise SystemExit(f"{folder}: {key} did not load")
    model.eval()
    return official.model.StableAudioModel(model, config, "cpu", False)


# ----------------------------------------------------------------------------- padding semantics
@contextlib.contextmanager
def trained_padding_semantics(official):
    """Run the DiT with flash-attention varlen semantics, in fp32 and pure torch.

    What varlen does on GPU (how the released weights were trained): padded keys leave the softmax;
    padded query rows come back as zeros (pad_input); the feed-forward runs on the valid tokens only
    and writes zeros at padded positions. The official FeedForward already implements the last
    part given ``index_first_axis``/``pad_input``; this supplies those as plain indexing, makes the
    transformer precompute its varlen metadata, and replaces the self-attention kernel with masked
    SDPA plus zeroed padded rows. Everything without a padding mask (cross-attention, SAME) is
    unchanged.
    """
    transformer = official.transformer
    F = transformer.F
    saved = {
        name: getattr(transformer, name)
        for name in ("flash_attn_varlen_func", "index_first_axis", "pad_input", "unpad_input")
    }
    original_apply_attn = transformer.Attention.apply_attn

    def index_first_axis(x, indices):
        return x[indices]

    def pad_input(packed, indices, batch, seqlen):
        out = packed.new_zeros((batch * seqlen, *packed.shape[1:]))
        out[indices] = packed
        return out.view(batch, seqlen, *packed.shape[1:])

    def apply_attn(self, q, k, v, causal=None, flash_attn_sliding_window=None, padding_mask=None, **kwargs):
        if padding_mask is None or flash_attn_sliding_window is not None or causal:
            return original_apply_attn(
                self, q, k, v, causal=causal, flash_attn_sliding_window=flash_attn_sliding_window, **kwargs
            )
        keep = padding_mask.bool()  # (B, N) over memory tokens + frames
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, H, N, D)
        return out * keep[:, None, :, None].to(out.dtype)

    transformer.flash_attn_varlen_func = object()  # "available": precompute the varlen metadata
    transformer.unpad_input = object()
    transformer.index_first_axis = index_first_axis
    transformer.pad_input = pad_input
    transformer.Attention.apply_attn = apply_attn
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(transformer, name, value)
        transformer.Attention.apply_attn = original_apply_attn


@contextlib.contextmanager
def text_encoder_in_fp32(conditioner, enabled: bool = True):
    """Run the prompt conditioner with a float32 copy of its T5Gemma (the stored bf16 weights upcast).

    A copy, not ``.to()``: casting the loaded model back to bf16 afterwards would also round its
    float32 RoPE frequencies, which the official code as loaded never does.
    """
    if not enabled:
        yield
        return
    original = conditioner.model
    conditioner.__dict__["model"] = copy.deepcopy(original).float()
    try:
        yield
    finally:
        conditioner.__dict__["model"] = original


# ----------------------------------------------------------------------------- helpers
def randn(torch, generator, shape, std: float):
    return torch.randn(shape, generator=generator) * std


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def link(path: Path, target: Path) -> None:
    """A relative symlink (the Hugging Face cache also hands out symlinked files)."""
    if path.is_symlink() or path.exists():
        path.unlink() if not path.is_dir() or path.is_symlink() else shutil.rmtree(path)
    path.symlink_to(os.path.relpath(target, path.parent))


def save(path: Path, tensors: dict, meta: dict, torch) -> None:
    from safetensors.torch import save_file

    clean = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        if value.dtype == torch.bool:
            value = value.to(torch.uint8)
        clean[key] = value
    save_file(clean, str(path), metadata={"fixture": json.dumps(meta, ensure_ascii=False)})


def fp16_exact(torch, tensor):
    """Inputs are stored as float16; round them first so the stored values are the values used."""
    return tensor.to(torch.float16).to(torch.float32)


def compare(a, b) -> tuple[float, float]:
    a, b = a.flatten().double(), b.flatten().double()
    corr = float(((a - a.mean()) * (b - b.mean())).sum() / ((a - a.mean()).norm() * (b - b.mean()).norm()))
    return float((a - b).abs().max()), corr


def assert_far(name: str, a, b) -> dict:
    """Fail unless a and b differ by far more than the parity tolerance (2e-3 max, corr 0.9999)."""
    max_diff, corr = compare(a, b)
    print(f"  {name}: max diff {max_diff:.4f}, correlation {corr:.5f}")
    if not (max_diff > 0.05 and corr < 0.99):
        raise SystemExit(f"{name}: outputs too close (max {max_diff:.2e}, corr {corr:.6f}); weights not meaningful")
    return {"max_abs_diff": round(max_diff, 5), "correlation": round(corr, 6)}


def real_rows(torch, hidden, mask, positions_of_long=None):
    """Rows of hidden at real (unpadded) positions, with their (prompt, position) index."""
    rows, index = [], []
    for b in range(hidden.shape[0]):
        positions = mask[b].nonzero().flatten().tolist()
        if positions_of_long is not None and len(positions) > 8:
            positions = positions[:4] + positions[-4:]
        for p in positions:
            rows.append(hidden[b, p])
            index.append([b, p])
    return torch.stack(rows), torch.tensor(index, dtype=torch.int64)


# ----------------------------------------------------------------------------- references
def text_references(out: Path, small, torch, meta: dict) -> None:
    from transformers import AutoTokenizer

    folder = out / "small" / T5_FOLDER
    conditioner = small.model.conditioner.conditioners["prompt"]
    tensors = {}
    for variant, path in (("main", folder), ("right", out / "tokenizer-right")):
        tok = AutoTokenizer.from_pretrained(str(path))
        enc = tok(TEXT_PROMPTS, truncation=True, max_length=MAX_LENGTH, padding="max_length", return_tensors="pt")
        tensors[f"{variant}.input_ids"] = enc["input_ids"]
        tensors[f"{variant}.attention_mask"] = enc["attention_mask"]
        meta["tokenizer"][variant] = {
            "folder": str(path.relative_to(out)),
            "transformers_class": type(tok).__name__,
            "padding_side": tok.padding_side,
            "post_processor": str(tok.backend_tokenizer.post_processor),
        }
    assert conditioner.tokenizer.padding_side == meta["tokenizer"]["main"]["padding_side"]
    save(
        out / "reference" / "tokenizer.safetensors", tensors, {"prompts": TEXT_PROMPTS, "max_length": MAX_LENGTH}, torch
    )

    ids, mask = tensors["main.input_ids"], tensors["main.attention_mask"].bool()
    encoder = conditioner.model
    dtype = next(encoder.parameters()).dtype
    assert encoder.encoder.rotary_emb.inv_freq.dtype == torch.float32, "the loaded text encoder keeps fp32 RoPE"
    meta["text_encoder"]["official_dtype"] = str(dtype).replace("torch.", "")
    text = {}
    with torch.no_grad():
        for label in ("official", "fp32"):
            with text_encoder_in_fp32(conditioner, enabled=label == "fp32"):
                hidden = conditioner.model(input_ids=ids, attention_mask=mask)["last_hidden_state"].float()
            text[f"hidden.{label}"], text["rows"] = real_rows(torch, hidden, mask, positions_of_long=True)
    meta["text_encoder"]["rows"] = "all real positions; for prompts over 8 tokens the first 4 and the last 4"
    save(
        out / "reference" / "text_encoder.safetensors",
        {**text, "input_ids": ids, "attention_mask": mask},
        {
            "prompts": TEXT_PROMPTS,
            "tokenizer": "main",
            "call": "T5GemmaEncoderModel(input_ids, attention_mask).last_hidden_state (the conditioner's model)",
            "hidden.official": f"as the official conditioner runs it ({meta['text_encoder']['official_dtype']})",
            "hidden.fp32": "the same stored weights upcast to float32",
        },
        torch,
    )


def conditioner_references(out: Path, name: str, handle, torch, both: bool) -> dict:
    conditioning = [{"prompt": PROMPT_A, "seconds_total": 0.1}, {"prompt": "", "seconds_total": 37.5}]
    cond = handle.model.conditioner
    prompt = cond.conditioners["prompt"]
    result = {}
    with torch.no_grad():
        for label in ("official", "fp32") if both else ("fp32",):
            with text_encoder_in_fp32(prompt, enabled=label == "fp32"):
                tensors = cond(conditioning, "cpu")
            embeddings, mask = tensors["prompt"]
            rows, index = real_rows(torch, embeddings.float(), mask)
            result[f"prompt.rows.{label}"] = rows
            result["prompt.rows_index"] = index
            result["prompt.mask"] = mask
            padded = embeddings[~mask]
            assert torch.equal(padded, prompt.padding_embedding.expand_as(padded)), (
                "padded rows are the padding embedding"
            )
    seconds, seconds_mask = tensors["seconds_total"]
    result["seconds_total.embedding"] = seconds
    result["seconds_total.mask"] = seconds_mask
    batch = len(conditioning)
    tensors["inpaint_mask"] = [torch.zeros(batch, 1, 1)]  # needed by get_conditioning_inputs, unused here
    tensors["inpaint_masked_input"] = [torch.zeros(batch, LATENT_DIM, 1)]
    inputs = handle.model.get_conditioning_inputs(tensors)
    result["global_cond"] = inputs["global_cond"]
    save(
        out / "reference" / f"conditioner_{name}.safetensors",
        result,
        {
            "conditioning": conditioning,
            "cross_attn_cond": "concat over tokens of prompt (B, 256, 768) and seconds_total (B, 1, 768); prompt = "
            "padding_embedding everywhere, real rows put back at rows_index",
            "cross_attn_mask": "ignored by the DiT (the official code sets it to None)",
            "prompt.rows.official": "text encoder as the official code runs it; .fp32: upcast weights",
        },
        torch,
    )
    return result


def cross_attention_input(torch, rows, index, mask, padding_embedding, seconds):
    prompt = padding_embedding.expand(mask.shape[0], mask.shape[1], -1).clone()
    prompt[index[:, 0], index[:, 1]] = rows
    return torch.cat([prompt, seconds], dim=1)


def dit_references(out: Path, name: str, handle, cond: dict, torch, official) -> None:
    dit = handle.model.model  # DiTWrapper
    generator = torch.Generator().manual_seed(100)
    frames = 12
    x = fp16_exact(torch, torch.randn(2, LATENT_DIM, frames, generator=generator))
    t = torch.tensor([0.83, 0.31])
    padding_embedding = handle.model.conditioner.conditioners["prompt"].padding_embedding.detach()
    context = cross_attention_input(
        torch,
        cond["prompt.rows.fp32"],
        cond["prompt.rows_index"],
        cond["prompt.mask"],
        padding_embedding,
        cond["seconds_total.embedding"],
    )
    global_cond = cond["global_cond"]
    keep = torch.tensor([[1] * frames, [1] * 6 + [0] * 6], dtype=torch.float32)
    source = fp16_exact(torch, torch.randn(2, LATENT_DIM, frames, generator=generator))
    local = torch.cat([keep[:, None, :], source * keep[:, None, :]], dim=1)  # (B, C + 1, T): mask, masked latents
    padding = torch.tensor([[True] * frames, [True] * 9 + [False] * 3])
    zero_local = torch.zeros_like(local)

    def run(local_cond, padding_mask, **kwargs):
        with torch.no_grad():
            return dit(
                x,
                t,
                cross_attn_cond=context,
                cross_attn_mask=None,
                global_cond=global_cond,
                local_add_cond=local_cond,
                padding_mask=padding_mask,
                **kwargs,
            )

    tensors = {
        "x": x,
        "t": t,
        "local_add_cond": local,
        "padding_mask": padding,
        "v.local_zero": run(zero_local, None),
        "v.local": run(local, None),
        "v.local.padding.cpu": run(local, padding),
        "v.cfg7_apg.padding.cpu": run(local, padding, cfg_scale=7.0, apg_scale=1.0),
    }
    with trained_padding_semantics(official):
        tensors["v.local.padding.trained"] = run(local, padding)
        tensors["v.cfg7_apg.padding.trained"] = run(local, padding, cfg_scale=7.0, apg_scale=1.0)
        # The semantics the patch stands for: valid frames do not see what is in padded frames.
        x_changed = x.clone()
        x_changed[1, :, 9:] += 3.0
        with torch.no_grad():
            changed = dit(
                x_changed,
                t,
                cross_attn_cond=context,
                global_cond=global_cond,
                local_add_cond=local,
                padding_mask=padding,
            )
        drift = (changed[1, :, :9] - tensors["v.local.padding.trained"][1, :, :9]).abs().max().item()
        assert drift < 1e-5, f"trained semantics: padded frames leak into valid ones ({drift})"
    with torch.no_grad():
        tensors["v.local_zero.no_conditioning"] = dit(
            x, t, cross_attn_cond=torch.zeros_like(context), global_cond=global_cond, local_add_cond=zero_local
        )
    leak_cpu = compare(tensors["v.local.padding.cpu"][1, :, :9], tensors["v.local.padding.trained"][1, :, :9])
    print(f"  {name} DiT: cpu vs trained semantics on valid frames: max diff {leak_cpu[0]:.4f}")
    assert_far(f"{name} DiT prompt vs zeros", tensors["v.local_zero"], tensors["v.local_zero.no_conditioning"])
    assert_far(f"{name} DiT with vs without inpaint input", tensors["v.local"], tensors["v.local_zero"])
    save(
        out / "reference" / f"dit_{name}.safetensors",
        tensors,
        {
            "call": "DiTWrapper.forward(x, t, cross_attn_cond, global_cond, local_add_cond, padding_mask, [cfg_scale, apg_scale])",
            "conditioning": f"conditioner_{name}.safetensors (fp32 text rows): cross_attn_cond rebuilt as described there",
            "local_add_cond": "concat(mask (B,1,T), masked latents (B,C,T)); item 1 keeps frames 0-5",
            "padding_mask": "item 1: frames 9-11 padded (memory tokens always valid)",
            "semantics": {"cpu": "official CPU code as is", "trained": "flash-attention varlen semantics (patched)"},
            "cpu_vs_trained_max_diff_valid_frames": leak_cpu[0],
            "v.local_zero.no_conditioning": "cross_attn_cond all zeros (the unconditional input)",
        },
        torch,
    )


def same_references(out: Path, name: str, handle, torch, audio) -> None:
    autoencoder = handle.model.pretransform.model
    generator = torch.Generator().manual_seed(200)
    tensors = {}
    with torch.no_grad():
        short = audio[:, :, : 2 * 4096]
        torch.manual_seed(21)
        tensors["encode.latents"] = autoencoder.encode_audio(short)
        long = audio[:, :, : 6 * 4096]
        torch.manual_seed(22)
        tensors["encode_chunked.latents"] = autoencoder.encode_audio(long, chunked=True, chunk_size=4, overlap=2)
        latents = fp16_exact(torch, torch.randn(1, LATENT_DIM, 6, generator=generator))
        torch.manual_seed(23)
        tensors["decode.latents"] = latents[:, :, :2].to(torch.float16)
        tensors["decode.audio"] = autoencoder.decode_audio(latents[:, :, :2])
        torch.manual_seed(24)
        tensors["decode_chunked.latents"] = latents.to(torch.float16)
        tensors["decode_chunked.audio"] = autoencoder.decode_audio(latents, chunked=True, chunk_size=4, overlap=2)
        # The decoder must depend on its latents, not only on its learned tokens.
        torch.manual_seed(23)
        other = autoencoder.decode_audio(latents[:, :, 2:4])
        assert_far(f"SAME-{name[-1].upper()} decode of z vs other z", tensors["decode.audio"], other)
        torch.manual_seed(23)
        again = autoencoder.decode_audio(latents[:, :, :2])
        assert torch.equal(again, tensors["decode.audio"]), "decode is reproducible from its seed"
        torch.manual_seed(21)
        other = autoencoder.encode_audio(audio[:, :, 2 * 4096 : 4 * 4096])
        assert_far(f"SAME-{name[-1].upper()} encode of x vs other x", tensors["encode.latents"], other)
    save(
        out / "reference" / f"{name}.safetensors",
        tensors,
        {
            "calls": {
                "encode": "AudioAutoencoder.encode_audio(audio) after torch.manual_seed(21)",
                "encode_chunked": "encode_audio(audio, chunked=True, chunk_size=4, overlap=2) after manual_seed(22)",
                "decode": "decode_audio(latents) after manual_seed(23)",
                "decode_chunked": "decode_audio(latents, chunked=True, chunk_size=4, overlap=2) after manual_seed(24)",
            },
            "inputs": "encode: input_audio.safetensors audio[None, :, :8192]; encode_chunked: the whole of it "
            "(6 frames); latents stored as float16, cast to float32 exactly",
            "random_draws": "encoder: SAME-L token noise; decoder: bottleneck noise then token noise, per window",
        },
        torch,
    )


def schedule_references(out: Path, small, torch, official) -> None:
    shift = small.model.sampling_dist_shift
    build = official.sampling.build_schedule
    tensors = {
        "pingpong8": build(steps=8, sigma_max=1.0, dist_shift=shift, effective_seq_len=torch.tensor([3.0])),
        "pingpong8_long": build(steps=8, sigma_max=1.0, dist_shift=shift, effective_seq_len=torch.tensor([4000.0])),
        "euler4": build(steps=4, sigma_max=1.0, dist_shift=shift, effective_seq_len=torch.tensor([3.0])),
        "euler50": build(steps=50, sigma_max=1.0, dist_shift=shift, effective_seq_len=torch.tensor([3.0])),
        "a2a8_sigma0.9": build(steps=8, sigma_max=0.9, dist_shift=shift, effective_seq_len=torch.tensor([5.0])),
    }
    save(
        out / "reference" / "schedule.safetensors",
        tensors,
        {
            "call": "sampling.build_schedule(steps, sigma_max, dist_shift=model.sampling_dist_shift, effective_seq_len)",
            "dist_shift": "LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0): independent of length",
            "shape": "(1, steps + 1) for a batch of one",
        },
        torch,
    )


def generate_reference(
    out: Path, name: str, handle, torch, meta: dict, kwargs: dict, stored: dict, extra=None, official=None
):
    """One official generate call (and its latents), saved with the call that made it.

    With ``official`` (the request has padded frames: the length rounding left latents past the
    valid ones) the call is also run under ``trained_padding_semantics``, stored as
    ``audio.trained`` / ``latents.trained`` beside the CPU code's ``audio`` / ``latents``."""
    with torch.no_grad():
        audio = handle.generate(**kwargs)
        latents = handle.generate(**kwargs, return_latents=True)
    tensors = {"audio": audio, "latents": latents, **stored}
    if official is not None:
        with torch.no_grad(), trained_padding_semantics(official):
            tensors["audio.trained"] = handle.generate(**kwargs)
            tensors["latents.trained"] = handle.generate(**kwargs, return_latents=True)
        diff = compare(audio, tensors["audio.trained"])
        meta["checks"][f"{name} cpu vs trained"] = {"max_abs_diff": diff[0], "correlation": diff[1]}
        print(f"  {name}: cpu vs trained semantics: max diff {diff[0]:.4f}, corr {diff[1]:.6f}")
    if extra:
        tensors.update(extra)
    shown = {k: v for k, v in kwargs.items() if k not in ("init_audio", "inpaint_audio")}
    for key in ("init_audio", "inpaint_audio"):
        if key in kwargs:
            shown[key] = "input_audio.safetensors: audio (44100 Hz), as (44100, tensor [2, N])"
    meta["generate"][name] = shown
    semantics = {"semantics": {"audio": "official CPU code", "audio.trained": "patched varlen"}} if official else {}
    save(out / "reference" / f"generate_{name}.safetensors", tensors, {"call": shown, **semantics}, torch)
    return audio


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of Stability-AI/stable-audio-3")
    parser.add_argument("--out", required=True, type=Path, help="fixture folder to (re)write")
    args = parser.parse_args()
    official_dir = args.official.resolve()
    if not (official_dir / "stable_audio_3" / "model.py").is_file():
        raise SystemExit(f"{official_dir} is not a checkout of the official code (no stable_audio_3/model.py)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    stubbed = stub_torchaudio()
    sys.path.insert(0, str(official_dir))

    import safetensors
    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated")
    with contextlib.redirect_stdout(io.StringIO()):
        import stable_audio_3.inference.sampling as sampling
        import stable_audio_3.loading_utils as loading_utils
        import stable_audio_3.model as model_module
        import stable_audio_3.models.transformer as transformer_module
    official = types.SimpleNamespace(
        loading_utils=loading_utils, model=model_module, transformer=transformer_module, sampling=sampling
    )

    out = args.out
    if out.exists():  # everything this script writes goes; the hand-written README stays, and
        for entry in out.iterdir():  # lora/ (make_lora_fixtures.py's, made from small/: rerun it after this)
            if entry.name not in ("README.md", "lora"):
                entry.unlink() if entry.is_symlink() or not entry.is_dir() else shutil.rmtree(entry)
    (out / "reference").mkdir(parents=True)
    commit_file = official_dir / ".official-commit"
    commit = commit_file.read_text().strip() if commit_file.is_file() else "unknown"
    meta = {
        "official": {"repo": "Stability-AI/stable-audio-3", "commit": commit},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
        },
        "command": "python scripts/released/make_fixtures.py --official DIR --out tests/fixtures/released",
        "deviations": {
            "torchaudio": "stub (Resample raises; nothing resamples)" if stubbed else "real",
            "text_encoder_source": "repo_id replaced by the local folder while building the official objects",
            "weights_dtype": "model.safetensors of the DiT folders stored as bfloat16 (released: fp32)",
            "padding": "references with padded frames come as cpu (official CPU code) and trained (patched varlen)",
            "sliding_window": "SAME-L attention runs the official CPU path (torch.compile'd flex_attention; its "
            "chunked-halo SDPA fallback agrees to 5e-7)",
        },
        "tokenizer": {},
        "text_encoder": {},
        "generate": {},
        "checks": {},
    }

    # Checkpoints ------------------------------------------------------------------------------
    small_dir, medium_dir = out / "small", out / "medium"
    (small_dir / T5_FOLDER).mkdir(parents=True)
    build_tokenizer(small_dir / T5_FOLDER)
    build_text_encoder(small_dir / T5_FOLDER, torch)
    build_tokenizer_variant(small_dir / T5_FOLDER, out / "tokenizer-right")
    medium_dir.mkdir()
    link(medium_dir / T5_FOLDER, small_dir / T5_FOLDER)

    factory = sys.modules["stable_audio_3.factory"]
    for folder, medium, seed in ((small_dir, False, 10), (medium_dir, True, 20)):
        config = model_config(medium, "rf_denoiser")
        write_json(folder / "model_config.json", config)
        with contextlib.redirect_stdout(io.StringIO()):
            model = factory.create_diffusion_cond_from_config(local_config(config, folder.resolve()))
        init_weights(model, torch, seed)
        calibrate_decoder(model, torch)
        save_checkpoint(model, folder / "model.safetensors", torch)
        base = out / f"{folder.name}-base"
        base.mkdir()
        write_json(base / "model_config.json", model_config(medium, "rectified_flow"))
        link(base / "model.safetensors", folder / "model.safetensors")
        link(base / T5_FOLDER, small_dir / T5_FOLDER)
        del model

    small = load_official(small_dir, torch, official)
    medium = load_official(medium_dir, torch, official)
    small_base = load_official(out / "small-base", torch, official)
    medium_base = load_official(out / "medium-base", torch, official)

    # References -------------------------------------------------------------------------------
    print("text")
    text_references(out, small, torch, meta)
    print("conditioners, DiT")
    cond_small = conditioner_references(out, "small", small, torch, both=True)
    cond_medium = conditioner_references(out, "medium", medium, torch, both=False)
    dit_references(out, "small", small, cond_small, torch, official)
    dit_references(out, "medium", medium, cond_medium, torch, official)
    schedule_references(out, small, torch, official)

    generator = torch.Generator().manual_seed(300)
    seconds_in = 0.2
    t = torch.arange(6 * 4096) / SAMPLE_RATE  # 6 latent frames, about 0.56 s
    tone = 0.3 * torch.sin(2 * math.pi * 220 * t) * torch.exp(-3 * t) + 0.05 * torch.randn(len(t), generator=generator)
    audio = fp16_exact(torch, torch.stack([tone, tone.roll(37)]))[None]  # (1, 2, N)
    save(
        out / "reference" / "input_audio.safetensors",
        {"audio": audio[0].to(torch.float16)},
        {"sample_rate": SAMPLE_RATE},
        torch,
    )
    print("SAME")
    same_references(out, "same_s", small, torch, audio)
    same_references(out, "same_l", medium, torch, audio)

    print("generate")
    source = audio[0, :, : int(seconds_in * SAMPLE_RATE)]
    checks = meta["checks"]
    base_call = {"prompt": PROMPT_A, "duration": 0.1, "steps": 8, "seed": 11}
    prompt = small.model.conditioner.conditioners["prompt"]
    a = generate_reference(out, "small_pingpong", small, torch, meta, base_call, {})
    with torch.no_grad():
        checks["small_pingpong prompt"] = assert_far(
            "small: prompt A vs B", a, small.generate(**{**base_call, "prompt": PROMPT_B})
        )
        checks["small_pingpong seed"] = assert_far(
            "small: seed 11 vs 12", a, small.generate(**{**base_call, "seed": 12})
        )
        clipped = (a.abs() >= 1).float().mean().item()
        print(f"  small audio rms {a.pow(2).mean().sqrt().item():.3f}, clipped fraction {clipped:.4f}")
        assert clipped < 0.01, "fixture audio clips"
        with text_encoder_in_fp32(prompt):
            fp32_text = small.generate(**base_call)
    diff = compare(a, fp32_text)
    checks["small_pingpong text official dtype vs fp32"] = {"max_abs_diff": diff[0], "correlation": diff[1]}
    print(
        f"  small: text encoder official dtype vs fp32 in the final audio: max diff {diff[0]:.5f}, corr {diff[1]:.7f}"
    )
    save(
        out / "reference" / "generate_small_pingpong_text_fp32.safetensors",
        {"audio": fp32_text},
        {"call": base_call, "text_encoder": "fp32 (a float32 copy of the prompt conditioner's model)"},
        torch,
    )

    generate_reference(
        out,
        "small_base_euler_apg",
        small_base,
        torch,
        meta,
        {"prompt": PROMPT_A, "duration": 0.1, "steps": 4, "cfg_scale": 7.0, "seed": 12},
        {},
    )
    generate_reference(
        out,
        "small_base_negative",
        small_base,
        torch,
        meta,
        {"prompt": PROMPT_A, "negative_prompt": NEGATIVE, "duration": 0.1, "steps": 4, "cfg_scale": 7.0, "seed": 12},
        {},
    )
    inpaint_call = {
        "prompt": PROMPT_B,
        "duration": seconds_in,
        "steps": 8,
        "seed": 13,
        "inpaint_audio": (SAMPLE_RATE, source),
        "inpaint_mask_start_seconds": 0.05,
        "inpaint_mask_end_seconds": 0.15,
    }
    # 0.2 s rounds up to 68 latents of which 67 are valid: one padded frame, so both semantics.
    inpainted = generate_reference(out, "small_inpaint", small, torch, meta, inpaint_call, {}, official=official)
    with torch.no_grad():
        region = slice(int(0.05 * SAMPLE_RATE), int(0.15 * SAMPLE_RATE))
        other = small.generate(**{**inpaint_call, "prompt": PROMPT_A})
        checks["small_inpaint prompt (region)"] = assert_far(
            "small inpaint: prompt, inside the region", inpainted[..., region], other[..., region]
        )

    # A continuation as the official code expresses one: the source as inpaint audio (padded to the
    # request), the region from its end to the end of the request.
    kept = int(0.1 * SAMPLE_RATE)
    continue_call = {
        "prompt": PROMPT_A,
        "duration": seconds_in,
        "steps": 8,
        "seed": 16,
        "inpaint_audio": (SAMPLE_RATE, source[:, :kept]),
        "inpaint_mask_start_seconds": kept / SAMPLE_RATE,
        "inpaint_mask_end_seconds": seconds_in,
    }
    continued = generate_reference(out, "small_continue", small, torch, meta, continue_call, {}, official=official)
    with torch.no_grad():
        new_part = slice(kept, int(seconds_in * SAMPLE_RATE))
        other = small.generate(**{**continue_call, "prompt": PROMPT_B})
        checks["small_continue prompt (new part)"] = assert_far(
            "small continue: prompt, the new part", continued[..., new_part], other[..., new_part]
        )

    m = generate_reference(out, "medium_pingpong", medium, torch, meta, {**base_call, "seed": 14}, {})
    with torch.no_grad():
        checks["medium_pingpong prompt"] = assert_far(
            "medium: prompt A vs B", m, medium.generate(**{**base_call, "seed": 14, "prompt": PROMPT_B})
        )
        checks["medium_pingpong seed"] = assert_far(
            "medium: seed 14 vs 15", m, medium.generate(**{**base_call, "seed": 15})
        )
    a2a_call = {
        "prompt": PROMPT_B,
        "duration": seconds_in,
        "steps": 8,
        "seed": 15,
        "init_audio": (SAMPLE_RATE, source),
        "init_noise_level": 0.9,
    }
    t2 = generate_reference(out, "medium_a2a", medium, torch, meta, a2a_call, {}, official=official)
    with torch.no_grad():
        checks["medium_a2a prompt"] = assert_far(
            "medium a2a: prompt A vs B", t2, medium.generate(**{**a2a_call, "prompt": PROMPT_A})
        )
    generate_reference(
        out,
        "medium_base_euler_apg",
        medium_base,
        torch,
        meta,
        {"prompt": PROMPT_A, "duration": 0.1, "steps": 4, "cfg_scale": 7.0, "seed": 16},
        {},
    )

    # A batch whose items have different lengths: the shorter one has padded frames.
    batch_call = {"prompt": [PROMPT_A, PROMPT_B], "duration": [0.1, 1.0], "batch_size": 2, "steps": 8, "seed": 17}
    crop = int(0.1 * SAMPLE_RATE)
    with torch.no_grad():
        cpu = small.generate(**batch_call)[..., :crop]
        with trained_padding_semantics(official):
            trained = small.generate(**batch_call)[..., :crop]
    diff = compare(cpu[0], trained[0])
    checks["small_batch_padding cpu vs trained (item 0)"] = {"max_abs_diff": diff[0], "correlation": diff[1]}
    print(f"  padded batch, item 0: cpu vs trained semantics: max diff {diff[0]:.4f}, corr {diff[1]:.5f}")
    meta["generate"]["small_batch_padding"] = {
        **batch_call,
        "stored": f"audio[..., :{crop}] (the first 0.1 s of both items)",
    }
    save(
        out / "reference" / "generate_small_batch_padding.safetensors",
        {"audio.cpu": cpu, "audio.trained": trained},
        {"call": batch_call, "crop": crop, "semantics": {"cpu": "official CPU code", "trained": "patched varlen"}},
        torch,
    )

    write_json(out / "manifest.json", meta)
    write_defaults(official_dir, out / "official_defaults.json")  # the constructors' signatures, as data
    print("done")


if __name__ == "__main__":
    main()
