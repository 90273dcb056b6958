from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3core import audio as sa
from sa3core.errors import Sa3Error


def tone(seconds, rate, channels=1, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1)


@pytest.mark.parametrize("ext", ["wav", "flac", "aiff", "ogg"])
@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (48_000, 1), (22_050, 2), (96_000, 1)])
def test_load_any_format_rate_and_layout(tmp_path, ext, rate, channels):
    path = tmp_path / f"in.{ext}"
    sf.write(path, tone(0.5, rate, channels), rate)
    audio = sa.load_audio(path)
    assert audio.dtype == np.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] - 22_050) <= 1
    # Mono is centred: both channels carry the same signal.
    if channels == 1:
        np.testing.assert_array_equal(audio[0], audio[1])
    # The 440 Hz tone survives resampling at the right pitch.
    spectrum = np.abs(np.fft.rfft(audio[0]))
    peak_hz = np.argmax(spectrum) * 44_100 / audio.shape[1]
    assert abs(peak_hz - 440) < 5


@pytest.mark.parametrize("depth", ["16", "24", "float"])
def test_write_and_read_back(tmp_path, depth):
    audio = np.stack([np.linspace(-0.9, 0.9, 1000), np.linspace(0.9, -0.9, 1000)]).astype(np.float32)
    path = sa.save_audio(tmp_path / "out.wav", audio, bit_depth=depth)
    back = sa.load_audio(path)
    tolerance = {"16": 1e-4, "24": 1e-6, "float": 0}[depth]
    np.testing.assert_allclose(back, audio, atol=tolerance)
    assert sf.info(str(path)).subtype == sa.SUBTYPES[depth]


def test_flac_round_trip_and_tags(tmp_path):
    audio = np.stack([tone(0.1, 44_100)[:, 0]] * 2)
    path = sa.save_audio(tmp_path / "out.flac", audio, bit_depth="16", tags={"title": "warm pad", "comment": "seed=3"})
    with sf.SoundFile(str(path)) as handle:
        assert handle.title == "warm pad" and handle.comment == "seed=3"


def test_nothing_overwritten_unless_asked(tmp_path):
    path = tmp_path / "keep.wav"
    sf.write(path, tone(0.1, 44_100), 44_100)
    before = path.read_bytes()
    with pytest.raises(Sa3Error, match="already exists"):
        sa.save_audio(path, np.zeros((2, 10), np.float32))
    assert path.read_bytes() == before
    sa.save_audio(path, np.zeros((2, 10), np.float32), overwrite=True)
    assert sf.info(str(path)).frames == 10


def test_missing_file(tmp_path):
    with pytest.raises(Sa3Error, match="does not exist"):
        sa.load_audio(tmp_path / "nope.wav")


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(Sa3Error, match="not an audio file"):
        sa.load_audio(path)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44_100)
    with pytest.raises(Sa3Error, match="empty"):
        sa.load_audio(path)


def test_nan_and_inf_samples(tmp_path):
    data = tone(0.1, 44_100, 2)
    data[100, 0] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 44_100, subtype="FLOAT")
    with pytest.raises(Sa3Error, match="NaN or infinite"):
        sa.load_audio(path)
    data[100, 0] = np.inf
    sf.write(path, data, 44_100, subtype="FLOAT")
    with pytest.raises(Sa3Error, match="NaN or infinite"):
        sa.load_audio(path)


def test_too_long(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((8000 * 3, 1), np.float32), 8000)
    with pytest.raises(Sa3Error, match="over the 2 s limit"):
        sa.load_audio(path, max_seconds=2)


def test_too_many_channels():
    with pytest.raises(Sa3Error, match="6 channels"):
        sa.to_model_audio(np.zeros((6, 100), np.float32), 44_100)


def test_bad_output_extension_and_folder(tmp_path):
    with pytest.raises(Sa3Error, match="unknown extension"):
        sa.check_output_path(tmp_path / "out.mp3")
    with pytest.raises(Sa3Error, match="does not exist"):
        sa.check_output_path(tmp_path / "missing" / "out.wav")
    with pytest.raises(Sa3Error, match="FLAC cannot hold float"):
        sa.save_audio(tmp_path / "x.flac", np.zeros((2, 10), np.float32), bit_depth="float")
    assert not (tmp_path / "x.flac").exists()


def test_written_files_get_default_permissions_not_mkstemps_private_ones(tmp_path):
    """Atomic writes go through a mkstemp file (0600); the output gets what open() would give."""
    import os

    from sa3core.audio import save_audio
    from sa3core.checkpoint import atomic_write

    umask = os.umask(0o022)
    try:
        audio_path = save_audio(tmp_path / "take.wav", np.zeros((2, 100), np.float32))
        other = tmp_path / "other.json"
        atomic_write(other, lambda tmp: Path(tmp).write_text("{}"))
        assert (audio_path.stat().st_mode & 0o777) == (other.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(umask)
