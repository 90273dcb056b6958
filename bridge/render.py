"""Running one checked request on the pipeline, at the client's sample rate and exact length.

The model works at 44.1 kHz stereo; clients send and want 44.1/48/88.2/96 kHz, mono or stereo.
The pipeline takes and returns audio at the reply rate (docs/protocol.md section 4.2): it
resamples only the audio it makes, and holds that under the -1 dBTP ceiling at the reply rate
(inpainted and continued audio matched to the audio around it first). When the reply rate
equals the input's, every kept sample is the client's own, bit for bit; otherwise the client's
audio is resampled to the reply rate first.
"""

from __future__ import annotations

import numpy as np

from sa3core import timebase
from sa3core.audio import resample_to_length, to_stereo
from sa3core.pipeline import Region

from . import protocol as P


def to_rate(audio: np.ndarray, rate: int, samples: int) -> np.ndarray:
    """[takes, 2, n] at 44.1 kHz -> [takes, 2, samples] at ``rate``: resample, then exact length."""
    return resample_to_length(audio, timebase.SAMPLE_RATE, rate, samples)


def rate_regions(regions: list[tuple[int, int]], from_rate: int, to_rate: int, total: int) -> list[Region]:
    """Regions at ``from_rate`` -> non-empty, non-overlapping regions at ``to_rate`` in ``total`` samples."""
    if from_rate == to_rate:
        return [Region(start, end) for start, end in regions]
    merged: list[list[int]] = []
    for start, end in regions:
        start_at = min(timebase.seconds_to_samples(start / from_rate, to_rate), total - 1)
        end_at = min(max(timebase.seconds_to_samples(end / from_rate, to_rate), start_at + 1), total)
        if merged and start_at <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end_at)  # rounding made two regions touch: one region
        else:
            merged.append([start_at, end_at])
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
        sample_rate=r.sample_rate,
        negative_prompt=r.negative_prompt,
    )
    if r.exact_length:  # a steering option: sent only when asked, so families without it run as before
        common["exact_length"] = True
    rate = r.sample_rate
    if r.mode == "generate":
        return pipeline.generate(r.prompt, r.reply_samples, tail_seconds=r.tail_seconds, **common)
    host = to_stereo(r.audio, what="request audio")  # (2, n) at the input's rate
    if rate != r.audio_rate:  # another rate asked back: the client's audio is resampled to it first
        given = timebase.seconds_to_samples(host.shape[1] / r.audio_rate, rate)
        host = resample_to_length(host, r.audio_rate, rate, given)
    if r.mode == "inpaint":
        regions = rate_regions(r.regions, r.audio_rate, rate, host.shape[1])
        return pipeline.inpaint(host, r.prompt, regions, **common)
    if r.mode == "transform":
        return pipeline.transform(host, r.prompt, r.init_noise_level, **common)
    return pipeline.continue_(host, r.prompt, r.reply_samples, **common)
