"""The contract's audio: a whole WAV file in standard base64, in ``audio_data``, both ways.

In: any file libsndfile reads (PCM 16/24/32-bit, float, WAVE_FORMAT_EXTENSIBLE, ...) at any rate
sa3 takes, mono or stereo. Out: a RIFF WAV, PCM 16-bit, 44,100 Hz, 2 channels (the clients
write it out as it comes). 16-bit samples survive the trip bit for bit: libsndfile reads them as
``n / 32768`` and :func:`encode` writes ``round(x * 32768)``, so a 44.1 kHz 16-bit source that a
continuation keeps comes back as the same integers.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

import numpy as np
import soundfile as sf

from sa3core import timebase
from sa3core.audio import resample_to_length, to_stereo
from sa3core.errors import Sa3Error
from sa3core.pipeline import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

PCM16_SCALE = 32768.0


def decode(text) -> tuple[np.ndarray, int]:
    """``audio_data`` -> (float32 [channels, frames] as in the file, its rate). Sa3Error, naming
    the field, for anything that is not base64 of a readable, finite, mono or stereo file."""
    if not isinstance(text, str) or not text:
        raise Sa3Error("field 'audio_data' must be a base64-encoded WAV file (a non-empty string)")
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]  # a data: URL, as browsers write it
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # line-wrapped base64 (76 characters a line, as some encoders write it)
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise Sa3Error(
                "field 'audio_data' is not standard base64; send the WAV file's bytes base64-encoded"
            ) from None
    try:
        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise Sa3Error(f"field 'audio_data' is not a WAV file sa3 can read ({reason})") from None
    if data.shape[0] == 0:
        raise Sa3Error("field 'audio_data' holds a WAV file with no samples")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise Sa3Error(f"the WAV in 'audio_data' is at {rate} Hz; send {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if data.shape[1] > timebase.CHANNELS:
        raise Sa3Error(f"the WAV in 'audio_data' has {data.shape[1]} channels; send mono or stereo")
    if not np.isfinite(data).all():
        raise Sa3Error("the WAV in 'audio_data' holds NaN or infinite samples; re-export it")
    return np.ascontiguousarray(data.T), int(rate)


def to_model(audio: np.ndarray, rate: int) -> np.ndarray:
    """float32 [channels, frames] at ``rate`` -> [2, round(frames / rate * 44100)] at 44.1 kHz:
    the same duration, upmixed and resampled (untouched when it is stereo 44.1 kHz already)."""
    stereo = to_stereo(audio, what="the WAV in 'audio_data'")
    if rate == timebase.SAMPLE_RATE:
        return stereo
    samples = timebase.seconds_to_samples(audio.shape[1] / rate)
    return resample_to_length(stereo, rate, timebase.SAMPLE_RATE, samples)


def encode(audio: np.ndarray) -> bytes:
    """float32 [2, n] at 44.1 kHz -> base64 (ASCII bytes) of a PCM 16-bit stereo 44.1 kHz RIFF WAV."""
    channels, frames = audio.shape
    pcm = np.clip(np.round(audio.T * PCM16_SCALE), -32768, 32767).astype("<i2")  # (frames, channels), interleaved
    data = pcm.tobytes()
    rate, block = timebase.SAMPLE_RATE, 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
    header += b"data" + struct.pack("<I", len(data))
    return base64.b64encode(header + data)


def peak_dbfs(audio: np.ndarray) -> float | None:
    """The sample peak of ``audio`` in dBFS (None for silence), as meta.loudness reports it."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return round(20 * np.log10(peak), 2) if peak > 0 else None
