"""Exact bar lengths and seamless loop joins, through the real post-processing of a take."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from sa3.render.loops import make_seamless
from sa3.render.runner import finish_take
from sa3.render.sheet import load_sheet
from sa3core import timebase

RATE = 44_100


def job_from(tmp_path, body: str):
    path = tmp_path / "sheet.yaml"
    path.write_text("jobs:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  "))
    return load_sheet(path).jobs[0]


def tone(samples: int, freq: float = 217.3, phase: float = 0.3) -> np.ndarray:
    """Stand-in for model audio: a tone that does not fit a whole number of cycles in the loop."""
    t = np.arange(samples) / RATE
    left = 0.5 * np.sin(2 * np.pi * freq * t + phase) + 0.2 * np.sin(2 * np.pi * 3.1 * freq * t)
    return np.stack([left, 0.8 * left]).astype(np.float32)


def join_step(audio: np.ndarray) -> float:
    """How far the last sample jumps to the first when the loop repeats."""
    return float(np.abs(audio[:, 0] - audio[:, -1]).max())


def largest_step(audio: np.ndarray) -> float:
    return float(np.abs(np.diff(audio, axis=1)).max())


@pytest.mark.parametrize(
    ("bars", "bpm", "meter"),
    [(4, 128, "4/4"), (2, 96, "3/4"), (2, 110, "6/8"), (3, 140, "7/8"), (1, 87.5, "5/4"), (8, 174, "4/4")],
)
def test_loop_with_fold_is_exactly_the_bar_length(tmp_path, bars, bpm, meter):
    job = job_from(
        tmp_path,
        f"""
        - prompt: loop
          bars: {bars}
          bpm: {bpm}
          meter: "{meter}"
          loop: true
          tail: fold
          loudness: -14
          chain: [{{type: Reverb, room_size: 0.6}}, {{type: Delay, delay_seconds: 0.3, feedback: 0.4}}]
        """,
    )
    expected = timebase.bars_to_samples(bars, bpm, meter)
    seconds_per_bar = 60 / bpm * timebase.Meter.parse(meter).quarters_per_bar
    assert abs(expected - round(bars * seconds_per_bar * RATE)) == 0
    audio, lufs, peak = finish_take(job, tone(expected + job.overhang), tmp_path)
    assert audio.shape == (2, expected)
    assert abs(lufs - -14) < 0.5 and peak <= -1.0


def test_seamless_loop_join_has_no_step(tmp_path):
    job = job_from(
        tmp_path,
        """
        - prompt: loop
          bars: 1
          bpm: 120
          meter: 7/8
          loop: true
          chain: [{type: Reverb, room_size: 0.7, wet_level: 0.4}, {type: Compressor, threshold_db: -20, ratio: 4}]
          loudness: -12
        """,
    )
    rendered = tone(job.samples + job.overhang, freq=61.7)
    naive = rendered[:, : job.samples]
    # The stand-in really would click if looped as is: the step is many times the largest inside.
    assert join_step(naive) > 5 * largest_step(naive)
    audio, _, _ = finish_take(job, rendered, tmp_path)
    assert audio.shape == (2, job.samples)
    # Threshold: the join steps no further than the largest step anywhere inside the loop, and
    # the first difference across the join is within 1.5x of the typical (95th pct) one.
    assert join_step(audio) <= largest_step(audio)
    diffs = np.abs(np.diff(audio, axis=1))
    assert join_step(audio) <= 1.5 * np.percentile(diffs, 95)


def test_make_seamless_keeps_everything_after_the_crossfade():
    rendered = tone(10_000)
    loop = make_seamless(rendered, 9_000)
    assert loop.shape == (2, 9_000)
    np.testing.assert_array_equal(loop[:, 1_000:], rendered[:, 1_000:9_000])
    assert join_step(loop) <= largest_step(loop)
