import pytest

from sa3core import timebase as tb
from sa3core.errors import Sa3Error


@pytest.mark.parametrize(
    ("samples", "frames"),
    [(1, 1), (4095, 1), (4096, 1), (4097, 2), (441_000, 108), (2_646_000, 646)],
)
def test_frames_cover_samples(samples, frames):
    assert tb.samples_to_frames(samples) == frames
    assert tb.frames_to_samples(frames) >= samples > tb.frames_to_samples(frames - 1)


@pytest.mark.parametrize(
    ("bars", "bpm", "meter", "samples"),
    [
        (4, 120, "4/4", 352_800),  # 8 s
        (1, 120, "3/4", 66_150),  # 1.5 s
        (2, 90, "6/8", 176_400),  # a 6/8 bar is 3 quarters: 2 bars = 4 s at 90 bpm
        (1, 140, "7/8", 66_150),  # 3.5 quarters at 140 bpm = 1.5 s
        (8, 60, "4/4", 1_411_200),
        (1, 200, "4/4", 52_920),
    ],
)
def test_bars_to_samples_hand_worked(bars, bpm, meter, samples):
    assert tb.bars_to_samples(bars, bpm, meter) == samples


def test_bars_at_host_rates():
    assert tb.bars_to_samples(4, 120, "4/4", sample_rate=48_000) == 384_000
    assert tb.bars_to_samples(4, 120, "4/4", sample_rate=96_000) == 768_000


def test_bar_positions_are_one_based():
    assert tb.parse_position("1.1", 120) == 0.0
    assert tb.parse_position("5.1", 120) == pytest.approx(8.0)
    assert tb.parse_position("2.3", 120, "3/4") == pytest.approx(1.5 + 1.0)
    assert tb.parse_position("1.2.5", 120) == pytest.approx(0.75)
    assert tb.parse_region("5.1:9.1", 120) == (pytest.approx(8.0), pytest.approx(16.0))
    assert tb.parse_region("2.5:4", None) == (2.5, 4.0)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: tb.check_bpm(0), "tempo"),
        (lambda: tb.check_bpm(5000), "tempo"),
        (lambda: tb.check_bpm(float("nan")), "tempo"),
        (lambda: tb.Meter.parse("4/5"), "denominator"),
        (lambda: tb.Meter.parse("0/4"), "beats a bar"),
        (lambda: tb.Meter.parse("four four"), "time signature"),
        (lambda: tb.seconds_to_samples(-1.0), "positive"),
        (lambda: tb.check_duration(0), "longer than zero"),
        (lambda: tb.check_duration(tb.seconds_to_samples(381)), "limit"),
        (lambda: tb.bars_to_samples(-2, 120), "bar count"),
        (lambda: tb.parse_region("4:2"), "reversed"),
        (lambda: tb.parse_region("3"), "START:END"),
        (lambda: tb.parse_position("9.5", 120, "4/4"), "outside"),
        (lambda: tb.parse_position("abc"), "not understood"),
    ],
)
def test_bad_values_give_one_line_errors(call, needle):
    with pytest.raises(Sa3Error) as err:
        call()
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
