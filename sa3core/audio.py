"""Audio files in and out, at the model's contract: 44.1 kHz, stereo, float32 in [-1, 1].

Other rates and mono are converted here, at the edge, never inside the model. :func:`read_audio`
keeps a file's own rate for inpainting and continuation, which hand back the input's own samples
at its own rate (the pipeline resamples only the audio it makes).
Resampling uses soxr (VHQ); file I/O uses libsndfile through soundfile.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import Sa3Error
from .files import check_output_file, publish
from .timebase import CHANNELS, MAX_SECONDS, SAMPLE_RATE

# Subtypes a user may ask for, by the names they know.
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT", "32f": "FLOAT"}
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".aif": "AIFF", ".aiff": "AIFF", ".ogg": "OGG"}


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``audio`` [channels, samples] between rates (soxr, very high quality)."""
    if from_rate == to_rate:
        return audio
    if from_rate <= 0 or to_rate <= 0:
        raise Sa3Error(f"sample rate must be positive (got {from_rate} -> {to_rate})")
    out = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate, quality="VHQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def resample_to_length(audio: np.ndarray, from_rate: int, to_rate: int, samples: int) -> np.ndarray:
    """``audio`` [..., n] at ``from_rate`` -> float32 [..., samples] at ``to_rate``: resampled,
    then cut or zero-padded to exactly ``samples`` (resampling may come out a sample long or short;
    the length is a contract)."""
    audio = np.asarray(audio, dtype=np.float32)
    flat = resample(audio.reshape(-1, audio.shape[-1]), from_rate, to_rate)  # (rows, ~samples)
    out = np.zeros((flat.shape[0], samples), dtype=np.float32)
    keep = min(samples, flat.shape[1])
    out[:, :keep] = flat[:, :keep]
    return out.reshape(*audio.shape[:-1], samples)


def to_stereo(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """Any [samples] or [channels, samples] array -> float32 [2, samples] at the same rate.

    Raises Sa3Error for empty audio, NaN/inf samples and more than two channels.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise Sa3Error(f"{what} must be [channels, samples]; got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise Sa3Error(f"{what} is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise Sa3Error(f"{what} contains NaN or infinite samples; fix or re-export the source")
    if audio.shape[0] == 1:
        audio = np.repeat(audio, CHANNELS, axis=0)  # centred mono, same level in both ears
    elif audio.shape[0] != CHANNELS:
        raise Sa3Error(f"{what} has {audio.shape[0]} channels; sa3 takes mono or stereo")
    return audio


def to_model_audio(audio: np.ndarray, sample_rate: int, what: str = "audio") -> np.ndarray:
    """Any [samples], [channels, samples] array at any rate -> float32 [2, samples] at 44.1 kHz.

    Raises Sa3Error for empty audio, NaN/inf samples and more than two channels.
    """
    return resample(to_stereo(audio, what), sample_rate, SAMPLE_RATE)


def load_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Read WAV/FLAC/AIFF/OGG (any rate, mono or stereo) as float32 [2, samples] at 44.1 kHz."""
    audio, rate = read_audio(path, max_seconds)
    return resample(audio, rate, SAMPLE_RATE)


def read_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Read WAV/FLAC/AIFF/OGG (mono or stereo) as float32 [2, samples] at the file's own rate,
    and that rate. 16- and 24-bit samples come back exactly (written back at the same depth, they
    are the same integers)."""
    path = Path(path)
    if not path.exists():
        raise Sa3Error(f"audio file {str(path)!r} does not exist")
    if path.is_dir():
        raise Sa3Error(f"{str(path)!r} is a folder, not an audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise Sa3Error(f"{str(path)!r} is not an audio file sa3 can read (WAV, FLAC, AIFF, OGG): {err}") from None
    if info.frames == 0:
        raise Sa3Error(f"audio file {str(path)!r} is empty (0 samples)")
    if info.frames / info.samplerate > max_seconds + 1e-9:
        raise Sa3Error(
            f"audio file {str(path)!r} lasts {info.frames / info.samplerate:.1f} s, over the {max_seconds:g} s limit; trim it first"
        )
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return to_stereo(data.T, what=f"audio file {str(path)!r}"), int(rate)


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done (extension, then
    :func:`sa3core.files.check_output_file`: not a folder, free, writable); returns it as a Path."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise Sa3Error(f"output {str(path)!r} has an unknown extension; use one of {', '.join(FORMATS)}")
    return check_output_file(path, overwrite)


def save_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    bit_depth: str = "24",
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write [channels, samples] audio atomically (temp file, then rename).

    ``bit_depth`` is ``16``, ``24`` or ``float``; FLAC has no float, so ``float`` is refused there.
    ``tags`` (title, comment, ...) go in the file's metadata where the format has it.
    """
    path = check_output_path(path, overwrite)
    file_format = FORMATS[path.suffix.lower()]
    if bit_depth not in SUBTYPES:
        raise Sa3Error(f"bit depth {bit_depth!r} is not one of {', '.join(SUBTYPES)}")
    subtype = SUBTYPES[bit_depth] if file_format != "OGG" else "VORBIS"
    if file_format == "FLAC" and subtype == "FLOAT":
        raise Sa3Error("FLAC cannot hold float samples; use --bit-depth 16 or 24, or write a .wav")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if not np.isfinite(audio).all():
        raise Sa3Error("refusing to write audio that contains NaN or infinite samples")
    if subtype != "FLOAT":
        audio = np.clip(audio, -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(prefix=".sa3-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        with sf.SoundFile(tmp, "w", sample_rate, audio.shape[0], subtype=subtype, format=file_format) as out:
            for key, value in (tags or {}).items():
                setattr(out, key, str(value))
            out.write(audio.T)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
