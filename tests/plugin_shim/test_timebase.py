"""Region and bar math of the C++ shim (plugin_shim/include/sa3/timebase.h) against hand-worked
cases and against sa3core.timebase, so the plugin and the Python side agree to the sample."""

from __future__ import annotations

import numpy as np
import pytest

from sa3core import timebase

# (bars, bpm, meter, rate, samples), worked by hand: bar seconds = 60 / bpm * quarters per bar.
HAND_WORKED = [
    (4, 120, (4, 4), 44100, 352_800),  # 4 x 2 s
    (4, 120, (4, 4), 48000, 384_000),
    (4, 120, (4, 4), 96000, 768_000),
    (2, 90, (3, 4), 48000, 192_000),  # 3 quarters at 90 bpm = 2 s a bar
    (1, 120, (6, 8), 44100, 66_150),  # 6/8 = 3 quarters = 1.5 s
    (3, 60, (6, 8), 96000, 864_000),  # 3 s a bar
    (4, 140, (7, 8), 96000, 576_000),  # 7/8 = 3.5 quarters at 140 bpm = 1.5 s
    (1, 200, (7, 8), 44100, 46_305),  # 3.5 x 0.3 s = 1.05 s
    (1, 60, (4, 4), 48000, 192_000),  # 4 s
    (8, 200, (3, 4), 44100, 317_520),  # 8 x 0.9 s = 7.2 s
]


@pytest.mark.parametrize("bars,bpm,meter,rate,expected", HAND_WORKED)
def test_bars_to_samples_hand_worked(shim, bars, bpm, meter, rate, expected):
    assert shim.bars_to_samples(bars, bpm, meter, rate) == expected


def test_quarters_per_bar(shim):
    assert shim.quarters_per_bar((4, 4)) == 4.0
    assert shim.quarters_per_bar((3, 4)) == 3.0
    assert shim.quarters_per_bar((6, 8)) == 3.0
    assert shim.quarters_per_bar((7, 8)) == 3.5


def test_bar_positions_are_one_based(shim):
    assert shim.bar_start_sample(1, 120, (4, 4), 44100) == 0
    assert shim.bar_start_sample(5, 120, (4, 4), 44100) == 352_800  # 4 bars in
    assert shim.bar_start_sample(3, 60, (4, 4), 48000) == 384_000  # 8 s
    assert shim.bar_start_sample(2, 140, (7, 8), 96000) == 144_000  # 1.5 s
    assert shim.bar_start_sample(2.5, 90, (3, 4), 48000) == 144_000  # bar and a half = 3 s


def test_ppq_and_nearest_bar_line(shim):
    assert shim.ppq_to_samples(8.0, 120.0, 48000) == 192_000  # 8 quarters = 4 s
    assert shim.nearest_bar_line(5.0, (4, 4)) == 2.0  # 1.25 bars in: bar 2
    assert shim.nearest_bar_line(4.4, (6, 8)) == 2.0  # 1.47 bars in
    assert shim.nearest_bar_line(-3.0, (4, 4)) == 1.0  # never before bar 1


def test_matches_sa3core_timebase_over_a_grid(shim):
    for bpm in (60.0, 87.5, 120.0, 133.0, 174.0, 200.0):
        for meter in ((4, 4), (3, 4), (6, 8), (7, 8), (5, 4)):
            for rate in (44100, 48000, 96000):
                for bars in (1, 3, 7.5, 16):
                    py = timebase.bars_to_samples(bars, bpm, timebase.Meter(*meter), rate)
                    assert shim.bars_to_samples(bars, bpm, meter, rate) == py, (bars, bpm, meter, rate)


def test_frames_are_ceil_of_4096(shim):
    assert shim.SAMPLES_PER_FRAME == timebase.SAMPLES_PER_FRAME
    for samples in (0, 1, 4095, 4096, 4097, 352_800, 16_758_000):
        assert shim.samples_to_frames(samples) == timebase.samples_to_frames(samples)
    assert shim.samples_to_frames(352_800) == 87
    assert shim.host_to_model_samples(384_000, 48000) == 352_800
    assert shim.host_to_model_samples(768_000, 96000) == 352_800


def test_inpaint_frame_mask(shim):
    # 1 = keep, 0 = regenerate; a frame is regenerated when any of its samples is in the region.
    assert shim.inpaint_frame_mask(20000, 5000, 9000).tolist() == [1, 0, 0, 1, 1]
    assert shim.inpaint_frame_mask(20000, 4096, 8192).tolist() == [1, 0, 1, 1, 1]
    assert shim.inpaint_frame_mask(20000, 4095, 4097).tolist() == [0, 0, 1, 1, 1]
    assert shim.inpaint_frame_mask(8192, 0, 8192).tolist() == [0, 0]
    assert shim.inpaint_frame_mask(8193, 8192, 8193).tolist() == [1, 1, 0]
    mask = shim.inpaint_frame_mask(352_800, 88_200, 176_400)
    assert mask.dtype == np.uint8 and mask.shape == (87,)
    assert np.flatnonzero(mask == 0).tolist() == list(range(88_200 // 4096, (176_400 - 1) // 4096 + 1))


def test_bad_meter_is_refused(shim):
    with pytest.raises(ValueError, match="7/5"):
        shim.bars_to_samples(1, 120, (7, 5), 44100)


def _processor(shim, rate):
    p = shim.Processor(endpoint="tcp://127.0.0.1:9", offline_after_ms=200)
    p.prepare_to_play(rate, 512)
    return p


def _tick(p, rate, **position):
    p.process_block(np.zeros((2, 64), np.float32), time_in_samples=0, is_playing=True, **position)


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
def test_inpaint_region_is_the_host_loop(shim, rate):
    p = _processor(shim, rate)
    _tick(p, rate, bpm=90.0, time_signature=(3, 4), is_looping=True, loop_points=(6.0, 12.0))
    region = p.resolve_region()
    # quarters 6..12 at 90 bpm = 4 s .. 8 s
    assert (region["start"], region["end"]) == (4 * rate, 8 * rate)
    assert region["from_host_loop"] and region["meter"] == (3, 4) and region["bpm"] == 90.0


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
def test_inpaint_region_is_the_plugin_bars_when_not_looping(shim, rate):
    p = _processor(shim, rate)
    p.region_bars = (3.0, 5.0)
    _tick(p, rate, bpm=140.0, time_signature=(7, 8), is_looping=False, loop_points=(0.0, 4.0))
    region = p.resolve_region()
    assert (region["start"], region["end"]) == (3 * rate, 6 * rate)  # bars 3..5 of 1.5 s
    assert not region["from_host_loop"]


def test_fill_starts_on_a_bar_line_and_lasts_n_bars(shim):
    rate = 48000
    p = _processor(shim, rate)
    p.mode = "generate"
    p.bars = 4
    # Loop starts 1.2 bars in (6/8 at 120 bpm: 3 quarters a bar): the fill starts at bar 2.
    _tick(p, rate, bpm=120.0, time_signature=(6, 8), is_looping=True, loop_points=(3.6, 9.0))
    region = p.resolve_region()
    assert region["start"] == shim.bar_start_sample(2, 120.0, (6, 8), rate) == 72_000
    assert region["end"] - region["start"] == shim.bars_to_samples(4, 120.0, (6, 8), rate) == 288_000


def test_defaults_are_120_bpm_four_four_when_the_host_gives_none(shim):
    rate = 44100
    p = _processor(shim, rate)
    p.mode = "continue"
    p.bars = 2
    p.region_bars = (5.0, 6.0)
    p.process_block(np.zeros((2, 64), np.float32))  # no position at all
    region = p.resolve_region()
    assert region["bpm"] == 120.0 and region["meter"] == (4, 4)
    assert (region["start"], region["end"]) == (352_800, 352_800 + 176_400)
    # The plugin's own tempo and meter replace the defaults for hosts without a playhead.
    p.bpm = 100.0
    p.meter = (3, 4)
    region = p.resolve_region()
    assert (region["start"], region["end"]) == (4 * 3 * 26_460, 6 * 3 * 26_460)  # 0.6 s a quarter


def test_bar_line_at_or_before(shim):
    """Context windows start on the bar line at or before the wanted start (bar 1 at sample 0)."""
    rate, bpm, meter = 48000, 150.0, (3, 4)  # a bar is 1.2 s = 57,600 samples
    assert shim.bar_line_at_or_before(0, bpm, meter, rate) == 0
    assert shim.bar_line_at_or_before(57_599, bpm, meter, rate) == 0
    assert shim.bar_line_at_or_before(57_600, bpm, meter, rate) == 57_600
    assert shim.bar_line_at_or_before(200_000, bpm, meter, rate) == 172_800
    for sample in range(0, 2_000_000, 7919):  # odd tempo and meter: never after, never a bar early
        line = shim.bar_line_at_or_before(sample, 97.3, (7, 8), 44100)
        bar = round(line / shim.bars_to_samples(1, 97.3, (7, 8), 44100)) + 1
        assert line <= sample < shim.bar_start_sample(bar + 1, 97.3, (7, 8), 44100)
        assert line == shim.bar_start_sample(bar, 97.3, (7, 8), 44100)
    # A bar line is its own: also one rounded down, whose ppq reads a hair under the bar (bar 2 of
    # 7/8 at 137 bpm and 96 kHz is sample 147,153, from 147,153.28; it used to give bar 1).
    assert shim.bar_line_at_or_before(147_153, 137.0, (7, 8), 96000) == 147_153
    for rate, bpm, meter in [(96000, 137.0, (7, 8)), (44100, 97.3, (7, 8)), (48000, 133.0, (5, 4))]:
        for bar in range(1, 300):
            line = shim.bar_start_sample(bar, bpm, meter, rate)
            assert shim.bar_line_at_or_before(line, bpm, meter, rate) == line
            assert shim.bar_line_at_or_before(line - 1, bpm, meter, rate) == (
                shim.bar_start_sample(bar - 1, bpm, meter, rate) if bar > 1 else 0
            )
