"""Analysis-by-synthesis encoding: latents the decoder renders closer to the audio.

``search_latents(model, audio, steps)`` starts from the encoder's latents and moves them by
gradient descent (Adam) on the autoencoder's own reconstruction losses (multi-resolution STFT +
multi-resolution log-mel, weights 1 and 1 as in training) through the frozen decoder.

Why: the decoder can render much better audio than it gets from the encoder. On the first four
test clips of the corpus (10 s each) 30 steps took the codec's log-mel L1 from 0.318 to 0.254
and lowered the MR-STFT distance on every clip (runs/diag/latopt.py, docs/architecture.md
"Encoder search"), without touching a weight. It is a codec feature, for `sa3 encode --search`:

- The searched latents leave the encoder's distribution (they moved 40-90 % of their norm in
  that test), which is the distribution the DiT was trained on. Generated audio does not get
  better from this, and latents meant for training or for conditioning (`sa3 data encode`,
  inpainting and continuation context) must come from the plain encoder.
- It costs ``steps`` decoder passes forward and backward per chunk: on 2 cores (AMD EPYC) 2.3 s
  per step for 10 s of audio (69 s for 30 steps), 419 s for 30 s of audio at 30 steps
  (`sa3 bench codec_search`, docs/benchmarks.md).

Long audio is searched in chunks of :data:`CHUNK_FRAMES` latent frames, one after the other.
A chunk's latents change the output of the frames up to ``receptive_frames`` away, so its loss
covers those frames too, decoded with enough context on both sides to be exact; the later
chunks then see (and are scored against) the earlier chunks' searched latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import Sa3Error
from .timebase import CHANNELS, SAMPLES_PER_FRAME

CHUNK_FRAMES = 128  # ~11.9 s of audio per chunk: memory stays near 2 GB whatever the length
DEFAULT_LEARNING_RATE = 0.05  # in latent units (the encoder's latents have unit-ish scale)


def search_latents(
    model,
    audio: torch.Tensor,
    steps: int,
    lr: float = DEFAULT_LEARNING_RATE,
    latents: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_frames: int = CHUNK_FRAMES,
) -> torch.Tensor:
    """audio float32 [B, 2, S] -> latents float32 [B, 256, ceil(S/4096)] (module doc).

    ``latents``: where to start (default ``model.encode(audio)``); ``steps`` 0 returns them.
    ``progress(done, total)`` is called after every step. Deterministic for a given input and
    thread count. The model's weights are left as they were (and without gradients)."""
    from .losses.spectral import MultiResolutionMelLoss, MultiResolutionSTFTLoss
    from .models.same import pad_to_frames

    if audio.ndim != 3 or audio.shape[1] != CHANNELS or audio.shape[2] < 1:
        raise Sa3Error(f"search_latents takes audio [batch, {CHANNELS}, samples >= 1], got {tuple(audio.shape)}")
    if steps < 0:
        raise Sa3Error(f"search steps must be 0 or more, got {steps}")
    if not lr > 0:
        raise Sa3Error(f"search learning rate must be positive, got {lr}")
    window = model.config.window_frames
    if chunk_frames < window or chunk_frames % window:
        raise Sa3Error(f"chunk_frames {chunk_frames} must be a positive multiple of window_frames {window}")
    if torch.is_inference_mode_enabled():
        raise Sa3Error("search_latents needs gradients: call it outside torch.inference_mode()")
    audio = audio.float()
    start = model.encode(audio) if latents is None else latents.float()
    latents = start.clone()  # a normal tensor (encode returns an inference tensor)
    if steps == 0:
        return latents
    samples = audio.shape[-1]
    target_audio = pad_to_frames(audio)
    frames, reach = latents.shape[-1], model.receptive_frames  # reach: a multiple of window_frames
    chunks = [(a, min(frames, a + chunk_frames)) for a in range(0, frames, chunk_frames)]
    stft_loss, mel_loss = MultiResolutionSTFTLoss().to(audio.device), MultiResolutionMelLoss().to(audio.device)
    flags = [p.requires_grad for p in model.parameters()]
    total, done = steps * len(chunks), 0
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        with torch.enable_grad():
            for a, b in chunks:
                # frames [scored_lo, scored_hi) feel latents[a:b]; decoding [lo, hi) renders them exactly
                scored_lo, scored_hi = max(0, a - reach), min(frames, b + reach)
                lo, hi = max(0, scored_lo - reach), min(frames, scored_hi + reach)
                first, last = scored_lo * SAMPLES_PER_FRAME, min(samples, scored_hi * SAMPLES_PER_FRAME)
                target = target_audio[..., first:last]
                offset = (scored_lo - lo) * SAMPLES_PER_FRAME
                part = latents[..., a:b].clone().requires_grad_(True)
                optimiser = torch.optim.Adam([part], lr=lr)
                for _ in range(steps):
                    span = torch.cat([latents[..., lo:a], part, latents[..., b:hi]], dim=-1)
                    rendered = model._decode_frames(span)[..., offset : offset + last - first]
                    loss = stft_loss(rendered, target) + mel_loss(rendered, target)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    done += 1
                    if progress is not None:
                        progress(done, total)
                latents[..., a:b] = part.detach()
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
    if not torch.isfinite(latents).all():
        raise Sa3Error("the latent search diverged (non-finite latents); try fewer --search steps")
    return latents
