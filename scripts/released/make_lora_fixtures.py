"""Build the LoRA parity fixtures by running the official Stable Audio 3 LoRA code on the small fixture.

    /work/official-venv/bin/python scripts/released/make_lora_fixtures.py --official DIR \\
        --fixtures tests/fixtures/released

Run it after make_fixtures.py (it reads that script's ``small/`` checkpoint and references, and
imports its helpers). DIR is a checkout of the official implementation (Stability-AI/stable-audio-3,
MIT), imported from there, never copied. It rewrites ``<fixtures>/lora/`` but its README section
(tests/fixtures/released/README.md, "LoRA") is written by hand.

What it writes (each file's metadata says how it was made):
1. One LoRA file per adapter type (``<type>.safetensors``): the official ``add_lora`` on the small
   checkpoint's DiT and conditioner (some with include/exclude filters and ``[a-b]`` ranges), its
   parameters set at random (the low-rank update about half the base weight's norm, magnitudes
   the base norms times 1 +- 0.25), saved by the official ``save_lora_safetensors`` (float16).
2. ``sa3-written.safetensors``: random adapters saved by sa3's own writer (``sa3core.lora.save_lora``,
   imported from this checkout: it needs only torch and safetensors), which the official loader
   must load tensor for tensor.
3. ``reference/forward.safetensors``: per type, the official conditioner's ``seconds_total`` output
   and ``DiTWrapper.forward`` with that file loaded by the official loader at strength 0.8, on the
   inputs of ``reference/dit_small`` / ``conditioner_small``; and the same without LoRA.
4. ``reference/generate_*.safetensors``: the official ``generate`` (the ``small_pingpong`` call) with
   the stack dora-rows at 0.7 then lora-xs at 1.0, and with the sa3-written file at 1.5.
The script asserts that every adapter moves the audio far beyond the parity tolerance (a dropped
adapter, the other order, another strength), and that the official loader took every tensor.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import sys
import types
import warnings
from functools import partial
from pathlib import Path

import make_fixtures as mf  # this script's folder is on sys.path

REPO = Path(__file__).resolve().parents[2]
# adapter type -> (rank, alpha, include, exclude); filters and ranks vary so their rules are pinned too
TYPES = {
    "lora": (2, 4, None, ["to_local_embed", "layers.1.ff"]),
    "dora-rows": (2, 2, None, None),
    "dora-cols": (2, 1, ["transformer.layers.[0-1].cross_attn", "seconds_total", "postprocess_conv"], None),
    "bora": (2, 3, ["transformer", "conditioners"], ["project_"]),
    "lora-xs": (4, 4, None, None),
    "dora-rows-xs": (4, 8, None, None),
    "dora-cols-xs": (4, 2, None, ["to_cond_embed"]),
    "bora-xs": (3, 3, None, ["layers.[1-0].self_attn.to_out"]),
}
SA3_WRITTEN = ("dora-cols", 2, 5, None, ["to_timestep_embed"])  # type, rank, alpha, include, exclude
FORWARD_STRENGTH = 0.8
STACK = [("dora-rows", 0.7), ("lora-xs", 1.0)]
SA3_WRITTEN_STRENGTH = 1.5
RELATIVE_UPDATE = 0.5  # |alpha / rank * delta| = this * |W| (Frobenius) per layer
SEEDS = {kind: 40 + i for i, kind in enumerate(TYPES)} | {"sa3-written": 60}
GENERATE_CALL = {"prompt": mf.PROMPT_A, "duration": 0.1, "steps": 8, "seed": 11}  # small_pingpong's


def lora_modules(torch, official, kind: str, rank: int, alpha, include, exclude):
    """The official add_lora configuration for one adapter type (as its loader builds it)."""
    make = official.lora.LoRAParametrization
    return {
        torch.nn.Linear: {"weight": partial(make.from_linear, rank=rank, lora_alpha=alpha, adapter_type=kind)},
        torch.nn.Conv1d: {"weight": partial(make.from_conv1d, rank=rank, lora_alpha=alpha, adapter_type=kind)},
    }


def random_adapter(handle, torch, official, spec: tuple, seed: int) -> dict:
    """add_lora on a fresh official model, parameters drawn (module docstring); its LoRA state dict."""
    kind, rank, alpha, include, exclude = spec
    generator = torch.Generator().manual_seed(seed)
    config = lora_modules(torch, official, kind, rank, alpha, include, exclude)
    roots = (handle.model.model, handle.model.conditioner)
    with contextlib.redirect_stdout(io.StringIO()):
        for root in roots:
            official.lora.add_lora(root, config, include=include, exclude=exclude)
    with torch.no_grad():
        for root in roots:
            for name, p in official.lora.get_lora_layers(root):
                module = root.get_submodule(name)
                base = module.parametrizations.weight.original
                base = base.reshape(base.shape[0], -1)
                fan_out, fan_in = base.shape
                if kind.endswith("-xs"):
                    p.M_xs.copy_(torch.randn(rank, rank, generator=generator))
                    delta = p.U @ p.M_xs @ p.V.T
                    p.M_xs.mul_(RELATIVE_UPDATE * base.norm() / (p.scaling * delta.norm()))
                else:
                    p.lora_A.copy_(torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in))
                    p.lora_B.copy_(torch.randn(fan_out, rank, generator=generator))
                    p.lora_B.mul_(RELATIVE_UPDATE * base.norm() / (p.scaling * (p.lora_B @ p.lora_A).norm()))
                for magnitude in ("magnitude", "magnitude_r", "magnitude_c"):
                    if hasattr(p, magnitude):
                        value = getattr(p, magnitude)  # initialised to the base weight's norms
                        value.mul_(1 + 0.25 * (2 * torch.rand(value.shape, generator=generator) - 1))
    state = {}
    for root in roots:
        state.update(official.lora.get_lora_state_dict(root))
    return {k: v.detach().clone() for k, v in state.items()}


def load_with_official(folder: Path, paths: list[Path], strengths: list[float], torch, official):
    """A fresh official model with these LoRA files loaded by the official loader, checked: every
    tensor of every file is what the model now holds, and each file adapts as many layers as it holds."""
    from safetensors.torch import load_file

    handle = mf.load_official(folder, torch, official)
    with contextlib.redirect_stdout(io.StringIO()):
        handle.load_lora([str(p) for p in paths])
    for index, strength in enumerate(strengths):
        handle.set_lora_strength(strength, lora_index=index)
    held = {**handle.model.model.state_dict(), **handle.model.conditioner.state_dict()}
    layers = official.lora.get_lora_layers(handle.model.model) + official.lora.get_lora_layers(handle.model.conditioner)
    for index, path in enumerate(paths):
        stored = load_file(str(path))
        for key, value in stored.items():
            loaded = held.get(key.replace(".parametrizations.weight.0.", f".parametrizations.weight.{index}."))
            if loaded is None or not torch.equal(loaded, value.float().reshape(loaded.shape)):
                raise SystemExit(f"the official loader did not take {key} of {path.name}")
        names = {key.split(".parametrizations.")[0] for key in stored}
        count = sum(1 for _, p in layers if p.lora_index == index)
        if count != len(names):
            raise SystemExit(f"{path.name}: {len(names)} layers in the file, the official loader adapted {count}")
    return handle


def forward(handle, torch, inputs: dict) -> dict:
    """The conditioner's seconds token and the DiT's velocity on the dit_small inputs."""
    with torch.no_grad():
        seconds = handle.model.conditioner.conditioners["seconds_total"]([0.1, 37.5], "cpu")[0]  # (2, 1, 768)
        context = mf.cross_attention_input(
            torch, inputs["rows"], inputs["index"], inputs["mask"], inputs["padding"], seconds
        )
        v = handle.model.model(
            inputs["x"],
            inputs["t"],
            cross_attn_cond=context,
            cross_attn_mask=None,
            global_cond=seconds[:, 0],
            local_add_cond=inputs["local"],
        )
    return {"seconds_total.embedding": seconds, "v": v}


def check_far(checks: dict, name: str, a, b, factor: float = 1.0) -> None:
    """Record how far apart two outputs are; fail unless far beyond the parity tolerance."""
    max_diff, corr = mf.compare(a, b)
    print(f"  {name}: max diff {max_diff:.4f}, correlation {corr:.5f}")
    if not (max_diff > 0.05 * factor and corr < 1 - 0.01 * factor):
        raise SystemExit(f"{name}: too close (max {max_diff:.2e}, corr {corr:.6f}); the adapters do not show")
    checks[name] = {"max_abs_diff": round(max_diff, 5), "correlation": round(corr, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of Stability-AI/stable-audio-3")
    parser.add_argument("--fixtures", required=True, type=Path, help="the released fixture folder (make_fixtures.py's)")
    args = parser.parse_args()
    official_dir = args.official.resolve()
    if not (official_dir / "stable_audio_3" / "models" / "lora" / "loader.py").is_file():
        raise SystemExit(f"{official_dir} is not a checkout of the official code (no stable_audio_3/models/lora)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    stubbed = mf.stub_torchaudio()
    sys.path.insert(0, str(official_dir))
    sys.path.insert(1, str(REPO))  # sa3core.lora (torch and safetensors only) for the sa3-written file

    import safetensors
    import torch
    from safetensors.torch import load_file

    from sa3core.lora import LoraConfig, save_lora

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated")
    with contextlib.redirect_stdout(io.StringIO()):
        import stable_audio_3.inference.sampling as sampling
        import stable_audio_3.loading_utils as loading_utils
        import stable_audio_3.model as model_module
        import stable_audio_3.models.lora as lora_module
        import stable_audio_3.models.transformer as transformer_module
    official = types.SimpleNamespace(
        loading_utils=loading_utils,
        model=model_module,
        transformer=transformer_module,
        sampling=sampling,
        lora=lora_module,
    )

    small = args.fixtures / "small"
    out = args.fixtures / "lora"
    if out.exists():
        shutil.rmtree(out)
    (out / "reference").mkdir(parents=True)
    commit_file = official_dir / ".official-commit"
    meta = {
        "official": {
            "repo": "Stability-AI/stable-audio-3",
            "commit": commit_file.read_text().strip() if commit_file.is_file() else "unknown",
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
        },
        "command": "python scripts/released/make_lora_fixtures.py --official DIR --fixtures tests/fixtures/released",
        "base": "small/ (make_fixtures.py), float32 on CPU, 2 threads",
        "torchaudio": "stub (Resample raises; nothing resamples)" if stubbed else "real",
        "files": {},
        "checks": {},
    }
    checks = meta["checks"]

    print("LoRA files")
    for kind, (rank, alpha, include, exclude) in TYPES.items():
        state = random_adapter(
            mf.load_official(small, torch, official),
            torch,
            official,
            (kind, rank, alpha, include, exclude),
            SEEDS[kind],
        )
        config = {
            "rank": rank,
            "alpha": alpha,
            "adapter_type": kind,
            "dropout": 0.0,
            "include": include,
            "exclude": exclude,
        }
        official.lora.save_lora_safetensors(state, config, out / f"{kind}.safetensors")
        meta["files"][f"{kind}.safetensors"] = {
            "writer": "official save_lora_safetensors",
            **config,
            "seed": SEEDS[kind],
        }
    kind, rank, alpha, include, exclude = SA3_WRITTEN
    state = random_adapter(mf.load_official(small, torch, official), torch, official, SA3_WRITTEN, SEEDS["sa3-written"])
    layers: dict[str, dict] = {}
    for key, value in state.items():
        layer, param = key.split(".parametrizations.weight.0.")
        layers.setdefault(layer, {})[param] = value
    config = LoraConfig(rank, alpha, kind, include=include, exclude=None if exclude is None else tuple(exclude))
    save_lora(out / "sa3-written.safetensors", layers, config)
    meta["files"]["sa3-written.safetensors"] = {
        "writer": "sa3core.lora.save_lora",
        **config.to_json(),
        "seed": SEEDS["sa3-written"],
    }

    print("forward, per type")
    dit_ref = load_file(str(args.fixtures / "reference" / "dit_small.safetensors"))
    cond_ref = load_file(str(args.fixtures / "reference" / "conditioner_small.safetensors"))
    padding = load_file(str(small / "model.safetensors"))["conditioner.conditioners.prompt.padding_embedding"].float()
    inputs = {
        "x": dit_ref["x"],
        "t": dit_ref["t"],
        "local": dit_ref["local_add_cond"],
        "rows": cond_ref["prompt.rows.fp32"],
        "index": cond_ref["prompt.rows_index"],
        "mask": cond_ref["prompt.mask"].bool(),
        "padding": padding,
    }
    tensors = {f"base.{k}": v for k, v in forward(mf.load_official(small, torch, official), torch, inputs).items()}
    if not torch.equal(tensors["base.v"], dit_ref["v.local"]):
        raise SystemExit("the forward inputs do not rebuild dit_small's v.local")
    for kind in TYPES:
        handle = load_with_official(small, [out / f"{kind}.safetensors"], [FORWARD_STRENGTH], torch, official)
        result = forward(handle, torch, inputs)
        tensors.update({f"{kind}.{k}": v for k, v in result.items()})
        check_far(checks, f"forward {kind} vs none", result["v"], tensors["base.v"])
    mf.save(
        out / "reference" / "forward.safetensors",
        tensors,
        {
            "call": "seconds = conditioners['seconds_total']([0.1, 37.5]); DiTWrapper.forward(x, t, cross_attn_cond, "
            "global_cond=seconds[:, 0], local_add_cond) with <type>.safetensors loaded by the official loader",
            "strength": FORWARD_STRENGTH,
            "inputs": "x, t, local_add_cond of dit_small.safetensors; cross_attn_cond = conditioner_small's fp32 prompt rows "
            "on the padding embedding, then the seconds token computed here",
            "keys": "<type>.seconds_total.embedding (2, 1, 768), <type>.v (2, C, T); base.*: no LoRA",
        },
        torch,
    )

    print("generate")
    base_audio = load_file(str(args.fixtures / "reference" / "generate_small_pingpong.safetensors"))["audio"]

    def generate(paths, strengths):
        handle = load_with_official(small, [out / p for p in paths], strengths, torch, official)
        with torch.no_grad():
            return handle.generate(**GENERATE_CALL)

    names = [f"{kind}.safetensors" for kind, _ in STACK]
    strengths = [s for _, s in STACK]
    stacked = generate(names, strengths)
    check_far(checks, "stack vs no LoRA", stacked, base_audio)
    check_far(checks, "stack vs first file alone", stacked, generate(names[:1], strengths[:1]))
    check_far(checks, "stack vs second file alone", stacked, generate(names[1:], strengths[1:]))
    check_far(checks, "stack vs the other order", stacked, generate(names[::-1], strengths[::-1]))
    check_far(checks, "stack vs first at 1.0", stacked, generate(names, [1.0, strengths[1]]))
    mf.save(
        out / "reference" / "generate_stack.safetensors",
        {"audio": stacked},
        {"call": GENERATE_CALL, "loras": names, "strengths": strengths},
        torch,
    )
    written = generate(["sa3-written.safetensors"], [SA3_WRITTEN_STRENGTH])
    check_far(checks, "sa3-written vs no LoRA", written, base_audio)
    mf.save(
        out / "reference" / "generate_sa3_written.safetensors",
        {"audio": written},
        {"call": GENERATE_CALL, "loras": ["sa3-written.safetensors"], "strengths": [SA3_WRITTEN_STRENGTH]},
        torch,
    )
    meta["generate"] = {
        "call": GENERATE_CALL,
        "stack": dict(zip(names, strengths)),
        "sa3_written": {"sa3-written.safetensors": SA3_WRITTEN_STRENGTH},
    }
    meta["official_loader_takes_sa3_files"] = "sa3-written.safetensors: every tensor loaded, every layer adapted"
    mf.write_json(out / "manifest.json", meta)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"done: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
