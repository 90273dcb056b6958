import numpy as np
import pytest

from sa3core import timebase
from sa3core.errors import Sa3Error
from sa3core.pipeline import Region, splice
from tests.conftest import stereo_tone


@pytest.mark.parametrize("samples", [1, 4095, 4097, 44_100, timebase.bars_to_samples(1, 120, "3/4")])
def test_generate_returns_exactly_the_requested_samples(tiny_pipeline, samples):
    audio = tiny_pipeline.generate("kick drum", samples, steps=2, seed=1)
    assert audio.shape == (1, 2, samples)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()


def test_same_seed_same_audio_bit_for_bit(tiny_pipeline):
    first = tiny_pipeline.generate("warm pad", 30_000, steps=3, seed=7)
    second = tiny_pipeline.generate("warm pad", 30_000, steps=3, seed=7)
    other = tiny_pipeline.generate("warm pad", 30_000, steps=3, seed=8)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other).max() > 1e-4


def test_variation_k_is_seed_plus_k(tiny_pipeline):
    batch = tiny_pipeline.generate("pluck", 20_000, steps=2, seed=3, variations=2)
    alone = tiny_pipeline.generate("pluck", 20_000, steps=2, seed=4)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)


def test_inpaint_keeps_outside_bit_exact_and_changes_inside(tiny_pipeline):
    source = stereo_tone(3.0)
    regions = [Region.from_seconds(0.5, 1.0), Region.from_seconds(2.0, 2.6)]
    out = tiny_pipeline.inpaint(source, "snare fill", regions, steps=2, seed=0)[0]
    assert out.shape == source.shape
    keep = np.ones(source.shape[1], dtype=bool)
    for region in regions:
        keep[region.start : region.end] = False
        inside = slice(region.start, region.end)
        assert np.abs(out[:, inside] - source[:, inside]).mean() > 1e-3
    np.testing.assert_array_equal(out[:, keep], source[:, keep])


def test_inpaint_region_touching_the_ends(tiny_pipeline):
    source = stereo_tone(1.5)
    regions = [Region(0, 10_000), Region(50_000, source.shape[1])]
    out = tiny_pipeline.inpaint(source, "", regions, steps=1, seed=0)[0]
    np.testing.assert_array_equal(out[:, 10_000:50_000], source[:, 10_000:50_000])


def test_continue_returns_input_unchanged_then_new_audio(tiny_pipeline):
    source = stereo_tone(1.2)
    extra = timebase.seconds_to_samples(0.8)
    out = tiny_pipeline.continue_(source, "more of the same", extra, steps=2, seed=0)
    assert out.shape == (1, 2, source.shape[1] + extra)
    np.testing.assert_array_equal(out[0, :, : source.shape[1]], source)
    assert np.abs(out[0, :, source.shape[1] :]).max() > 0


def test_splice_crossfade_is_equal_power_and_inside_region():
    original = np.ones((2, 4000), np.float32)
    generated = np.zeros((2, 4000), np.float32)
    region = Region(1000, 3000)
    out = splice(original, generated, [region])
    np.testing.assert_array_equal(out[:, :1000], original[:, :1000])
    np.testing.assert_array_equal(out[:, 3000:], original[:, 3000:])
    # Equal-power: gains of the two sources square-sum to one inside the fades.
    fade = timebase.seconds_to_samples(0.010)
    gain_out = out[0, 1000 : 1000 + fade]
    assert np.all(np.diff(gain_out) <= 0) and gain_out[0] > 0.99 and gain_out[-1] < 0.05
    np.testing.assert_array_equal(out[:, 1000 + fade : 3000 - fade], 0.0)


@pytest.mark.parametrize(
    ("regions", "needle"),
    [
        ([Region(100, 100)], "empty"),
        ([Region(0, 200_000)], "outside"),
        ([Region(-5, 100)], "outside"),
        ([Region(0, 10_000), Region(5_000, 20_000)], "overlap"),
        ([], "at least one"),
    ],
)
def test_bad_regions(tiny_pipeline, regions, needle):
    with pytest.raises(Sa3Error, match=needle):
        tiny_pipeline.inpaint(stereo_tone(1.0), "x", regions, steps=1)


@pytest.mark.parametrize(
    ("samples", "needle"),
    [(0, "longer than zero"), (-10, "longer than zero"), (timebase.seconds_to_samples(381), "limit")],
)
def test_bad_lengths(tiny_pipeline, samples, needle):
    with pytest.raises(Sa3Error, match=needle):
        tiny_pipeline.generate("x", samples)


def test_bad_audio(tiny_pipeline):
    with pytest.raises(Sa3Error, match="stereo"):
        tiny_pipeline.continue_(np.zeros(100, np.float32), "x", 100)
    bad = stereo_tone(0.5)
    bad[0, 10] = np.nan
    with pytest.raises(Sa3Error, match="NaN"):
        tiny_pipeline.inpaint(bad, "x", [Region(0, 100)])


def test_model_folder_round_trip(tiny_pipeline, tiny_model_dir):
    from sa3core.pipeline import Pipeline

    loaded = Pipeline.load(tiny_model_dir)
    a = tiny_pipeline.generate("hat", 8192, steps=2, seed=5)
    b = loaded.generate("hat", 8192, steps=2, seed=5)
    np.testing.assert_array_equal(a, b)


def test_unknown_model_folder(tmp_path):
    from sa3core.pipeline import Pipeline

    with pytest.raises(Sa3Error, match="not an sa3 model folder"):
        Pipeline.load(tmp_path)


def test_a_request_tempo_reaches_the_model_and_equals_the_prompts_own(tiny_pipeline):
    """--bpm (or a host's tempo) conditions the DiT; when it says what the prompt says, the
    take is the same as from the prompt alone, and another tempo gives another take."""
    prompt = "dusty breakbeat at 90 bpm"
    samples = 3 * 4096
    from_prompt = tiny_pipeline.generate(prompt, samples, steps=2, seed=4)
    same_tempo = tiny_pipeline.generate(prompt, samples, steps=2, seed=4, bpm=90.0)
    faster = tiny_pipeline.generate(prompt, samples, steps=2, seed=4, bpm=150.0)
    np.testing.assert_array_equal(from_prompt, same_tempo)
    assert np.abs(from_prompt - faster).max() > 1e-6


def test_tempo_grid_makes_the_take_on_the_grid_and_returns_the_asked_length(tiny_pipeline):
    """With the tempo grid, 120 bpm is generated at 129.2 bpm (5 frames a beat) and warped: a
    different take of exactly the asked length; a tempo already on the grid is left alone."""
    from sa3core import warp

    samples = timebase.bars_to_samples(1, 120, "4/4")
    plain = tiny_pipeline.generate("boom bap beat", samples, steps=2, seed=2, bpm=120.0)
    gridded = tiny_pipeline.generate("boom bap beat", samples, steps=2, seed=2, bpm=120.0, tempo_grid=True)
    assert gridded.shape == plain.shape == (1, 2, samples)
    assert np.abs(gridded - plain).max() > 1e-4
    on_grid = warp.FRAMES_PER_MINUTE / 5
    a = tiny_pipeline.generate("boom bap beat", 20_000, steps=2, seed=2, bpm=on_grid)
    b = tiny_pipeline.generate("boom bap beat", 20_000, steps=2, seed=2, bpm=on_grid, tempo_grid=True)
    np.testing.assert_array_equal(a, b)
    no_tempo = tiny_pipeline.generate("boom bap beat", 20_000, steps=2, seed=2, tempo_grid=True)
    np.testing.assert_array_equal(no_tempo, tiny_pipeline.generate("boom bap beat", 20_000, steps=2, seed=2))


def test_tempo_grid_is_a_model_setting(tiny_pipeline, tiny_model_dir, tmp_path):
    import json
    import shutil

    from sa3core.pipeline import Pipeline

    folder = shutil.copytree(tiny_model_dir, tmp_path / "gridded")
    settings = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**settings, "tempo_grid": True, "cfg_rescale": 0.7}))
    loaded = Pipeline.load(folder)
    assert loaded.settings.tempo_grid and loaded.settings.cfg_rescale == 0.7
    samples = timebase.bars_to_samples(1, 100, "4/4")
    np.testing.assert_array_equal(
        loaded.generate("hat", samples, steps=2, seed=1, bpm=100.0, cfg=1.0),
        tiny_pipeline.generate("hat", samples, steps=2, seed=1, bpm=100.0, tempo_grid=True),
    )


def test_generated_takes_never_exceed_the_ceiling_and_quiet_ones_are_untouched():
    from sa3core.level import CEILING_DBTP, true_peak_db
    from sa3core.pipeline import limit_peaks

    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal((2, 1000)) * 0.1).astype(np.float32)
    loud = quiet * 40.0
    out = limit_peaks(np.stack([quiet, loud]))
    np.testing.assert_array_equal(out[0], quiet)  # below -1 dBTP: bit-exact
    assert CEILING_DBTP - 0.01 <= true_peak_db(out[1]) <= CEILING_DBTP  # the true peak, just under
    np.testing.assert_allclose(out[1] / np.abs(out[1]).max(), loud / np.abs(loud).max(), rtol=1e-5)  # gain only


def test_tail_frames_cover_the_asked_silence():
    from sa3core.families.sa3 import tail_frames

    frame = timebase.SAMPLES_PER_FRAME
    assert tail_frames(0.0, 10 * frame) == 0
    # 0.2 s = 8820 samples: the frames starting at or after sample 40960 - 8820 = 32140 -> frames 8, 9
    assert tail_frames(0.2, 10 * frame) == 2
    assert tail_frames(0.2, 10 * frame - 100) == 2  # the last frame runs past the take's end
    assert tail_frames(0.1, 10 * frame) == 1
    assert tail_frames(0.05, frame) == 0  # a one-frame take has nothing before its tail


def test_a_tail_ends_the_take_in_digital_silence_faded_into(tiny_pipeline):
    samples = timebase.seconds_to_samples(1.5)
    plain = tiny_pipeline.generate("glass ping", samples, steps=2, seed=3)[0]
    ended = tiny_pipeline.generate("glass ping", samples, steps=2, seed=3, tail_seconds=0.2)[0]
    from sa3core.families.sa3 import tail_frames

    held = tail_frames(0.2, samples)
    boundary = (timebase.samples_to_frames(samples) - held) * timebase.SAMPLES_PER_FRAME
    assert held == 3  # the last of 17 frames runs 3482 samples past the take's end
    assert timebase.seconds_to_samples(0.2) - timebase.SAMPLES_PER_FRAME < samples - boundary
    assert samples - boundary <= timebase.seconds_to_samples(0.2)
    assert ended.shape == plain.shape and not np.any(ended[:, boundary:])
    assert np.abs(plain[:, boundary:]).max() > 1e-3  # the same take without it sounds there
    fade = timebase.seconds_to_samples(0.010)
    assert np.abs(ended[:, boundary - 2 * fade : boundary - fade]).max() > 1e-3  # sound until the fade
    assert (
        np.abs(ended[:, boundary - 3 : boundary]).max() < np.abs(ended[:, boundary - fade - 3 : boundary - fade]).max()
    )
    # the held frames change what is sampled before them (they are seen, not pasted on)
    assert np.abs(ended[:, : boundary - fade] - plain[:, : boundary - fade]).max() > 1e-4


def test_one_shot_prompts_get_the_models_tail_and_others_do_not(tiny_pipeline):
    import dataclasses

    from sa3core.pipeline import Pipeline

    tailed = Pipeline(tiny_pipeline.backend, dataclasses.replace(tiny_pipeline.settings, one_shot_tail_seconds=0.2))
    samples = timebase.seconds_to_samples(1.0)
    for prompt in ("kick hit", "G minor chord stab", "snare one-shot, dry"):
        auto = tailed.generate(prompt, samples, steps=2, seed=0)
        np.testing.assert_array_equal(auto, tiny_pipeline.generate(prompt, samples, steps=2, seed=0, tail_seconds=0.2))
        assert not np.any(auto[0, :, -4000:])
        assert np.any(tailed.generate(prompt, samples, steps=2, seed=0, tail_seconds=0)[0, :, -4000:])
    for prompt in ("house loop with hits, 124 bpm", "warm pad"):
        np.testing.assert_array_equal(
            tailed.generate(prompt, samples, steps=2, seed=0), tiny_pipeline.generate(prompt, samples, steps=2, seed=0)
        )


@pytest.mark.parametrize(
    ("tail", "needle"),
    [(-0.1, "0 or more"), (float("nan"), "0 or more"), (1.0, "leaves nothing to generate"), (True, "number")],
)
def test_bad_tails(tiny_pipeline, tail, needle):
    with pytest.raises(Sa3Error, match=needle):
        tiny_pipeline.generate("kick hit", 44_100, steps=1, tail_seconds=tail)


def test_a_bad_tail_in_model_json_is_refused_at_load(tiny_model_dir, tmp_path):
    import json
    import shutil

    from sa3core.pipeline import Pipeline

    folder = shutil.copytree(tiny_model_dir, tmp_path / "tailed")
    settings = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**settings, "one_shot_tail_seconds": -1}))
    with pytest.raises(Sa3Error, match="one_shot_tail_seconds"):
        Pipeline.load(folder)


def host_rate_song(seconds: float, rate: int) -> np.ndarray:
    """Stereo audio at ``rate`` whose every low bit differs from its neighbours' (24-bit codes)."""
    rng = np.random.default_rng(rate)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])
    return (np.round((audio + 0.01 * rng.standard_normal(audio.shape)) * 2**23) / 2**23).astype(np.float32)


@pytest.mark.parametrize("rate", [48_000, 96_000])
def test_inpaint_at_the_inputs_rate_keeps_its_samples(tiny_pipeline, rate):
    """Regions and audio at the host's rate: the kept samples are the input's own, not a round
    trip through 44.1 kHz; the length is the input's."""
    source = host_rate_song(1.5, rate)
    regions = [Region.from_seconds(0.4, 0.7, rate), Region.from_seconds(1.2, 1.5, rate)]
    out = tiny_pipeline.inpaint(source, "snare fill", regions, steps=1, seed=0, sample_rate=rate)[0]
    assert out.shape == source.shape
    keep = np.ones(source.shape[1], dtype=bool)
    for region in regions:
        keep[region.start : region.end] = False
        assert np.abs(out[:, region.start : region.end] - source[:, region.start : region.end]).max() > 1e-3
    np.testing.assert_array_equal(out[:, keep], source[:, keep])


def test_continue_and_generate_count_samples_at_the_asked_rate(tiny_pipeline):
    source = host_rate_song(1.0, 48_000)
    out = tiny_pipeline.continue_(source, "more", 24_000, steps=1, seed=0, sample_rate=48_000)
    assert out.shape == (1, 2, 72_000)
    np.testing.assert_array_equal(out[0, :, :48_000], source)
    take = tiny_pipeline.generate("hat", 96_000, steps=1, seed=0, sample_rate=96_000)
    assert take.shape == (1, 2, 96_000)
    with pytest.raises(Sa3Error, match="sample rate 4000 Hz is outside"):
        tiny_pipeline.generate("hat", 4_000, steps=1, sample_rate=4_000)


def test_loud_new_audio_is_held_under_the_ceiling_at_the_inputs_rate(tiny_pipeline, monkeypatch):
    """Whatever level the model makes the new audio at, the ceiling holds at the returned rate
    (here a model 40 dB too hot, in inpainting and continuation at 48 kHz)."""
    from sa3core.level import CEILING_DBTP, true_peak_db

    edit = tiny_pipeline._edit
    monkeypatch.setattr(tiny_pipeline, "_edit", lambda *args, **kw: edit(*args, **kw) * 100.0)
    source = host_rate_song(1.0, 48_000)
    region = Region.from_seconds(0.3, 0.6, 48_000)
    out = tiny_pipeline.inpaint(source, "fill", [region], steps=1, seed=0, sample_rate=48_000)[0]
    assert true_peak_db(out[:, region.start : region.end]) <= CEILING_DBTP
    longer = tiny_pipeline.continue_(source, "more", 24_000, steps=1, seed=0, sample_rate=48_000)[0]
    assert true_peak_db(longer[:, 48_000:]) <= CEILING_DBTP
