"""The contract's job requests (docs/http.md) -> checked :class:`~bridge.protocol.JobRequest`s.

One function per endpoint reads the JSON body: unknown fields are ignored; ``seconds`` stands in
for ``duration`` and ``dist_shift`` for ``shift`` when the newer field is absent, as older
clients send them; numbers may come as numeric strings. Every problem is an :class:`Sa3Error`
whose one line names the field and what to send (the front end answers it with 400).

Lengths are exact at 44.1 kHz: ``duration`` is the whole take (``round(duration * 44100)``
frames), a loop is ``bars`` at ``bpm`` in ``meter`` (4/4 unless sent) to the sample, a transform
keeps its input's duration, and a continuation returns the source, sample for sample, followed by
``continuation_seconds`` of new audio.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sa3core import timebase
from sa3core.errors import Sa3Error

from .. import protocol as P
from . import wav
from .loras import LoraRequest, parse_requests

CONTRACT_MAX_SECONDS = 300.0  # the clients' limit; a server's --max-seconds may lower it
DEFAULT_DURATION = 30.0
DEFAULT_LOOP_BARS = 8
DEFAULT_STRENGTH = 0.9  # transform's init noise
MIN_STRENGTH = 0.01
DEFAULT_CONTINUATION_SECONDS = 8.0
MAX_TAIL_PAD_SECONDS = 60.0
RANDOM_SEEDS = 100_000  # seed -1 (or any negative) draws one of 0..99999, as the reference does
SHIFTS = ("default", "none", "logsnr", "flux", "full")
CONTINUATION_MODES = ("inpaint", "latent_prefix")
BPM_IN_PROMPT = re.compile(r"(\d+(?:\.\d+)?)\s*bpm", re.IGNORECASE)


@dataclass
class Submission:
    """A checked contract request: the job, what the submit reply echoes, and what meta adds."""

    kind: str  # generate | loop | transform | continue
    request: P.JobRequest
    model: str
    echo: dict[str, Any]  # added to the submit reply and kept under meta[kind] (loop/transform/continue)
    loras: list[LoraRequest] = field(default_factory=list)
    shift: str = "default"
    sampler_type: str | None = None


# ---------------------------------------------------------------------------- fields
def number(body: dict, name: str, default: float | None = None) -> float | None:
    """A finite number (JSON number or numeric string); ``default`` when absent, null or ""."""
    value = body.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Sa3Error(f"field {name!r} must be a number, got {_show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Sa3Error(f"field {name!r} must be a finite number, got {_show(value)}")
    return float(value)


def whole(body: dict, name: str, default: int | None = None) -> int | None:
    value = number(body, name, None)
    if value is None:
        return default
    if value != int(value):
        raise Sa3Error(f"field {name!r} must be a whole number, got {_show(body.get(name))}")
    return int(value)


def text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Sa3Error(f"field {name!r} must be text, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _in_range(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    if not low <= value <= high:
        raise Sa3Error(f"field {name!r} is {value:g}{unit}; use {low:g} to {high:g}{unit}")


def resolve_seed(body: dict) -> int:
    """``seed`` as sent; -1 (any negative) or absent: a random one of 0..99999."""
    seed = whole(body, "seed", -1)
    if seed < 0:
        return secrets.randbelow(RANDOM_SEEDS)
    if seed > P.MAX_SEED:
        raise Sa3Error(f"field 'seed' is {seed}; use 0 to {P.MAX_SEED}, or -1 for a random one")
    return seed


def bpm_of(body: dict, prompt: str) -> tuple[float | None, str]:
    """The tempo: the ``bpm`` field, else the first ``N bpm`` in the prompt (None when neither, or
    when the prompt's is out of range); and where it came from."""
    sent = number(body, "bpm")
    if sent is not None:
        _in_range("bpm", sent, timebase.MIN_BPM, timebase.MAX_BPM, " bpm")
        return sent, "field"
    match = BPM_IN_PROMPT.search(prompt)
    if match and timebase.MIN_BPM <= float(match.group(1)) <= timebase.MAX_BPM:
        return float(match.group(1)), "prompt"
    return None, "none"


def meter_of(body: dict) -> str:
    meter = text(body, "meter") or "4/4"
    return str(timebase.Meter.parse(meter))  # Sa3Error names a bad one


def limit_for(limits: P.Limits) -> float:
    return min(CONTRACT_MAX_SECONDS, limits.max_seconds)


# ---------------------------------------------------------------------------- the common part
def _common(kind: str, body: dict, engine) -> tuple[P.JobRequest, str, list[LoraRequest], str, str | None]:
    if not isinstance(body, dict):
        raise Sa3Error("the body must be a JSON object")
    if body.get("init_path") is not None:
        raise Sa3Error(
            "field 'init_path' (a file on the server) is not taken; send the audio itself as base64 WAV "
            "in 'audio_data' to /transform or /continue"
        )
    try:
        model = engine.model_named(text(body, "model"))
    except P.ProtocolError as err:
        raise Sa3Error(err.message) from None
    limits = engine.model_limits[model]
    prompt = (text(body, "prompt") or "").strip()
    if not prompt:
        raise Sa3Error("field 'prompt' is required: describe the sound to make")
    if len(prompt) > limits.max_prompt_chars:
        raise Sa3Error(f"field 'prompt' has {len(prompt)} characters; the limit is {limits.max_prompt_chars}")
    negative = (text(body, "negative_prompt") or "").strip() or None
    if negative is not None and len(negative) > limits.max_prompt_chars:
        raise Sa3Error(
            f"field 'negative_prompt' has {len(negative)} characters; the limit is {limits.max_prompt_chars}"
        )
    request = P.JobRequest(mode=kind, prompt=prompt, sample_rate=timebase.SAMPLE_RATE, negative_prompt=negative)
    request.model = model
    request.seed = resolve_seed(body)
    request.steps = whole(body, "steps")
    if request.steps is not None:
        _in_range("steps", request.steps, 1, limits.max_steps)
    request.cfg = number(body, "cfg_scale")
    if request.cfg is not None:
        _in_range("cfg_scale", request.cfg, 0.0, P.MAX_CFG)
    shift_field = "shift" if body.get("shift") not in (None, "") else "dist_shift"
    shift = (text(body, shift_field) or "default").strip().lower()
    if shift not in SHIFTS:
        raise Sa3Error(f"field {shift_field!r} is {_show(body.get(shift_field))}; use one of {', '.join(SHIFTS)}")
    sampler_type = text(body, "sampler_type")
    loras = parse_requests(body)
    request.loras = [(lora.name, lora.strength) for lora in loras]  # the engine resolves the names
    request.bpm, _ = bpm_of(body, prompt)
    if request.bpm is not None:
        request.meter = meter_of(body)
    return request, model, loras, shift, sampler_type


def _too_long(what: str, seconds: float, limit: float) -> Sa3Error:
    return Sa3Error(f"{what} is {seconds:.3f} s, over this server's {limit:g} s limit; ask for less")


def _audio(body: dict, limit: float) -> tuple[Any, int, Any]:
    """The uploaded WAV: (as in the file [channels, frames], its rate, stereo 44.1 kHz [2, n])."""
    if body.get("audio_data") in (None, ""):
        raise Sa3Error("field 'audio_data' is required: the source audio as a base64-encoded WAV file")
    audio, rate = wav.decode(body["audio_data"])
    seconds = audio.shape[1] / rate
    if seconds > limit + 1e-9:
        raise _too_long("the audio in 'audio_data'", seconds, limit)
    return audio, rate, wav.to_model(audio, rate)


# ---------------------------------------------------------------------------- endpoints
def generate(body: dict, engine) -> Submission:
    """POST /generate: ``duration`` seconds (the whole take; ``seconds`` if absent; the C++
    server's ``target_samples`` wins when sent), default 30."""
    request, model, loras, shift, sampler = _common("generate", body, engine)
    limit = limit_for(engine.model_limits[model])
    target = whole(body, "target_samples")
    if target is not None:
        if target <= 0:
            raise Sa3Error(f"field 'target_samples' is {target}; it must be more than zero")
        duration = target / timebase.SAMPLE_RATE
    else:
        duration = number(body, "duration") if body.get("duration") not in (None, "") else number(body, "seconds")
        duration = DEFAULT_DURATION if duration is None else duration
        if duration <= 0:
            raise Sa3Error(f"field 'duration' is {duration:g} s; it must be more than zero")
        target = timebase.seconds_to_samples(duration)
    if duration > limit + 1e-9:
        raise _too_long("field 'duration'", duration, limit)
    request.model_samples = request.reply_samples = target
    echo = {
        "prompt": request.prompt,
        "duration": round(duration, 6),
        "tail_pad": 0.0,  # sa3 makes the exact length: nothing rendered past it, nothing cut
        "gen_duration": round(duration, 6),
        "target_samples": target,
    }
    return Submission("generate", request, model, echo, loras, shift, sampler)


def loop(body: dict, engine) -> Submission:
    """POST /generate/loop: ``bars`` (default 8, any number above 0) at ``bpm`` (the field, else the
    first ``N bpm`` in the prompt) in ``meter`` (default 4/4), to the sample."""
    request, model, loras, shift, sampler = _common("generate", body, engine)
    if request.bpm is None:
        raise Sa3Error(
            f"a loop needs a tempo: send 'bpm' ({timebase.MIN_BPM:g}-{timebase.MAX_BPM:g}) or put '120 bpm' in the prompt"
        )
    bars = number(body, "bars", DEFAULT_LOOP_BARS)
    if bars <= 0:
        raise Sa3Error(f"field 'bars' is {bars:g}; it must be more than zero")
    meter = timebase.Meter.parse(request.meter)
    seconds = timebase.bars_to_seconds(bars, request.bpm, meter)
    limit = limit_for(engine.model_limits[model])
    if seconds > limit + 1e-9:
        raise _too_long(f"{bars:g} bars of {meter} at {request.bpm:g} bpm", seconds, limit)
    target = timebase.bars_to_samples(bars, request.bpm, meter)
    request.model_samples = request.reply_samples = target
    if "tail_seconds" in engine.models[model].family.hooks:
        request.tail_seconds = 0.0  # a loop runs on into its own start: no one-shot silence at its end
    echo = {
        "bpm": request.bpm,
        "bars": int(bars) if bars == int(bars) else bars,
        "meter": str(meter),
        "seconds_per_bar": round(timebase.bar_seconds(request.bpm, meter), 6),
        "loop_duration": round(seconds, 6),
        "gen_duration": round(seconds, 6),
        "target_samples": target,
    }
    return Submission("loop", request, model, echo, loras, shift, sampler)


def transform(body: dict, engine) -> Submission:
    """POST /transform: the uploaded WAV made again after the prompt, ``strength`` (default 0.9,
    held to 0.01..1) being how much noise replaces it; the output has the input's duration."""
    request, model, loras, shift, sampler = _common("transform", body, engine)
    limit = limit_for(engine.model_limits[model])
    strength = number(body, "strength", DEFAULT_STRENGTH)
    strength = min(1.0, max(MIN_STRENGTH, strength))
    given, rate, audio = _audio(body, limit)
    request.audio, request.audio_rate, request.init_noise_level = audio, timebase.SAMPLE_RATE, strength
    echo = {
        "strength": strength,
        "input_duration": round(given.shape[1] / rate, 6),
        "input_sr": rate,
        "input_channels": given.shape[0],
        "target_samples": audio.shape[1],
    }
    return Submission("transform", request, model, echo, loras, shift, sampler)


def continue_(body: dict, engine) -> Submission:
    """POST /continue: the uploaded WAV followed by ``continuation_seconds`` (default 8) of new
    audio: ``round((source + continuation) * 44100)`` frames, the source first, kept sample-exact."""
    request, model, loras, shift, sampler = _common("continue", body, engine)
    limit = limit_for(engine.model_limits[model])
    mode = (text(body, "continuation_mode") or "inpaint").strip().lower()
    if mode not in CONTINUATION_MODES:
        raise Sa3Error(
            f"field 'continuation_mode' is {_show(body.get('continuation_mode'))}; use inpaint or latent_prefix"
        )
    continuation = number(body, "continuation_seconds", DEFAULT_CONTINUATION_SECONDS)
    if continuation <= 0:
        raise Sa3Error(f"field 'continuation_seconds' is {continuation:g}; it must be more than zero")
    tail_pad = number(body, "tail_pad_seconds")
    if tail_pad is not None:
        _in_range("tail_pad_seconds", tail_pad, 0.0, MAX_TAIL_PAD_SECONDS, " s")
    given, rate, audio = _audio(body, limit)
    source_seconds = given.shape[1] / rate
    total_seconds = source_seconds + continuation
    if total_seconds > limit + 1e-9:
        raise _too_long("the source plus 'continuation_seconds'", total_seconds, limit)
    total = timebase.seconds_to_samples(total_seconds)
    new = total - audio.shape[1]
    if new < 1:
        raise Sa3Error(f"field 'continuation_seconds' is {continuation:g}; that is less than one sample at 44.1 kHz")
    request.audio, request.audio_rate = audio, timebase.SAMPLE_RATE
    request.model_samples = request.reply_samples = new
    echo = {
        "mode": mode,
        "source_duration": round(source_seconds, 6),
        "continuation_seconds": round(continuation, 6),
        "total_duration": round(total_seconds, 6),
        "mask_start_seconds": round(audio.shape[1] / timebase.SAMPLE_RATE, 6),
        "mask_end_seconds": round(total / timebase.SAMPLE_RATE, 6),
        "source_samples": audio.shape[1],
        "input_sr": rate,
        "input_channels": given.shape[0],
        "target_samples": total,
    }
    return Submission("continue", request, model, echo, loras, shift, sampler)


ENDPOINTS = {
    "/generate": generate,
    "/generate/loop": loop,
    "/transform": transform,
    "/continue": continue_,
}
