"""Run the official LoRA training step on the small base fixture, its random draws given, for sa3's parity test.

    /work/official-venv/bin/python scripts/released/make_lora_training_fixture.py --official DIR \\
        --fixtures tests/fixtures/released --out tests/fixtures/lora-training

DIR is a checkout of the official implementation (Stability-AI/stable-audio-3, MIT), imported from
there, never copied. Reads ``<fixtures>/small-base/`` (make_fixtures.py's); writes ``--out``
(rewritten each time but for its README; outside released/, which make_fixtures.py clears):

- ``step_<type>.safetensors``, one per case below: the official ``DiffusionCondTrainingWrapper``
  built with the arguments of ``scripts/train_lora.py`` (dora-rows etc., ``mask_loss_weight`` 1,
  silence extension 4 s, ``trunc_logit_normal``, inpaint mask probabilities 0.1/0.8/0.1, OT on,
  pre-encoded latents) around the official model of ``small-base/`` at float32 on the CPU, its
  adapters set to random values, then one ``training_step`` on a batch of three items whose
  random draws are handed in: the timestep sampler's output, the noise, the silence-extended
  padding mask, the inpaint masks and the CFG dropout. Stored: the inputs, the draws, the
  adapters (file key names), the length-shifted timesteps the official code made, the loss and
  the gradient of every adapter tensor. The DiT runs under ``make_fixtures.trained_padding_semantics``
  (flash-attention varlen, how the released weights were trained; sa3 follows it).
- ``draws.safetensors``: the official timestep sampler on normal draws from a seeded generator
  (with those draws beside it) and the official length shift on a grid, to pin sa3's transforms.

Nothing of pytorch_lightning, wandb or the plotting code runs in a training step; they are
stubbed (the official venv does not hold them), as make_fixtures.py stubs torchaudio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import io
import json
import math
import os
import sys
import types
import warnings
from pathlib import Path

import make_fixtures as mf  # this script's folder is on sys.path

PROMPTS = ["dusty breakbeat, 90 BPM", "warm analog pad", "bright marimba pluck"]
SECONDS_TOTAL = [3, 2, 1]  # whole seconds, rounded up: 2.2 s, 1.4 s and 0.8 s of audio
VALID_FRAMES = [24, 16, 9]  # ceil(samples / 4096) of those
EXTENDED_FRAMES = [30, 26, 32]  # after the silence extension (the draw handed in)
FRAMES = 32  # the batch's padded length
SAMPLER_OUTPUT = [0.2, 0.55, 0.93]  # truncated_logistic_normal_rescaled's (before the flip)
DROPPED = [0, 1, 0]  # CFG dropout per item
CASES = {  # adapter type -> (rank, alpha, include, exclude, seed)
    "dora-rows": (2, 2, None, ["seconds_total"], 70),
    "lora": (3, 6, ["transformer", "conditioners", "to_cond_embed"], None, 71),
    "bora-xs": (2, 3, None, ["to_local_embed"], 72),
}


def stub_modules() -> None:
    """Stand-ins for what diffusion.py imports but a training step never uses."""

    def module(name: str, package: bool = False, **attrs) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
        made.__dict__.update(attrs)
        sys.modules[name] = made
        return made

    import torch

    class LightningModule(torch.nn.Module):
        device = property(lambda self: torch.device("cpu"))

    loggers = module(
        "pytorch_lightning.loggers", WandbLogger=type("WandbLogger", (), {}), CometLogger=type("CometLogger", (), {})
    )
    module("pytorch_lightning", package=True, LightningModule=LightningModule, Callback=object, loggers=loggers)
    module("wandb")
    module("stable_audio_3.interface.aeiou", audio_spectrogram_image=None, pca_point_cloud=None)


def randomise_adapters(torch, wrapper, lora, seed: int) -> dict:
    """Adapter values well away from their initial ones (so every gradient path shows); their state dict."""
    generator = torch.Generator().manual_seed(seed)
    roots = (wrapper.diffusion.model, wrapper.diffusion.conditioner)
    with torch.no_grad():
        for root in roots:
            for _, p in lora.get_lora_layers(root):
                for name, value in p.named_parameters():
                    if name.startswith("magnitude"):
                        value.mul_(1 + 0.2 * (2 * torch.rand(value.shape, generator=generator) - 1))
                    else:
                        value.copy_(0.3 * torch.randn(value.shape, generator=generator) / math.sqrt(value.shape[-1]))
    state = {}
    for root in roots:
        state.update(lora.get_lora_state_dict(root))
    return {k: v.detach().clone() for k, v in state.items()}


@contextlib.contextmanager
def handed_draws(torch, diffusion, draws: dict, seen: dict):
    """Every random draw of DiffusionCondTrainingWrapper.training_step replaced by the given values."""
    saved = {
        "sampler": diffusion.truncated_logistic_normal_rescaled,
        "augment": diffusion.create_augmented_padding_mask,
        "inpaint": diffusion.random_inpaint_mask,
        "randn_like": torch.randn_like,
        "bernoulli": torch.bernoulli,
    }

    def sampler(count):
        assert count == len(SAMPLER_OUTPUT)
        return draws["sampler"].clone()

    def augment(padding_masks, silence_extension_scale_seconds, sample_rate, downsampling_ratio):
        assert silence_extension_scale_seconds == 4.0 and downsampling_ratio == 4096
        assert torch.equal(padding_masks.bool(), draws["valid"])
        return draws["extended"].clone()

    def inpaint(sequence, padding_masks, mask_padding, mask_type_probabilities, **kwargs):
        assert mask_padding and list(mask_type_probabilities) == [0.1, 0.8, 0.1] and not kwargs
        assert torch.equal(padding_masks, draws["extended"])
        return sequence * draws["keep"], draws["keep"].clone()

    def randn_like(tensor, *args, **kwargs):
        seen["noise_calls"] = seen.get("noise_calls", 0) + 1
        assert tuple(tensor.shape) == tuple(draws["noise"].shape)
        return draws["noise"].clone()

    def bernoulli(probabilities, *args, **kwargs):
        assert torch.allclose(probabilities, torch.full_like(probabilities, 0.1))
        return draws["dropped"].to(probabilities.dtype).reshape(probabilities.shape)

    diffusion.truncated_logistic_normal_rescaled = sampler
    diffusion.create_augmented_padding_mask = augment
    diffusion.random_inpaint_mask = inpaint
    torch.randn_like, torch.bernoulli = randn_like, bernoulli
    try:
        yield
    finally:
        diffusion.truncated_logistic_normal_rescaled = saved["sampler"]
        diffusion.create_augmented_padding_mask = saved["augment"]
        diffusion.random_inpaint_mask = saved["inpaint"]
        torch.randn_like, torch.bernoulli = saved["randn_like"], saved["bernoulli"]


def make_draws(torch, channels: int) -> dict:
    generator = torch.Generator().manual_seed(7)
    frames = torch.arange(FRAMES)
    keep = torch.zeros(3, 1, FRAMES)  # item 0: full mask (generate everything)
    keep[1, 0, :26] = 1  # item 1: segments regenerated
    keep[1, 0, 3:7] = 0
    keep[1, 0, 15:19] = 0
    keep[2, 0, :5] = 1  # item 2: causal, a 5-frame prefix kept
    return {
        "latents": torch.randn(3, channels, FRAMES, generator=generator),
        "noise": torch.randn(3, channels, FRAMES, generator=generator),
        "sampler": torch.tensor(SAMPLER_OUTPUT),
        "valid": frames[None] < torch.tensor(VALID_FRAMES)[:, None],
        "extended": frames[None] < torch.tensor(EXTENDED_FRAMES)[:, None],
        "keep": keep,
        "dropped": torch.tensor(DROPPED, dtype=torch.float32),
    }


def official_step(torch, official, fixtures: Path, kind: str, draws: dict) -> dict:
    rank, alpha, include, exclude, seed = CASES[kind]
    handle = mf.load_official(fixtures / "small-base", torch, official)
    config = json.loads((fixtures / "small-base" / "model_config.json").read_text())
    lora_config = {
        "rank": rank,
        "alpha": alpha,
        "adapter_type": kind,
        "dropout": 0.0,
        "include": include,
        "exclude": exclude,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        wrapper = official.diffusion.DiffusionCondTrainingWrapper(  # scripts/train_lora.py's arguments
            handle.model,
            mask_loss_weight=1.0,
            mask_padding_attention=True,
            silence_extension_scale_seconds=4.0,
            use_ema=False,
            log_loss_info=False,
            optimizer_configs={"diffusion": {"optimizer": {"type": "AdamW", "config": {"lr": 1e-4}}}},
            pre_encoded=True,
            timestep_sampler="trunc_logit_normal",
            timestep_sampler_options={},
            inpainting_config={"mask_kwargs": {"mask_type_probabilities": [0.1, 0.8, 0.1]}},
            use_effective_length_for_schedule=True,
            sample_rate=config["sample_rate"],
            sample_size=config["sample_size"],
            lora_config=lora_config,
            lora_state_dict=None,
            svd_bases_path=None,
            log_every_n_steps=10**9,
            ot_coupling=True,
            base_precision=None,  # float32: the comparison is of the objective, not of bf16 rounding
        )
    wrapper.trainer = types.SimpleNamespace(optimizers=[types.SimpleNamespace(param_groups=[{"lr": 1e-4}])])
    wrapper._staggered_logger.log = lambda *args, **kwargs: None
    adapters = randomise_adapters(torch, wrapper, official.lora, seed)
    metadata = [
        {"prompt": p, "seconds_total": s, "padding_mask": [draws["valid"][i].float()]}
        for i, (p, s) in enumerate(zip(PROMPTS, SECONDS_TOTAL))
    ]
    shifted = {}
    shift = wrapper.diffusion.dist_shift.shift

    def recording_shift(t, lengths):
        shifted["t"] = shift(t, lengths)
        shifted["lengths"] = lengths
        return shifted["t"]

    wrapper.diffusion.dist_shift.shift = recording_shift
    seen: dict = {}
    wrapper.train()
    with mf.trained_padding_semantics(official), handed_draws(torch, official.diffusion, draws, seen):
        loss = wrapper.training_step((draws["latents"].clone(), metadata), 0)
        loss.backward()  # inside: the checkpointed blocks are recomputed here, under the same semantics
    assert seen["noise_calls"] == 1, seen
    params = {}
    for root in (wrapper.diffusion.model, wrapper.diffusion.conditioner):
        params.update({n: p for n, p in root.named_parameters() if official.lora.name_is_lora(n)})
    assert set(params) == set(adapters), "state dict and parameters disagree"
    grads = {k: p.grad.detach().clone() for k, p in params.items()}
    assert all(g.abs().sum() > 0 for g in grads.values()), "an adapter tensor got no gradient"
    print(f"  {kind}: loss {loss.item():.6f}, {len(grads)} adapter tensors, t {shifted['t'].tolist()}")
    return {
        "loss": loss.detach().reshape(1),
        "t_shifted": shifted["t"].detach(),
        "effective_frames": shifted["lengths"].detach(),
        **{f"lora.{k}": v for k, v in adapters.items()},
        **{f"grad.{k}": v for k, v in grads.items()},
        "meta": lora_config,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of Stability-AI/stable-audio-3")
    parser.add_argument("--fixtures", required=True, type=Path, help="the released fixture folder (make_fixtures.py's)")
    parser.add_argument("--out", required=True, type=Path, help="where to write (tests/fixtures/lora-training)")
    args = parser.parse_args()
    official_dir = args.official.resolve()
    if not (official_dir / "stable_audio_3" / "training" / "diffusion.py").is_file():
        raise SystemExit(f"{official_dir} is not a checkout of the official code (no stable_audio_3/training)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    mf.stub_torchaudio()
    sys.path.insert(0, str(official_dir))
    stub_modules()

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated")
    with contextlib.redirect_stdout(io.StringIO()):
        import stable_audio_3.inference.distribution_shift as distribution_shift
        import stable_audio_3.inference.sampling as sampling
        import stable_audio_3.loading_utils as loading_utils
        import stable_audio_3.model as model_module
        import stable_audio_3.models.lora as lora_module
        import stable_audio_3.models.transformer as transformer_module
        import stable_audio_3.training.diffusion as diffusion_module
    official = types.SimpleNamespace(
        loading_utils=loading_utils,
        model=model_module,
        transformer=transformer_module,
        sampling=sampling,
        lora=lora_module,
        diffusion=diffusion_module,
    )

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.glob("*.safetensors"):
        entry.unlink()
    channels = json.loads((args.fixtures / "small-base" / "model_config.json").read_text())["model"]["io_channels"]
    draws = make_draws(torch, channels)
    inputs = {k: v.float() if v.dtype == torch.bool else v for k, v in draws.items()}
    meta_common = {  # one metadata key: safetensors writes several in no fixed order
        "prompts": PROMPTS,
        "seconds_total": SECONDS_TOTAL,
        "made_by": "scripts/released/make_lora_training_fixture.py",
        "official": "Stability-AI/stable-audio-3 DiffusionCondTrainingWrapper.training_step, float32 CPU",
    }
    for kind in CASES:
        result = official_step(torch, official, args.fixtures, kind, draws)
        meta = {**meta_common, "lora_config": result.pop("meta")}
        tensors = {**{f"input.{k}": v for k, v in inputs.items()}, **result}
        path = out / f"step_{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"fixture": json.dumps(meta)})

    logits = torch.randn(4096, generator=torch.Generator().manual_seed(3))
    saved_randn = torch.randn
    torch.randn = lambda *shape, **kw: logits.clone() if shape == (4096,) else saved_randn(*shape, **kw)
    try:  # the sampler's own normal draws replaced by these, so sa3's transform can be checked on them
        sampled = sampling.truncated_logistic_normal_rescaled(4096)
    finally:
        torch.randn = saved_randn
    grid_t = torch.linspace(0, 1, 101)
    lengths = torch.tensor([1, 100, 256, 300, 1292, 4096, 9000])
    shifted = distribution_shift.DistributionShift(min_length=256, max_length=4096).shift(
        grid_t[None, :].expand(len(lengths), -1).reshape(-1), lengths.repeat_interleave(len(grid_t))
    )
    save_file(
        {
            "logits": logits,
            "sampler_output": sampled,
            "grid_t": grid_t,
            "lengths": lengths,
            "shifted": shifted.reshape(len(lengths), -1),
        },
        str(out / "draws.safetensors"),
        metadata={
            "fixture": json.dumps({"made_by": "scripts/released/make_lora_training_fixture.py", "shift": "full"})
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
