"""Hardware efficiency: FLOP/s of one DiT forward and one decoder pass against this machine's
measured matmul peak, fp32 and bf16, all measured in the same run: ``python -m bench.efficiency``.

FLOPs are counted from the shapes (a multiply-add = 2 FLOPs; element-wise work, norms,
softmax and RoPE are not counted, so the figures are a slight underestimate of the work done):

DiT forward at batch 1 over T latent frames, M memory tokens, N = M + T tokens, width w, SwiGLU
inner m, context S = 2 + text tokens, inpaint hidden h (the cross-attention keys/values are
cached per request and not counted)::

    proj_in 2*T*256*w  +  proj_out 2*T*w*256
    per block:  qkv 6*N*w^2  +  self-attention scores and values 4*N^2*w (differential: 6*N^2*w)
              + out 2*N*w^2  +  cross q and out 4*N*w^2  +  cross-attention 4*N*S*w
              + inpaint MLP 2*R*257*h + 2*R*h*w  +  SwiGLU 6*N*w*m

where R = T when some frames are kept (inpainting) and R = 1 for plain generation (nothing
kept: the DiT runs its inpaint MLPs on one zero row and adds the result to every frame).

SAME decoder over F frames, width w, SwiGLU inner m, ``stride`` = 4096 / patch output tokens
per frame (stride + 1 tokens per frame), windows of W frames: the work actually done, i.e.
per chunk of f frames plus its context (SAME decodes long inputs in chunks with
``receptive_frames`` of context per side), and per layer on the frames padded to whole
windows (shifted by W/2 in odd layers)::

    from_latent 2*f*256*w  +  patch_out 2*f*stride*w*2*2*bins  +  inverse DFT 2*f*stride*2*2*bins*4*patch
    (bins = 2*patch + 1: each output token predicts a 4-patch spectrum per channel)
    per layer on P padded frames (n = P*(stride+1) tokens, windows of s = W*(stride+1)):
        qkv 6*n*w^2 + out 2*n*w^2 + attention 4*n*s*w + SwiGLU 6*n*w*m

The peak is a plain square matmul (``--matmul-size``, 2048 by default) in fp32 and in bf16,
timed in this run. Three variants of each part: ``fp32``; ``bf16-autocast`` (bf16 autocast
over the float32 weights: the path before the torch backend kept bf16 weight copies); ``bf16``
(what the torch backend runs now: bf16 copies of the linear weights, and for the decoder the
backend's larger chunk, ``sa3core.backends.inference_chunk_frames``). Percent of peak is given twice: from wall time (right on a quiet machine)
and from process CPU time (FLOPs per CPU-second, both for the model and for the matmul; on
shared cores this is the meaningful one). bf16 outputs are compared with fp32 on the same
input (max |difference| / max |fp32| and relative RMS).

On a CPU without native bf16 (no AVX-512 bf16 or AMX: ``common.cpu_class()`` "other") bf16 is
emulated, tens of times slower than float32, and sa3 runs float32 there: the bench times the
fp32 variants only (each bf16 one would take many minutes and say nothing a user meets);
``--emulated-bf16`` times them anyway. The bf16 matmul peak is measured either way.

``--released [DIR]`` adds a released checkpoint's DiT forward and SAME decode (random weights of
the released small shapes without DIR) at the frames its generate makes for ``--seconds`` (+6 s),
through the torch backend at --fp32 and at sa3's default precision; FLOPs from
:func:`released_dit_flops` and :func:`released_same_decode_flops`.
"""

from __future__ import annotations

import functools
import math

import torch

from sa3core import timebase
from sa3core.backends import bf16_inference_copy, cpu_has_bf16, inference_chunk_frames
from sa3core.models.dit import DiT, DiTConfig, dit_preset
from sa3core.models.same import SAME, SAMEConfig, same_preset

from . import common


# ----------------------------------------------------------------------------- FLOP counts
def dit_flops(config: DiTConfig, frames: int, text_tokens: int = 12, kept: bool = False) -> int:
    """FLOPs of one DiT forward at batch 1 (formula in the module docstring). ``kept``: some
    frames are kept (inpainting); otherwise the inpaint MLPs run on one row, not T."""
    w, m, T = config.width, config.mlp_dim, frames
    N, S = config.memory_tokens + T, 2 + text_tokens
    h = config.inpaint_dim or w
    attention = (6 if config.differential else 4) * N * N * w
    block = 6 * N * w * w + attention + 2 * N * w * w + 4 * N * w * w + 4 * N * S * w + 6 * N * w * m
    if config.inpaint:
        rows = T if kept else 1
        block += 2 * rows * (config.latent_channels + 1) * h + 2 * rows * h * w
    return 2 * T * config.latent_channels * w * 2 + config.depth * block


def _decoder_run_flops(config: SAMEConfig, frames: int) -> int:
    """FLOPs of one decoder pass over ``frames`` frames without chunking."""
    w, m, W = config.width, config.mlp_hidden, config.window_frames
    stride = timebase.SAMPLES_PER_FRAME // config.patch
    per_frame = stride + 1
    bins = 2 * config.patch + 1
    tokens = frames * stride
    total = 2 * frames * timebase.LATENT_CHANNELS * w + 2 * tokens * w * 2 * 2 * bins  # from_latent, patch_out
    total += 2 * tokens * 2 * (2 * bins) * (4 * config.patch)  # inverse DFT of both channels
    for layer in range(config.decoder_layers):
        shift = 0 if layer % 2 == 0 else W // 2
        padded = math.ceil((shift + frames) / W) * W
        n, span = padded * per_frame, W * per_frame
        total += 8 * n * w * w + 4 * n * span * w + 6 * n * w * m
    return total


def same_decode_flops(config: SAMEConfig, frames: int, chunk_frames: int | None = None) -> int:
    """FLOPs of ``SAME.decode`` over ``frames`` latent frames, chunks and their context included
    (``chunk_frames`` None: the config's chunk)."""
    chunk = config.chunk_frames if chunk_frames is None else chunk_frames
    if not chunk or frames <= chunk:
        return _decoder_run_flops(config, frames)
    # SAME.receptive_frames: the larger reach of the two halves, + 1 frame for the spectral
    # windows, rounded up to whole attention windows
    reach = max(config.decoder_layers, config.encoder_layers) * config.window_frames + 1
    context = -(-reach // config.window_frames) * config.window_frames
    total = 0
    for start in range(0, frames, chunk):
        end = min(frames, start + chunk)
        total += _decoder_run_flops(config, min(frames, end + context) - max(0, start - context))
    return total


def released_dit_flops(config, frames: int, context_tokens: int, kept: bool = False) -> int:
    """FLOPs of one released DiT forward (:mod:`sa3core.released.dit`) at batch 1 over ``frames``
    latent frames, counted like :func:`dit_flops`: per block with N = M + T tokens, width E,
    SwiGLU inner m, s = 2 splits with differential attention (else 1), S context tokens
    (cached keys/values not counted)::

        qkv 2*N*E*(1+2s)*E + self-attention s*4*N^2*E + out 2*N*E^2 + cross q 2*N*E*s*E
        + cross-attention s*4*N*S*E + cross out 2*N*E^2 + local MLP 2*R*(257*E + E^2) + SwiGLU 6*N*E*m

    plus project_in/out 2*T*C*E each and the two 1x1 convs 2*T*C^2 each (C = io_channels);
    R = T when frames are kept (edits), 1 for plain generation."""
    E, m, T, C = config.embed_dim, config.ff_inner, frames, config.io_channels
    N, S = config.num_memory_tokens + T, context_tokens
    s = 2 if config.attn_kwargs.differential else 1
    R = T if kept else 1
    local = 2 * R * ((config.local_add_cond_dim or 0) * E + E * E) if config.local_add_cond_dim else 0
    block = (
        2 * N * E * (1 + 2 * s) * E + s * 4 * N * N * E + 2 * N * E * E
        + 2 * N * E * s * E + s * 4 * N * S * E + 2 * N * E * E + local + 6 * N * E * m
    )  # fmt: skip
    return config.depth * block + 4 * T * C * E + 4 * T * C * C


def released_same_decode_flops(config, frames: int) -> int:
    """FLOPs of a released SAME decode of ``frames`` latents the way :meth:`ReleasedAutoencoder.decode`
    runs it (windows of 128 overlapping by 32 once there are 128 frames; of each window the frames
    the join keeps, widened by the decoder's span context, or the whole window for SAME-L).

    Per window of F frames (padded to the attention alignment), stride k new tokens per latent,
    n = F*(k+1) tokens, width D, GLU inner m, differential attention in units of u tokens (SAME-S;
    SAME-L: a band of w = left + right + 1 tokens)::

        latent in 2*F*256*D + per block: qkv 10*n*D^2 + out 2*n*D^2 + attention 8*n*u*D + GLU 6*n*D*m
        + mapping 2*(k*F)*D*out*kernel

    (the second half of SAME-S's blocks sees one more unit: counted as n + u tokens)."""
    from sa3core.released.same import (
        OVERLAP_LATENTS,
        WINDOW_LATENTS,
        kept_frames,
        span_context,
        window_span,
        window_starts,
    )

    cfg = config.decoder.config
    D, k = cfg.width, cfg.strides[0]
    m = int(D * cfg.ff_mult)
    depth = cfg.transformer_depths[0]
    if cfg.sliding_window is not None:
        unit, align = sum(cfg.sliding_window) * (k + 1) + 1, 1
    else:
        unit, align = cfg.chunk_size + cfg.chunk_size // k, cfg.chunk_size // k
    kernel = 3 if cfg.conv_mapping else 1
    windows = [frames]
    if frames >= WINDOW_LATENTS:
        starts = window_starts(frames, WINDOW_LATENTS, OVERLAP_LATENTS)
        context = span_context(cfg)
        kept = kept_frames(starts, WINDOW_LATENTS, OVERLAP_LATENTS)
        windows = [stop - start for start, stop in (window_span(WINDOW_LATENTS, keep, align, context) for keep in kept)]
    total = 0
    for F in windows:
        F = -(-F // align) * align
        n = F * (k + 1)
        shifted = depth // 2 if (cfg.sliding_window is None and cfg.chunk_midpoint_shift) else 0
        tokens = [n] * (depth - shifted) + [n + unit] * shifted
        per_block = sum(12 * t * D * D + 8 * t * unit * D + 6 * t * D * m for t in tokens)
        total += 2 * F * config.latent_dim * D + per_block + 2 * (k * F) * D * cfg.out_channels * kernel
    return total


def released_parts(model, seconds: float, repeats: int, bf16: bool = True) -> list[dict]:
    """One DiT forward and one SAME decode of a released checkpoint at the frames its generate
    makes for ``seconds`` (+6 s headroom), at --fp32 and at sa3's default precision, through the
    torch backend as the pipeline calls it (``bf16`` False: --fp32 only)."""
    from sa3core.families.released import ReleasedFamily, padded_frames, valid_frames
    from sa3core.released.backend import load

    rows, reference = [], {}
    for precision, on in (("fp32", False), ("bf16", True))[: 2 if bf16 else 1]:
        backend = load(model, bf16=on)
        settings = ReleasedFamily.settings(backend.folder.path, backend.folder.config)
        samples = timebase.seconds_to_samples(seconds)
        frames = padded_frames(samples, settings)
        mask = (torch.arange(frames) < valid_frames(samples, frames))[None]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, backend.latent_channels, frames, generator=gen)
        context, global_cond = backend.context(["a warm analog synth pad"], torch.tensor([seconds]))
        cond = backend.condition(context, global_cond)
        t = torch.tensor([0.7])
        step = functools.partial(backend.velocity, x, t, cond, None, mask)
        decode = functools.partial(backend.decode_latents, x, torch.Generator().manual_seed(1))
        config = backend.dit.config
        for part, fn, flops in (
            ("released-dit", step, released_dit_flops(config, frames, context.shape[1])),
            ("released-same-decoder", decode, released_same_decode_flops(backend.autoencoder.config, frames)),
        ):
            output = fn()  # also the warm-up
            timing = common.measure(fn, repeats=repeats, warmup=0)
            row = {"part": part, "precision": precision, "seconds": seconds, "frames": frames, **_rates(flops, timing)}
            if part in reference:
                row.update(_compare(reference[part], output))
            else:
                reference[part] = output
            rows.append(row)
        del backend, step, decode
    return rows


# ----------------------------------------------------------------------------- measurements
def matmul_peak(size: int, dtype: torch.dtype, repeats: int, gflop_per_call: float = 20.0) -> dict:
    """GFLOP/s of a square ``size`` matmul in ``dtype`` (wall and per CPU-second); each timed call
    repeats the matmul to about ``gflop_per_call`` GFLOP so that one call is not a few ms."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    flops = 2 * size**3
    runs = max(1, int(gflop_per_call * 1e9 // flops))
    timing = common.measure(lambda: [torch.mm(a, b) for _ in range(runs)], repeats=max(repeats, 3), warmup=1)
    return _rates(flops * runs, timing)


def _rates(flops: int, timing: common.Timing) -> dict:
    return {
        "gflop": flops / 1e9,
        **timing.as_dict(),
        "gflops_wall": flops / 1e9 / timing.wall_s,
        "gflops_cpu": flops / 1e9 / timing.cpu_s,
    }


def _compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
    diff = (other.float() - reference.float()).abs()
    return {
        "max_abs_over_max_ref": float(diff.max() / reference.abs().max()),
        "relative_rms": float(diff.pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()),
    }


def _compare_spectra(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Relative RMS error of the STFT magnitudes (2048 window, hop 512) of decoded audio: the
    head's phases follow its magnitudes (peak_frequency), so bf16 rounding moves waveform
    phases more than it moves what is heard; this measures the sound, relative_rms the samples."""
    window = torch.hann_window(2048)

    def magnitude(audio: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            audio.float().reshape(-1, audio.shape[-1]), 2048, 512, window=window, return_complex=True
        ).abs()

    ref, out = magnitude(reference), magnitude(other)
    return {"relative_rms_spectrum": float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())}


def dit_forward(preset: str, seconds: float, repeats: int, bf16: bool = True) -> list[dict]:
    """Time one DiT forward at batch 1: fp32; bf16 autocast over the float32 weights (the old
    path); bf16 with the torch backend's bf16 weight copy (``bf16`` False: fp32 only). The
    condition is made once, outside."""
    config = dit_preset(preset)
    torch.manual_seed(0)
    model = DiT(config).eval()
    variants = [("fp32", model, False)]
    if bf16:
        variants += [("bf16-autocast", model, True), ("bf16", bf16_inference_copy(model), True)]
    frames = timebase.seconds_to_frames(seconds)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, timebase.LATENT_CHANNELS, frames, generator=gen)
    text = torch.randn(1, 12, config.text_dim, generator=gen)
    t = torch.tensor([0.7])
    rows, reference = [], None
    for precision, run, enabled in variants:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            cond = run.encode_condition(text, torch.ones(1, 12, dtype=torch.bool), torch.tensor([seconds]))
            output = run(x, t, cond)  # also the warm-up
            timing = common.measure(lambda run=run, cond=cond: run(x, t, cond), repeats=repeats, warmup=0)
        row = {
            "part": f"dit-{preset}",
            "precision": precision,
            "seconds": seconds,
            "tokens": config.memory_tokens + frames,
            **_rates(dit_flops(config, frames), timing),
        }
        reference = output if reference is None else reference
        if precision != "fp32":
            row.update(_compare(reference, output))
        rows.append(row)
    return rows


def decoder_pass(preset: str, seconds: float, repeats: int, bf16: bool = True) -> list[dict]:
    """Time ``SAME.decode`` of ``seconds`` of latents: fp32 and bf16 autocast with the config's
    chunk (the old path), and the torch backend's path (bf16 weight copy, its larger chunk);
    ``bf16`` False: fp32 only."""
    config = same_preset(preset)
    torch.manual_seed(0)
    model = SAME(config).eval()
    frames = timebase.seconds_to_frames(seconds)
    latents = torch.randn(1, timebase.LATENT_CHANNELS, frames, generator=torch.Generator().manual_seed(0))
    variants = [("fp32", model, False, config.chunk_frames)]
    if bf16:
        variants += [
            ("bf16-autocast", model, True, config.chunk_frames),
            ("bf16", bf16_inference_copy(model), True, inference_chunk_frames(config)),
        ]
    rows, reference = [], None
    for precision, run, bf16, chunk in variants:
        output = run.decode(latents, chunk_frames=chunk, bf16=bf16)  # also the warm-up
        timing = common.measure(
            lambda run=run, bf16=bf16, chunk=chunk: run.decode(latents, chunk_frames=chunk, bf16=bf16),
            repeats=repeats,
            warmup=0,
        )
        row = {
            "part": f"same-{preset}-decoder",
            "precision": precision,
            "seconds": seconds,
            "chunk_frames": chunk,
            "tokens": frames * (timebase.SAMPLES_PER_FRAME // config.patch + 1),
            "gflop_one_pass": same_decode_flops(config, frames, 0) / 1e9,
            **_rates(same_decode_flops(config, frames, chunk), timing),
        }
        reference = output if reference is None else reference
        if precision != "fp32":
            row.update(_compare(reference, output))
            row.update(_compare_spectra(reference, output))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser("efficiency", __doc__)
    p.add_argument("--preset", default=None, help="DiT and SAME preset (default small; --quick: tiny)")
    p.add_argument("--seconds", type=float, default=None, help="audio length (default 30; --quick: 5)")
    p.add_argument("--matmul-size", type=int, default=None, help="square matmul side (default 2048; --quick: 512)")
    p.add_argument(
        "--released",
        nargs="?",
        const="shapes",
        metavar="DIR",
        help="also a released checkpoint's DiT forward and SAME decode (no DIR: random weights of the "
        "released small shapes, built in runs/shapes-small)",
    )
    p.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="time the bf16 variants on a CPU without native bf16 too (emulated: many minutes at 30 s)",
    )
    args = p.parse_args(argv)
    from sa3core.allocator import keep_freed_memory

    keep_freed_memory()  # as the sa3 command does: without it, a decode after other work faulted pages in single-file
    common.set_threads(args.threads)
    info = common.machine()
    preset = args.preset or ("tiny" if args.quick else "small")
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    size = args.matmul_size or (512 if args.quick else 2048)
    n = common.repeats(args)
    print(common.describe(info), flush=True)

    gflop = 1.0 if args.quick else 20.0
    peaks = {
        name: matmul_peak(size, dtype, n, gflop) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    print(
        f"matmul {size}x{size}: fp32 {peaks['fp32']['gflops_wall']:.0f} GFLOP/s wall "
        f"({peaks['fp32']['gflops_cpu']:.0f} per CPU-s), bf16 {peaks['bf16']['gflops_wall']:.0f} "
        f"({peaks['bf16']['gflops_cpu']:.0f} per CPU-s)",
        flush=True,
    )
    bf16 = cpu_has_bf16() or args.emulated_bf16
    if not bf16:
        print("bf16 is emulated on this CPU (no AVX-512 bf16 or AMX) and sa3 runs float32 here: fp32 variants only "
              "(--emulated-bf16 times the others)", flush=True)  # fmt: skip
    rows = dit_forward(preset, seconds, n, bf16) + decoder_pass(preset, seconds, n, bf16)
    if args.released:
        from pathlib import Path

        from .released_shapes import build

        model = (
            build("small", common.REPO / "runs" / "shapes-small") if args.released == "shapes" else Path(args.released)
        )
        rows += released_parts(model, seconds, n, bf16)
    for row in rows:
        peak = peaks["fp32" if row["precision"] == "fp32" else "bf16"]
        row["percent_of_peak_wall"] = 100 * row["gflops_wall"] / peak["gflops_wall"]
        row["percent_of_peak_cpu"] = 100 * row["gflops_cpu"] / peak["gflops_cpu"]
        row["percent_of_bf16_peak_cpu"] = 100 * row["gflops_cpu"] / peaks["bf16"]["gflops_cpu"]
    print(
        common.table(
            rows,
            [
                ("part", "part", ""),
                ("precision", "prec", ""),
                ("seconds", "audio s", "g"),
                ("gflop", "GFLOP", ".1f"),
                ("wall_s", "wall s", ".3f"),
                ("cpu_s", "cpu s", ".3f"),
                ("gflops_wall", "GFLOP/s", ".0f"),
                ("percent_of_peak_wall", "% peak", ".0f"),
                ("percent_of_peak_cpu", "% peak (cpu)", ".0f"),
                ("max_abs_over_max_ref", "max err", ".2e"),
                ("relative_rms_spectrum", "spectrum err", ".2e"),
            ],
        )
    )
    out = common.write_json(
        args.out,
        "efficiency",
        rows,
        info,
        settings={"preset": preset, "seconds": seconds, "matmul_size": size, "repeats": n, "bf16_variants": bf16},
        matmul_peak=peaks,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
