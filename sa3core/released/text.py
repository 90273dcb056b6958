"""The released checkpoints' text encoder: T5Gemma (b-b-ul2), encoder only, and its tokenizer.

A released DiT folder holds ``t5gemma-b-b-ul2/`` (the prompt conditioner's ``subfolder``) with
``config.json``, ``model.safetensors`` (bf16, encoder and decoder; only the encoder is used) and
the tokenizer files. :func:`load_text_encoder` reads that folder; ``encode(prompts)`` gives the
encoder's last hidden state ``float32 [B, max_length, hidden]`` and the mask ``bool [B,
max_length]`` (True = a real token). The prompt conditioner (:mod:`sa3core.released.conditioners`)
then puts its learned ``padding_embedding`` at the padded positions.

Tokenizer, as transformers 5.x's ``GemmaTokenizer`` (what the official code gets from
``AutoTokenizer``) does with the same files, checked against it by the fixtures:
- ``tokenizer.json`` runs as it is (``tokenizers`` reads it), its post-processor included; the
  ``add_bos_token``/``add_eos_token`` flags of ``tokenizer_config.json`` are ignored, as there.
- Truncation to ``max_length`` (a warning says so) keeps the post-processor's special tokens.
- Padding to ``max_length`` with the pad token on ``padding_side`` from ``tokenizer_config.json``,
  else from ``tokenizer.json``'s padding section, else the class default: **left** for Gemma
  tokenizers. Positions are indices 0..max_length-1 either way, padding included.

Encoder (transformers' ``T5GemmaEncoder``, written out here; 0 dependencies beyond torch): token
embeddings × sqrt(hidden); per layer pre-norm attention with RoPE (rotate-half over the whole head,
``rope_theta``), query scale ``query_pre_attn_scalar^-0.5``, logits soft-capped by
``attn_logit_softcapping``, padded keys masked out, a band ``|i - j| <= sliding_window`` on
``sliding_attention`` layers; post-attention norm; pre-norm GeGLU (tanh) with a post norm; a final
norm. Gemma RMSNorm: ``x / rms(x) * (1 + w)`` in float32. ``dtype=torch.float32`` (default) runs the
stored bf16 weights upcast; ``dtype=torch.bfloat16`` repeats the official run's casts (transformers
5.x runs this encoder in bf16 on CPU too), for bit-level parity with it. The embedding table stays
the memory-mapped bf16 tensor in both cases (rows are upcast after the lookup), so the 197 M-row
table of the real model is never copied.

Loading is strict: a missing, unexpected or misshaped ``model.encoder.*`` tensor, a missing file,
or a config value this encoder does not implement is a one-line :class:`Sa3Error` naming it. The
decoder half (``model.decoder.*``, ``lm_head.*``) is skipped on purpose: T5Gemma checkpoints ship
both and only the encoder conditions the DiT. ``config.json``'s generic keys (transformers
serialises dozens that do not change the encoder) are not checked; the ones that change the
computation are.
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import Sa3Error

ENCODER_PREFIXES = ("model.encoder.", "encoder.")
SKIPPED_PREFIXES = ("model.decoder.", "decoder.", "lm_head.")
LEFT_PADDING_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast")
LAYER_TYPES = ("sliding_attention", "full_attention")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class T5GemmaEncoderConfig:
    """The encoder half of a T5Gemma ``config.json`` (its ``encoder`` section)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    layer_types: tuple[str, ...]
    query_pre_attn_scalar: float
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    attn_logit_softcapping: float | None = None
    sliding_window: int | None = None

    @classmethod
    def from_json(cls, data: dict, where: str) -> T5GemmaEncoderConfig:
        """Read (and check) the ``encoder`` section of a T5Gemma ``config.json``."""
        if data.get("model_type") not in ("t5gemma", None):
            raise Sa3Error(f"{where}: model_type {data.get('model_type')!r} is not t5gemma")
        section = data.get("encoder")
        if not isinstance(section, dict):
            raise Sa3Error(f"{where} has no 'encoder' section; is it a T5Gemma config?")

        def need(key: str):
            if key not in section:
                raise Sa3Error(f"{where}: the encoder section lacks {key!r}")
            return section[key]

        def unsupported(key: str, value) -> Sa3Error:
            return Sa3Error(f"{where}: encoder {key} = {value!r} is not supported by sa3's T5Gemma encoder")

        activation = section.get("hidden_activation", "gelu_pytorch_tanh")
        if activation != "gelu_pytorch_tanh":
            raise unsupported("hidden_activation", activation)
        if section.get("attention_bias", False):
            raise unsupported("attention_bias", section["attention_bias"])
        rope = section.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        scaling = section.get("rope_scaling")
        if rope_type != "default" or scaling not in (None, {}):
            raise unsupported("rope_scaling", scaling or rope)
        theta = rope.get("rope_theta", section.get("rope_theta", 10_000.0))
        layers = int(need("num_hidden_layers"))
        # transformers' default: even layers slide, odd layers see everything.
        types = section.get("layer_types") or [LAYER_TYPES[i % 2] for i in range(layers)]
        if len(types) != layers or any(t not in LAYER_TYPES for t in types):
            raise unsupported("layer_types", types)
        heads, kv_heads = int(need("num_attention_heads")), int(need("num_key_value_heads"))
        if heads % kv_heads:
            raise unsupported("num_key_value_heads", kv_heads)
        head_dim = int(section.get("head_dim") or int(need("hidden_size")) // heads)
        softcap = section.get("attn_logit_softcapping")
        window = section.get("sliding_window")
        return cls(
            hidden_size=int(need("hidden_size")),
            intermediate_size=int(need("intermediate_size")),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=int(need("vocab_size")),
            layer_types=tuple(types),
            query_pre_attn_scalar=float(section.get("query_pre_attn_scalar", head_dim)),
            rms_norm_eps=float(section.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            attn_logit_softcapping=None if softcap is None else float(softcap),
            sliding_window=None if window is None else int(window),
        )


# ----------------------------------------------------------------------------- tokenizer
class T5GemmaTokenizer:
    """Prompts -> ``(ids int64 [B, max_length], mask bool [B, max_length])``; see the module docstring."""

    def __init__(self, folder: str | Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise Sa3Error(f"{str(folder)!r} has no tokenizer.json; download the whole text-encoder folder")
        try:
            self.backend = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises its own Exception subclass with a long message
            raise Sa3Error(f"{str(path)!r} is not a tokenizers file ({str(err).splitlines()[0]})") from None
        config = _read_json(folder / "tokenizer_config.json")
        special = _read_json(folder / "special_tokens_map.json")
        if max_length < 1:
            raise Sa3Error(f"text max_length must be at least 1, not {max_length}")
        self.max_length = max_length
        file_padding = self.backend.padding or {}  # tokenizer.json's padding section, if it has one
        default_side = "left" if config.get("tokenizer_class") in LEFT_PADDING_CLASSES else "right"
        side = config.get("padding_side") or file_padding.get("direction")
        self.padding_side = side or default_side
        if self.padding_side not in ("left", "right"):
            raise Sa3Error(f"{str(folder / 'tokenizer_config.json')!r}: padding_side {side!r} is not left or right")
        pad = _token_text(config.get("pad_token")) or _token_text(special.get("pad_token"))
        self.pad_id = None if pad is None else self.backend.token_to_id(pad)
        if self.pad_id is None:
            raise Sa3Error(f"{str(folder)!r}: the tokenizer names no pad token in its vocabulary ({pad!r})")
        direction = config.get("truncation_side", "right")
        self.backend.no_padding()
        self.backend.enable_truncation(max_length=max_length, direction=direction)

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
            raise Sa3Error("prompts must be a non-empty list of strings (wrap a single prompt in a list)")
        ids = torch.full((len(prompts), self.max_length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for row, encoding in enumerate(self.backend.encode_batch(list(prompts))):
            if encoding.overflowing:
                shown = prompts[row] if len(prompts[row]) <= 40 else prompts[row][:37] + "..."
                warnings.warn(
                    f"prompt {shown!r} is longer than {self.max_length} tokens; the rest is cut (shorten it)",
                    stacklevel=2,
                )
            n = len(encoding.ids)
            where = slice(self.max_length - n, None) if self.padding_side == "left" else slice(0, n)
            ids[row, where] = torch.tensor(encoding.ids, dtype=torch.int64)
            mask[row, where] = True
        return ids, mask


# ----------------------------------------------------------------------------- encoder
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma RMSNorm: normalise in float32, scale by (1 + w), back to the input dtype."""
    x32 = x.float()
    out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (out * (1.0 + weight.float())).type_as(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Layer(nn.Module):
    def __init__(self, config: T5GemmaEncoderConfig, sliding: bool) -> None:
        super().__init__()
        width, inner = config.hidden_size, config.intermediate_size
        q_width, kv_width = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
        self.sliding = sliding
        self.self_attn = nn.ModuleDict(
            {
                "q_proj": nn.Linear(width, q_width, bias=False),
                "k_proj": nn.Linear(width, kv_width, bias=False),
                "v_proj": nn.Linear(width, kv_width, bias=False),
                "o_proj": nn.Linear(q_width, width, bias=False),
            }
        )
        self.mlp = nn.ModuleDict(
            {
                "gate_proj": nn.Linear(width, inner, bias=False),
                "up_proj": nn.Linear(width, inner, bias=False),
                "down_proj": nn.Linear(inner, width, bias=False),
            }
        )
        for name in ("pre_self_attn", "post_self_attn", "pre_feedforward", "post_feedforward"):
            self.register_parameter(f"{name}_layernorm", nn.Parameter(torch.zeros(width)))


def _inv_freq(config: T5GemmaEncoderConfig) -> torch.Tensor:
    """RoPE frequencies [head_dim/2], on the CPU even while the model is built on the meta device
    (arithmetic on meta tensors imports torch._dynamo: 1.3 s of a cold start)."""
    exponents = torch.arange(0, config.head_dim, 2, device="cpu").float() / config.head_dim
    return 1.0 / config.rope_theta**exponents


class T5GemmaEncoder(nn.Module):
    """T5Gemma's encoder stack. State-dict keys as ``model.encoder.*`` without the prefix (norm
    weights are ``<name>_layernorm`` here, ``<name>_layernorm.weight`` in the file)."""

    def __init__(self, config: T5GemmaEncoderConfig) -> None:
        super().__init__()
        self.config = config
        # An explicit (uninitialised) table skips nn.Embedding's random init (the weights come
        # from the file; on the meta device that init would import torch._dynamo).
        table = torch.empty(config.vocab_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=table)
        self.layers = nn.ModuleList([_Layer(config, t == "sliding_attention") for t in config.layer_types])
        self.norm = nn.Parameter(torch.zeros(config.hidden_size))
        inv_freq = _inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].self_attn["q_proj"].weight.dtype

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids int64 [B, L], mask bool [B, L] (True = real) -> last hidden state [B, L, hidden]."""
        config, dtype = self.config, self.dtype
        batch, length = ids.shape
        x = self.embed_tokens.weight[ids].to(dtype)  # (B, L, W); rows upcast after the lookup
        x = x * torch.tensor(config.hidden_size**0.5, dtype=dtype)

        positions = torch.arange(length, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float()[None, :]  # (L, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (L, D)
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)

        low = torch.finfo(dtype).min  # as transformers: a large negative number, not -inf
        keys = mask[:, None, None, :]  # (B, 1, 1, L)
        full_bias = torch.zeros(batch, 1, length, length, dtype=dtype).masked_fill(~keys, low)
        sliding_bias = full_bias
        if config.sliding_window is not None and any(layer.sliding for layer in self.layers):
            index = torch.arange(length)
            band = (index[:, None] - index[None, :]).abs() <= config.sliding_window  # (L, L)
            sliding_bias = full_bias.masked_fill(~band, low)

        heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        scale, cap, eps = config.query_pre_attn_scalar**-0.5, config.attn_logit_softcapping, config.rms_norm_eps
        for layer in self.layers:
            attn = layer.self_attn
            h = _rms_norm(x, layer.pre_self_attn_layernorm, eps)
            q = attn["q_proj"](h).view(batch, length, heads, head_dim).transpose(1, 2)  # (B, H, L, D)
            k = attn["k_proj"](h).view(batch, length, kv_heads, head_dim).transpose(1, 2)
            v = attn["v_proj"](h).view(batch, length, kv_heads, head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if kv_heads != heads:
                k = k.repeat_interleave(heads // kv_heads, dim=1)
                v = v.repeat_interleave(heads // kv_heads, dim=1)
            logits = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, H, L, L)
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
            logits = logits + (sliding_bias if layer.sliding else full_bias)
            weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype)
            out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, length, heads * head_dim)
            x = x + _rms_norm(attn["o_proj"](out), layer.post_self_attn_layernorm, eps)

            mlp = layer.mlp
            h = _rms_norm(x, layer.pre_feedforward_layernorm, eps)
            h = mlp["down_proj"](F.gelu(mlp["gate_proj"](h), approximate="tanh") * mlp["up_proj"](h))
            x = x + _rms_norm(h, layer.post_feedforward_layernorm, eps)
        return _rms_norm(x, self.norm, eps)


def _file_key(key: str) -> str:
    """Module key -> the key in the file (without the encoder prefix)."""
    if key == "norm" or key.endswith("_layernorm"):
        return key + ".weight"
    return key


# ----------------------------------------------------------------------------- loading
@dataclass
class ReleasedTextEncoder:
    """Tokenizer + encoder of a released ``t5gemma-b-b-ul2/`` folder."""

    tokenizer: T5GemmaTokenizer
    encoder: T5GemmaEncoder

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (last hidden state float32 [B, max_length, hidden], mask bool [B, max_length])."""
        ids, mask = self.tokenizer(prompts)
        return self.encoder(ids, mask).float(), mask


class EncodedPrompts:
    """The encoder outputs of the last ``size`` distinct prompt batches, for a backend that serves
    many takes (a daemon, a render script): another take of the same prompt, a base model's empty
    negative prompt, skip T5Gemma (0.09 s on an AMX Xeon, 0.6 s in float32 and 4.3 s in bf16 on an
    AVX2-only CPU, per request).

    Exact: the key is the batch of prompts as given, so each entry is what that very call
    computed, and callers get copies (nothing they do reaches the cache). The text encoder is
    never adapted by LoRAs, so entries stay valid when adapters change.
    """

    def __init__(self, encode, size: int = 16) -> None:
        self._encode, self.size = encode, size
        self._entries: OrderedDict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (hidden [B, L, D], mask [B, L]) as ``encode(prompts)`` gives them."""
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            return self._encode(prompts)  # not a key: the encoder says what is wrong with it
        key = tuple(prompts)
        if key in self._entries:
            self._entries.move_to_end(key)
            hidden, mask = self._entries[key]
        else:
            hidden, mask = self._encode(list(prompts))
            self._entries[key] = (hidden, mask)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)  # the least recently used
        return hidden.clone(), mask.clone()


def load_text_encoder(folder: str | Path, max_length: int, dtype: torch.dtype = torch.float32) -> ReleasedTextEncoder:
    """Read a T5Gemma folder (config.json, model.safetensors, tokenizer files); see the module docstring.

    ``max_length`` comes from the prompt conditioner's config (256 in the released files).
    """
    folder = Path(folder)
    if dtype not in (torch.float32, torch.bfloat16):
        raise Sa3Error(f"text encoder dtype must be float32 or bfloat16, not {dtype}")
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise Sa3Error(f"{str(folder)!r} has no {path.name}; download the whole text-encoder folder")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Sa3Error(f"{str(config_path)!r} is not valid JSON ({err})") from None
    config = T5GemmaEncoderConfig.from_json(data, repr(str(config_path)))
    tokenizer = T5GemmaTokenizer(folder, max_length)
    with torch.device("meta"):
        encoder = T5GemmaEncoder(config)
    state = _read_encoder_weights(weights_path, encoder, dtype)
    encoder.load_state_dict(state, strict=True, assign=True)
    # The buffer was built on the meta device; make it real (it is not stored in the file).
    encoder.inv_freq = _inv_freq(config)
    return ReleasedTextEncoder(tokenizer, encoder.eval().requires_grad_(False))


def _read_encoder_weights(path: Path, encoder: T5GemmaEncoder, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    expected = {_file_key(k): (k, tuple(v.shape)) for k, v in encoder.state_dict().items()}
    where = repr(str(path))
    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Sa3Error(f"{where} is truncated or not a safetensors file ({reason}); download it again") from None
    with handle:
        names = list(handle.keys())
        prefix = next((p for p in ENCODER_PREFIXES if any(n.startswith(p) for n in names)), None)
        if prefix is None:
            raise Sa3Error(f"{where} holds no encoder weights ({' or '.join(ENCODER_PREFIXES)}*); is it T5Gemma?")
        state = {}
        for name in names:
            if name.startswith(SKIPPED_PREFIXES):
                continue  # the decoder half: shipped, never used
            if not name.startswith(prefix) or name[len(prefix) :] not in expected:
                raise Sa3Error(f"{where} has {name!r}, which sa3's T5Gemma encoder does not use for this config")
            key, shape = expected[name[len(prefix) :]]
            tensor = handle.get_tensor(name)  # a view of the memory map
            if tuple(tensor.shape) != shape:
                raise Sa3Error(f"{where}: {name!r} has shape {tuple(tensor.shape)}, config.json implies {shape}")
            if not tensor.is_floating_point():
                raise Sa3Error(f"{where}: {name!r} is {tensor.dtype}, not a float tensor")
            # The embedding table keeps its stored dtype (looked up, then upcast); the rest runs in dtype.
            state[key] = tensor if key == "embed_tokens.weight" else tensor.to(dtype)
    missing = [prefix + name for name, (key, _) in expected.items() if key not in state]
    if missing:
        raise Sa3Error(f"{where} lacks {missing[0]!r} ({len(missing)} missing); is the file complete?")
    return state


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Sa3Error(f"{str(path)!r} is not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def _token_text(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


__all__ = [
    "ReleasedTextEncoder",
    "T5GemmaEncoder",
    "T5GemmaEncoderConfig",
    "T5GemmaTokenizer",
    "load_text_encoder",
]
