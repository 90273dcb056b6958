"""The wire protocol of the sa3 daemon, as docs/protocol.md specifies it (the document is the truth).

Shared by the daemon and the Python client: the version constant, message types, error codes,
header encoding (msgpack, or JSON when the first byte is ``{``), planar little-endian float32
audio frames, and the checks that turn a client's frames into a :class:`JobRequest` or a
:class:`ProtocolError` with the right code. Nothing here touches a socket or the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from sa3core import limits as request_limits
from sa3core import timebase
from sa3core.errors import Sa3Error

PROTOCOL_VERSION = "1.6"
DEFAULT_PORT = 5557
DEFAULT_ENDPOINT = f"tcp://127.0.0.1:{DEFAULT_PORT}"

# type -> direction, in the order of docs/protocol.md section 4.
MESSAGE_TYPES = {
    "hello": "client",
    "capabilities": "daemon",
    "generate": "client",
    "inpaint": "client",
    "continue": "client",
    "transform": "client",
    "queued": "daemon",
    "progress": "daemon",
    "result": "daemon",
    "cancel": "client",
    "cancelled": "daemon",
    "fetch": "client",
    "status": "both",
    "heartbeat": "both",
    "error": "daemon",
    "shutdown": "daemon",
}
JOB_MODES = ("generate", "inpaint", "continue", "transform")
REQUEST_TYPES = tuple(name for name, direction in MESSAGE_TYPES.items() if direction != "daemon")

# code -> short meaning, as docs/protocol.md section 5.
ERROR_CODES = {
    "bad_frames": "wrong number of frames for the message type",
    "bad_header": "the header is not a msgpack map or JSON object with a string type",
    "unknown_type": "type is not a message type of this version",
    "bad_field": "a field is missing, of the wrong type or out of range",
    "bad_audio": "audio frame does not match its description, or holds NaN/inf",
    "too_large": "header or audio over the size limits",
    "too_long": "the job's audio is longer than max_seconds",
    "version_mismatch": "the request's major version differs from the daemon's",
    "queue_full": "the job queue is full",
    "unknown_job": "no job with this job_id",
    "job_finished": "the job has already ended",
    "invalid_request": "the model refused the request",
    "shutting_down": "the daemon is stopping",
    "internal": "unexpected failure inside the daemon",
}

MAX_HEADER_BYTES = 64 * 1024
MAX_REQUEST_ID_CHARS = 128
# The request limits are the CLI's too (sa3core.limits): one table, one set of messages.
MAX_SEED = request_limits.MAX_SEED
MAX_CFG = request_limits.MAX_CFG
MAX_SCALE_LOCK_DB = request_limits.MAX_SCALE_LOCK_DB  # dB per sampler step (added in 1.1)
MAX_LORAS = request_limits.MAX_LORAS  # LoRA adapters one job may name (added in 1.5)
# sa3core.lora.MAX_STRENGTH, written again so the client does not import torch (a test ties them).
MAX_LORA_STRENGTH = 2.0
DEFAULT_INIT_NOISE_LEVEL = 0.9  # transform's noise level when a request leaves it out (added in 1.4)
JOB_ID_HEX = 32
DAEMON_ID_HEX = 16  # every daemon header's daemon_id: made once per daemon start (added in 1.3)
HEARTBEAT_SECONDS = 2.0  # a client waiting on a job sends a heartbeat at least this often (1.3)
# A queued or running job whose owner the daemon has neither heard from nor reached for this long
# is cancelled (reason "abandoned", added in 1.3): five heartbeats missed, not one late one.
ABANDON_SECONDS = 5 * HEARTBEAT_SECONDS
AUDIO_DTYPE = np.dtype("<f4")  # little-endian float32, planar


class ProtocolError(Exception):
    """A request the daemon answers with ``error``: ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    """Per-request limits the daemon enforces and announces in ``capabilities``."""

    max_seconds: float = timebase.MAX_SECONDS
    max_variations: int = request_limits.MAX_VARIATIONS
    max_steps: int = request_limits.MAX_STEPS
    max_regions: int = request_limits.MAX_REGIONS
    max_prompt_chars: int = request_limits.MAX_PROMPT_CHARS
    max_header_bytes: int = MAX_HEADER_BYTES
    max_loras: int = MAX_LORAS  # added in 1.5

    @property
    def max_frame_bytes(self) -> int:
        """The largest audio frame: ``max_seconds`` at the highest host rate, stereo float32."""
        rate = max(timebase.HOST_SAMPLE_RATES)
        return timebase.seconds_to_samples(self.max_seconds, rate) * timebase.CHANNELS * AUDIO_DTYPE.itemsize


# ---------------------------------------------------------------------------- headers
def encode_header(header: dict[str, Any], encoding: str = "msgpack") -> bytes:
    if encoding == "json":
        return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(header, use_bin_type=True)


def decode_header(data: bytes, max_bytes: int = MAX_HEADER_BYTES) -> tuple[dict[str, Any], str]:
    """Header bytes -> (header map, encoding). Raises ProtocolError bad_header / too_large."""
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"header of {len(data)} bytes is over the {max_bytes}-byte limit")
    if not data:
        raise ProtocolError("bad_header", "header frame is empty; send a msgpack map or JSON object")
    encoding = "json" if data[:1] == b"{" else "msgpack"
    try:
        if encoding == "json":
            header = json.loads(data.decode("utf-8"))
        else:
            # Small container limits: a hostile header cannot make the unpacker allocate much.
            header = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_str_len=max_bytes,
                max_bin_len=max_bytes,
                max_array_len=4096,
                max_map_len=256,
                max_ext_len=0,
            )
    except Exception as err:  # any decoder failure is the client's bad header, never our crash
        raise ProtocolError("bad_header", f"header is not valid {encoding} ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", f"header is a {type(header).__name__}; it must be a map")
    if not isinstance(header.get("type"), str):
        raise ProtocolError("bad_header", "header has no string field 'type'")
    return header, encoding


def major(version: str) -> int:
    return int(str(version).split(".")[0])


def minor(version: str) -> int:
    """The minor of a ``MAJOR.MINOR`` version; 0 when it has none."""
    parts = str(version).split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def check_version(header: dict[str, Any]) -> None:
    version = header.get("v", PROTOCOL_VERSION)
    try:
        ok = isinstance(version, str) and major(version) == major(PROTOCOL_VERSION)
    except ValueError:
        ok = False
    if not ok:
        raise ProtocolError(
            "version_mismatch",
            f"protocol version {version!r} is not compatible with the daemon's {PROTOCOL_VERSION}; "
            f"use a {major(PROTOCOL_VERSION)}.x client",
        )


def request_id_of(header: dict[str, Any]) -> Any:
    """The request's ``request_id`` if it is a valid one, else None (never raises)."""
    value = header.get("request_id")
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


# ---------------------------------------------------------------------------- typed fields
_MISSING = object()


def get_field(header: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """A field of type ``kind`` (int excludes bool; float accepts int; finite only)."""
    value = header.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise ProtocolError("bad_field", f"field {name!r} is missing")
        return default
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError("bad_field", f"field {name!r} must be a finite number, got {_show(value)}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("bad_field", f"field {name!r} must be a whole number, got {_show(value)}")
        return value
    if not isinstance(value, kind):
        raise ProtocolError("bad_field", f"field {name!r} must be {kind.__name__}, got {_show(value)}")
    return value


def _in_range(name: str, value: float, low: float, high: float) -> None:
    try:
        request_limits.check_range(f"field {name!r}", value, low, high)
    except Sa3Error as err:
        raise ProtocolError("bad_field", str(err)) from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def get_job_id(header: dict[str, Any]) -> str:
    job_id = get_field(header, "job_id", str)
    if len(job_id) != JOB_ID_HEX:
        raise ProtocolError("bad_field", f"field 'job_id' {_show(job_id)} is not a {JOB_ID_HEX}-character job id")
    return job_id


def _rate(header: dict[str, Any], name: str, default: int) -> int:
    rate = get_field(header, name, int, default)
    if rate not in timebase.HOST_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in timebase.HOST_SAMPLE_RATES)
        raise ProtocolError("bad_field", f"field {name!r} is {rate}; use one of {rates}")
    return rate


# ---------------------------------------------------------------------------- audio frames
@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    samples: int

    def as_header(self) -> dict[str, int]:
        return {"sample_rate": self.sample_rate, "channels": self.channels, "samples": self.samples}


def pack_audio(audio: np.ndarray) -> bytes:
    """[channels, samples] -> planar little-endian float32 bytes."""
    return np.ascontiguousarray(audio, dtype=AUDIO_DTYPE).tobytes()


def unpack_audio(frame: bytes | memoryview, info: AudioInfo) -> np.ndarray:
    """Frame bytes -> float32 [channels, samples]; raises ProtocolError bad_audio."""
    expected = info.channels * info.samples * AUDIO_DTYPE.itemsize
    if len(frame) != expected:
        raise ProtocolError(
            "bad_audio",
            f"audio frame has {len(frame)} bytes; {info.channels} channels x {info.samples} samples "
            f"of float32 need {expected}",
        )
    audio = np.frombuffer(frame, dtype=AUDIO_DTYPE).reshape(info.channels, info.samples)  # (channels, samples)
    if not np.isfinite(audio).all():
        raise ProtocolError("bad_audio", "audio holds NaN or infinite samples; send finite float32 values")
    return audio.astype(np.float32)


def audio_info(header: dict[str, Any], limits: Limits) -> AudioInfo:
    desc = get_field(header, "audio", dict)
    try:
        rate = _rate(desc, "sample_rate", _MISSING)
        channels = get_field(desc, "channels", int)
        samples = get_field(desc, "samples", int)
    except ProtocolError as err:
        raise ProtocolError("bad_audio", f"audio description: {err.message}") from None
    if channels not in (1, timebase.CHANNELS):
        raise ProtocolError("bad_audio", f"audio has {channels} channels; send 1 (mono) or 2 (stereo)")
    if samples <= 0:
        raise ProtocolError("bad_audio", f"audio has {samples} samples; send at least one")
    if samples > timebase.seconds_to_samples(limits.max_seconds, rate):
        raise ProtocolError(
            "too_large",
            f"audio of {samples / rate:.2f} s is over the daemon's {limits.max_seconds:g} s limit; send less",
        )
    return AudioInfo(rate, channels, samples)


# ---------------------------------------------------------------------------- job requests
@dataclass
class JobRequest:
    """A checked ``generate`` / ``inpaint`` / ``continue`` / ``transform`` request.

    Lengths come in two units: ``model_samples`` at 44.1 kHz (what the pipeline generates: the
    whole clip for generate, the new part for continue) and ``reply_samples`` at ``sample_rate``
    (the exact length of the reply, for generate and continue's new part).
    """

    mode: str
    prompt: str
    sample_rate: int
    seed: int = 0
    variations: int = 1
    steps: int | None = None
    cfg: float | None = None
    progress: bool = True
    model_samples: int = 0
    reply_samples: int = 0
    audio: np.ndarray | None = None  # float32 [channels, samples] at audio_rate, as sent
    audio_rate: int = timebase.SAMPLE_RATE
    regions: list[tuple[int, int]] = field(default_factory=list)  # in samples at audio_rate
    request_id: Any = None
    bpm: float | None = None  # the song's tempo, when sent: the model keeps its beat (downbeat at sample 0)
    meter: str | None = None  # "4/4", "6/8", ... (with bpm)
    scale_lock_db: float | None = None  # None: the model's setting (added in 1.1)
    tail_seconds: float | None = None  # generate only; None: the model's one-shot tail (added in 1.2)
    init_noise_level: float = DEFAULT_INIT_NOISE_LEVEL  # transform only, 0 < level <= 1 (added in 1.4)
    negative_prompt: str | None = None  # what guidance steers away from (added in 1.4)
    model: str | None = None  # a model the daemon serves, by name; None: its default (added in 1.4)
    # LoRA adapters of the server's folder, (name in lower case, strength in [-2, 2]), in the order
    # they apply; [] runs the base model (added in 1.5). The engine resolves the names.
    loras: list[tuple[str, float]] = field(default_factory=list)
    # the requested length without the released models' 6 s of headroom (any mode; added in 1.6):
    # a steering option, so a model whose family lacks it answers invalid_request
    exact_length: bool = False


def _length(header: dict[str, Any], rate: int) -> tuple[int, int]:
    """Exactly one of samples / seconds / bars(+bpm, meter) -> (samples at 44.1 kHz, samples at rate)."""
    given = [name for name in ("samples", "seconds", "bars") if header.get(name) is not None]
    if len(given) != 1:
        raise ProtocolError("bad_field", "give the length as exactly one of 'samples', 'seconds' or 'bars' (+ 'bpm')")
    if given[0] == "samples":
        samples = get_field(header, "samples", int)
        if samples <= 0:
            raise ProtocolError("bad_field", f"field 'samples' is {samples}; it must be more than zero")
        return timebase.seconds_to_samples(samples / rate), samples
    if given[0] == "seconds":
        seconds = get_field(header, "seconds", float)
        if seconds <= 0:
            raise ProtocolError("bad_field", f"field 'seconds' is {seconds!r}; it must be more than zero")
        return timebase.seconds_to_samples(seconds), timebase.seconds_to_samples(seconds, rate)
    bars = get_field(header, "bars", float)
    bpm = get_field(header, "bpm", float)
    meter_text = get_field(header, "meter", str, "4/4")
    if bars <= 0:
        raise ProtocolError("bad_field", f"field 'bars' is {bars!r}; it must be more than zero")
    _in_range("bpm", bpm, timebase.MIN_BPM, timebase.MAX_BPM)
    try:
        meter = timebase.Meter.parse(meter_text)
    except Exception as err:
        raise ProtocolError("bad_field", f"field 'meter': {err}") from None
    return timebase.bars_to_samples(bars, bpm, meter), timebase.bars_to_samples(bars, bpm, meter, rate)


def parse_loras(value: Any, max_loras: int = MAX_LORAS, field_name: str = "loras") -> list[tuple[str, float]]:
    """A job's ``loras`` (a list of ``{name, strength}`` maps, strength 1 when absent) ->
    [(name in lower case, strength)], in order; ProtocolError ``bad_field`` naming what is wrong.
    Whether the names exist and fit the job's model is the engine's check."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(
            "bad_field", f"field {field_name!r} must be a list of {{name, strength}} maps ([] for none)"
        )
    if len(value) > max_loras:
        raise ProtocolError("bad_field", f"field {field_name!r} names {len(value)} adapters; the limit is {max_loras}")
    loras: list[tuple[str, float]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ProtocolError(
                "bad_field", f"field {field_name!r} holds {_show(entry)}; each entry is a {{name, strength}} map"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ProtocolError("bad_field", f"each entry of {field_name!r} needs a 'name' (text), got {_show(name)}")
        name = name.strip().lower()
        strength = entry.get("strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise ProtocolError(
                "bad_field", f"LoRA {name!r}: strength must be a number from -2 to 2, got {_show(strength)}"
            )
        if abs(strength) > MAX_LORA_STRENGTH:
            raise ProtocolError(
                "bad_field", f"LoRA {name!r}: strength {strength:g} is outside -2..2; use -2 to 2 (1 = as trained)"
            )
        if any(name == seen for seen, _ in loras):
            raise ProtocolError("bad_field", f"field {field_name!r} names {name!r} twice; give each adapter once")
        loras.append((name, strength))
    return loras


def _regions(header: dict[str, Any], info: AudioInfo, limits: Limits) -> list[tuple[int, int]]:
    given = [name for name in ("regions", "regions_seconds") if header.get(name) is not None]
    if len(given) != 1:
        raise ProtocolError("bad_field", "inpaint needs exactly one of 'regions' (samples) or 'regions_seconds'")
    name = given[0]
    pairs = get_field(header, name, list)
    if not 1 <= len(pairs) <= limits.max_regions:
        raise ProtocolError("bad_field", f"field {name!r} has {len(pairs)} regions; send 1 to {limits.max_regions}")
    regions = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ProtocolError("bad_field", f"field {name!r} holds {_show(pair)}; each region is [start, end]")
        span = {"start": pair[0], "end": pair[1]}
        if name == "regions":
            start, end = get_field(span, "start", int), get_field(span, "end", int)
        else:
            start_s, end_s = get_field(span, "start", float), get_field(span, "end", float)
            if start_s < 0 or end_s < 0:
                raise ProtocolError("bad_field", f"region {_show(pair)} s has a negative time")
            start = timebase.seconds_to_samples(start_s, info.sample_rate)
            end = timebase.seconds_to_samples(end_s, info.sample_rate)
        if not 0 <= start < end <= info.samples:
            raise ProtocolError(
                "bad_field",
                f"region {_show(pair)} is empty or outside the audio (0 to {info.samples} samples at {info.sample_rate} Hz)",
            )
        regions.append((start, end))
    regions.sort()
    for (_, left_end), (right_start, _) in zip(regions, regions[1:]):
        if right_start < left_end:
            raise ProtocolError("bad_field", f"regions overlap at sample {right_start}; merge them into one")
    return regions


def parse_job(header: dict[str, Any], frames: list[bytes], limits: Limits) -> JobRequest:
    """Check a job request's header and audio frames (the frames after the header)."""
    mode = header["type"]
    wants_audio = mode != "generate"
    given_length = mode in ("generate", "continue")  # inpaint and transform keep the input's length
    if len(frames) != int(wants_audio):
        raise ProtocolError("bad_frames", f"{mode} takes {int(wants_audio)} audio frame(s), got {len(frames)}")
    prompt = get_field(header, "prompt", str)
    if len(prompt) > limits.max_prompt_chars:
        raise ProtocolError("bad_field", f"prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}")
    job = JobRequest(mode=mode, prompt=prompt, sample_rate=timebase.SAMPLE_RATE, request_id=request_id_of(header))
    job.negative_prompt = get_field(header, "negative_prompt", str, None)
    if job.negative_prompt is not None and len(job.negative_prompt) > limits.max_prompt_chars:
        raise ProtocolError(
            "bad_field",
            f"negative_prompt has {len(job.negative_prompt)} characters; the limit is {limits.max_prompt_chars}",
        )
    job.model = get_field(header, "model", str, None)
    job.loras = parse_loras(header.get("loras"), limits.max_loras)
    if wants_audio:
        info = audio_info(header, limits)
        job.audio = unpack_audio(frames[0], info)
        job.audio_rate = info.sample_rate
    job.sample_rate = _rate(header, "sample_rate", job.audio_rate)
    job.seed = get_field(header, "seed", int, 0)
    _in_range("seed", job.seed, 0, MAX_SEED)
    job.variations = get_field(header, "variations", int, 1)
    _in_range("variations", job.variations, 1, limits.max_variations)
    job.steps = get_field(header, "steps", int, None)
    if job.steps is not None:
        _in_range("steps", job.steps, 1, limits.max_steps)
    job.cfg = get_field(header, "cfg", float, None)
    if job.cfg is not None:
        _in_range("cfg", job.cfg, 0.0, MAX_CFG)
    job.progress = get_field(header, "progress", bool, True)
    job.exact_length = get_field(header, "exact_length", bool, False)
    job.scale_lock_db = get_field(header, "scale_lock_db", float, None)
    if job.scale_lock_db is not None:
        _in_range("scale_lock_db", job.scale_lock_db, 0.0, MAX_SCALE_LOCK_DB)
    job.bpm = get_field(header, "bpm", float, None)
    if job.bpm is not None:
        _in_range("bpm", job.bpm, timebase.MIN_BPM, timebase.MAX_BPM)
        job.meter = get_field(header, "meter", str, "4/4")
        try:
            timebase.Meter.parse(job.meter)
        except Exception as err:
            raise ProtocolError("bad_field", f"field 'meter': {err}") from None
    total_seconds = 0.0
    if given_length:
        job.model_samples, job.reply_samples = _length(header, job.sample_rate)
        total_seconds += job.model_samples / timebase.SAMPLE_RATE
    job.tail_seconds = get_field(header, "tail_seconds", float, None)
    if job.tail_seconds is not None:
        if mode != "generate":
            raise ProtocolError("bad_field", f"field 'tail_seconds' applies to generate jobs, not {mode}")
        if not 0.0 <= job.tail_seconds < job.model_samples / timebase.SAMPLE_RATE:
            raise ProtocolError(
                "bad_field",
                f"field 'tail_seconds' is {job.tail_seconds!r}; use 0 (none) up to less than the take's "
                f"{job.model_samples / timebase.SAMPLE_RATE:.3g} s",
            )
    if mode == "inpaint":
        job.regions = _regions(header, info, limits)
    level = get_field(header, "init_noise_level", float, None)
    if level is not None:
        if mode != "transform":
            raise ProtocolError("bad_field", f"field 'init_noise_level' applies to transform jobs, not {mode}")
        try:
            job.init_noise_level = request_limits.check_init_noise_level(level, "field 'init_noise_level'")
        except Sa3Error as err:
            raise ProtocolError("bad_field", str(err)) from None
    if job.audio is not None:
        total_seconds += job.audio.shape[1] / job.audio_rate
    if total_seconds > limits.max_seconds + 1e-9:
        raise ProtocolError(
            "too_long",
            f"this job involves {total_seconds:.2f} s of audio, over the daemon's {limits.max_seconds:g} s limit; "
            "ask for less",
        )
    return job


def unpack_result(header: dict[str, Any], frames: list[bytes]) -> np.ndarray:
    """A ``result`` message -> float32 [variations, 2, samples] at ``header['audio']['sample_rate']``."""
    info = AudioInfo(**{k: header["audio"][k] for k in ("sample_rate", "channels", "samples")})
    if len(frames) != header["variations"]:
        raise ProtocolError("bad_frames", f"result announces {header['variations']} takes but has {len(frames)}")
    return np.stack([unpack_audio(frame, info) for frame in frames])
