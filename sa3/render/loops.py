"""Exact-length loops and effect tails.

- :func:`make_seamless`: a loop rendered a little longer than its length; the overhang (the
  audio that naturally follows the loop's end) is crossfaded onto the loop's start, so the
  end runs into the start as it ran into the overhang. Length is exactly the loop length.
- :func:`apply_with_tail`: an effect chain with one of three tail policies:
  ``cut`` (one-shots: output as long as input), ``keep`` (silence is fed after the audio
  until the output decays below -60 dB or a maximum, and kept), ``fold`` (the tail is added
  back onto the start, so a loop stays exact and seamless through reverbs and delays).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sa3core.errors import Sa3Error
from sa3core.timebase import SAMPLE_RATE, seconds_to_samples

from .chain import process

TAILS = ("cut", "keep", "fold")
TAIL_FLOOR_DB = -60.0  # a tail has decayed when it stays this far below the output's peak
TAIL_FADE_SECONDS = 0.010  # a tail cut at its maximum length fades out over this, not clicks


def make_seamless(audio: np.ndarray, length: int) -> np.ndarray:
    """``audio`` [2, length + overhang] -> [2, length] whose end runs into its start.

    The overhang is crossfaded (equal power, since the start and the overhang are different
    material) onto the first ``overhang`` samples: sample 0 is almost the overhang's first
    sample, which followed sample ``length - 1`` in the render, so the join has no step.
    """
    overhang = audio.shape[1] - length
    if overhang <= 0 or overhang > length:
        raise Sa3Error(f"a seamless loop needs 1 to {length} samples of overhang, got {overhang}")
    position = (np.arange(overhang, dtype=np.float64) + 0.5) / overhang
    fade_in = np.sin(0.5 * np.pi * position).astype(np.float32)
    fade_out = np.cos(0.5 * np.pi * position).astype(np.float32)
    out = audio[:, :length].copy()
    out[:, :overhang] = fade_in * audio[:, :overhang] + fade_out * audio[:, length:]
    return out


def apply_with_tail(board: Any, audio: np.ndarray, tail: str, tail_max_seconds: float) -> np.ndarray:
    """Run ``audio`` [2, n] through the pedalboard ``board`` with a tail policy (see module doc).

    Returns [2, n] for ``cut`` and ``fold``, [2, n + tail] for ``keep`` (tail <= the maximum).
    """
    n = audio.shape[1]
    tail_max = seconds_to_samples(tail_max_seconds, SAMPLE_RATE)
    if tail == "cut" or len(board) == 0:
        return process(board, audio)
    if tail == "keep":
        out = process(board, np.pad(audio, ((0, 0), (0, tail_max))))
        return _trim_tail(out, n)
    if tail == "fold":
        # Steady state of the chain on the audio repeated forever: play it through enough times
        # that every earlier pass's tail (up to tail_max) has reached the last pass, and keep the
        # last pass. For linear effects this is exactly "add the tail back onto the start";
        # compressors and limiters also start from a warmed-up state, so the join is seamless.
        passes = 1 + -(-tail_max // n)
        out = process(board, np.tile(audio, (1, passes)))
        return np.ascontiguousarray(out[:, (passes - 1) * n :])
    raise Sa3Error(f"tail {tail!r} is not one of {', '.join(TAILS)}")


def _trim_tail(out: np.ndarray, n: int) -> np.ndarray:
    """Keep the first n samples and the tail up to its last sample above the floor."""
    level = np.abs(out).max(axis=0)
    peak = float(level.max(initial=0.0))
    if peak == 0.0:
        return out[:, :n]
    loud = np.nonzero(level[n:] > peak * 10.0 ** (TAIL_FLOOR_DB / 20.0))[0]
    end = n + (int(loud[-1]) + 1 if loud.size else 0)
    ringing = end == level.size  # still above the floor at the maximum length
    out = out[:, :end].copy()
    if ringing:
        fade = min(seconds_to_samples(TAIL_FADE_SECONDS), end - n)
        if fade > 0:
            out[:, -fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out
