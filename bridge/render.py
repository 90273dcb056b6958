"""Running one checked request on the pipeline, at the client's sample rate and exact length.

The model works at 44.1 kHz stereo; clients send and want 44.1/48/88.2/96 kHz, mono or stereo.
Lengths are computed at 44.1 kHz for the model, the output is resampled, then fixed to the exact
sample count at the reply rate (docs/protocol.md section 4.2). When the reply rate equals the
input's, inpainting splices the client's own samples back outside the regions and continuation
returns the client's input unchanged, bit for bit.
"""

from __future__ import annotations

import numpy as np

from sa3core import timebase
from sa3core.audio import resample, to_model_audio
from sa3core.pipeline import Region, splice

from . import protocol as P


def to_rate(audio: np.ndarray, rate: int, samples: int) -> np.ndarray:
    """[takes, 2, n] at 44.1 kHz -> [takes, 2, samples] at ``rate``: resample, then exact length."""
    takes = audio.shape[0]
    flat = audio.reshape(takes * timebase.CHANNELS, -1)  # (takes * 2, n)
    flat = resample(flat, timebase.SAMPLE_RATE, rate)
    out = np.zeros((takes * timebase.CHANNELS, samples), dtype=np.float32)
    keep = min(samples, flat.shape[1])
    out[:, :keep] = flat[:, :keep]  # resampling may be a sample long or short; the length is a contract
    return out.reshape(takes, timebase.CHANNELS, samples)  # (takes, 2, samples)


def model_regions(regions: list[tuple[int, int]], rate: int, total: int) -> list[Region]:
    """Regions at the input's rate -> non-empty, non-overlapping regions at 44.1 kHz."""
    merged: list[list[int]] = []
    for start, end in regions:
        start44 = min(timebase.seconds_to_samples(start / rate), total - 1)
        end44 = min(max(timebase.seconds_to_samples(end / rate), start44 + 1), total)
        if merged and start44 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end44)  # rounding made two regions touch: one region
        else:
            merged.append([start44, end44])
    return [Region(start, end) for start, end in merged]


def render(pipeline, request: P.JobRequest, progress) -> np.ndarray:
    """Run one checked request: float32 [variations, 2, samples] at ``request.sample_rate``."""
    r = request
    common = dict(
        steps=r.steps,
        cfg=r.cfg,
        seed=r.seed,
        variations=r.variations,
        progress=progress,
        bpm=r.bpm,
        meter=r.meter,
        scale_lock_db=r.scale_lock_db,
    )
    if r.mode == "generate":
        audio = pipeline.generate(r.prompt, r.model_samples, tail_seconds=r.tail_seconds, **common)
        return to_rate(audio, r.sample_rate, r.reply_samples)
    source = to_model_audio(r.audio, r.audio_rate, what="request audio")  # (2, n) at 44.1 kHz
    host = np.repeat(r.audio, timebase.CHANNELS // r.audio.shape[0], axis=0)  # (2, n) at the input's rate
    same_rate = r.sample_rate == r.audio_rate
    given = (
        r.audio.shape[1] if same_rate else timebase.seconds_to_samples(r.audio.shape[1] / r.audio_rate, r.sample_rate)
    )
    if r.mode == "inpaint":
        regions = model_regions(r.regions, r.audio_rate, source.shape[1])
        out = to_rate(pipeline.inpaint(source, r.prompt, regions, **common), r.sample_rate, given)
        if same_rate:
            # Splice at the host's rate too, so every kept sample is the client's own, bit for bit.
            host_regions = [Region(start, end) for start, end in r.regions]
            out = np.stack([splice(host, take, host_regions) for take in out])
        return out
    out = to_rate(
        pipeline.continue_(source, r.prompt, r.model_samples, **common), r.sample_rate, given + r.reply_samples
    )
    if same_rate:
        out[:, :, :given] = host
    return out
