"""The Opus reference: the same clips through ffmpeg + libopus at a fixed bitrate.

Chain (per clip, stereo): 44.1 kHz float -> soxr VHQ to 48 kHz (Opus codes at 48 kHz only;
doing it here keeps the resampler the same as sa3's own) -> 32-bit float WAV -> ``ffmpeg
-c:a libopus -b:a {kbps}k -vbr on -application audio`` (the default complexity, 10) -> Ogg
Opus -> ffmpeg decodes to 48 kHz float WAV (ffmpeg drops the stream's pre-skip) -> soxr back
to 44.1 kHz -> aligned to the input and cut to its exact length.

Alignment is verified, not assumed: the decoded mono mix is cross-correlated with the
input's over +-100 ms and shifted by the best lag (``OpusResult.lag_samples``, 0 when
ffmpeg's pre-skip handling is right; a non-zero lag is reported).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from sa3core import timebase
from sa3core.audio import resample
from sa3core.errors import Sa3Error

OPUS_RATE = 48_000  # the only rate libopus codes at internally
MAX_LAG_SECONDS = 0.100
INSTALL_HINT = "install it with `apt-get install ffmpeg` (or scripts/install-system-deps), or pass --skip opus"


@lru_cache(maxsize=1)
def ffmpeg_path() -> str:
    """The ffmpeg executable, checked to have the libopus encoder; Sa3Error with the install hint if not."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise Sa3Error(f"ffmpeg was not found on PATH; {INSTALL_HINT}")
    encoders = subprocess.run([path, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    if "libopus" not in encoders.stdout:
        raise Sa3Error(f"ffmpeg at {path!r} has no libopus encoder; {INSTALL_HINT}")
    return path


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_path(), "-hide_banner", "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


@dataclass
class OpusResult:
    audio: np.ndarray  # float32 [2, samples] at 44.1 kHz, aligned, same length as the input
    kbps: float
    lag_samples: int  # the delay found by cross-correlation (and removed); 0 = ffmpeg aligned it
    encoded_bytes: int  # size of the Ogg Opus file (container overhead included)


def _run(args: list[str]) -> None:
    result = subprocess.run([ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise Sa3Error(f"ffmpeg failed ({' '.join(args[:4])} ...): {message[-1] if message else 'no message'}")


def best_lag(reference: np.ndarray, candidate: np.ndarray, max_lag: int) -> int:
    """Lag L (samples) maximising the cross-correlation of mono mixes: ``candidate[n + L] ~ reference[n]``."""
    ref = reference.mean(axis=0).astype(np.float64)
    can = candidate.mean(axis=0).astype(np.float64)
    size = 1 << int(np.ceil(np.log2(ref.size + can.size)))
    correlation = np.fft.irfft(np.fft.rfft(can, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([correlation[: max_lag + 1], correlation[-max_lag:]])
    return int(lags[int(np.argmax(values))])


def opus_roundtrip(audio: np.ndarray, kbps: float) -> OpusResult:
    """Encode ``audio`` float32 [2, samples] (44.1 kHz) to Opus at ``kbps`` and decode it back."""
    audio = np.asarray(audio, dtype=np.float32)
    samples = audio.shape[1]
    with tempfile.TemporaryDirectory(prefix="sa3-opus-") as folder:
        source, encoded, decoded = (Path(folder) / name for name in ("in.wav", "out.opus", "out.wav"))
        sf.write(source, resample(audio, timebase.SAMPLE_RATE, OPUS_RATE).T, OPUS_RATE, subtype="FLOAT")
        _run(
            [
                "-i",
                str(source),
                "-c:a",
                "libopus",
                "-b:a",
                f"{kbps:g}k",
                "-vbr",
                "on",
                "-application",
                "audio",
                str(encoded),
            ]
        )
        _run(["-i", str(encoded), "-ar", str(OPUS_RATE), "-c:a", "pcm_f32le", str(decoded)])
        data, rate = sf.read(decoded, dtype="float32", always_2d=True)
        size = encoded.stat().st_size
    if rate != OPUS_RATE or data.shape[1] != timebase.CHANNELS:
        raise Sa3Error(f"ffmpeg decoded Opus as {data.shape[1]} channels at {rate} Hz; expected stereo at {OPUS_RATE}")
    back = resample(np.ascontiguousarray(data.T), OPUS_RATE, timebase.SAMPLE_RATE)
    lag = best_lag(audio, back, timebase.seconds_to_samples(MAX_LAG_SECONDS))
    aligned = np.zeros_like(audio)
    # aligned[n] = back[n + lag] wherever both exist; the rest stays silent
    first, last = max(0, -lag), min(samples, back.shape[1] - lag)
    if last > first:
        aligned[:, first:last] = back[:, first + lag : last + lag]
    return OpusResult(aligned, float(kbps), lag, size)
