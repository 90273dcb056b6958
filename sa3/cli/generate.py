"""``sa3 generate``, ``sa3 inpaint``, ``sa3 continue`` and ``sa3 transform``.

Everything a person typed is checked before the model loads, so a typo costs no time and
never leaves a file behind.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from sa3core import limits, timebase
from sa3core.audio import check_output_path, read_audio, resample_to_length, save_audio
from sa3core.errors import Sa3Error

from . import threads


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="output file (.wav, .flac, .aiff)")
    parser.add_argument("--steps", type=int, help=f"sampler steps, 1 to {limits.MAX_STEPS} (default: the model's own)")
    parser.add_argument(
        "--cfg",
        type=float,
        help=f"classifier-free guidance scale, 0 to {limits.MAX_CFG:g} (1 = off; default: the model's)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"random seed, 0 to {limits.MAX_SEED}; the same seed gives the same audio (default 0)",
    )
    parser.add_argument(
        "--variations",
        type=int,
        default=1,
        help=f"how many takes, 1 to {limits.MAX_VARIATIONS}; files get -1, -2, ... suffixes (take k has seed + k - 1)",
    )
    parser.add_argument(
        "--negative-prompt",
        metavar="TEXT",
        help="what guidance steers away from (used when --cfg is not 1, as for base models; default: none)",
    )
    parser.add_argument(
        "--model",
        help="model folder or released model name, e.g. small-music (default: the model shipped with sa3); "
        "with --daemon, the name of a model the daemon serves (default: its first)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="a LoRA adapter (.safetensors in the official format) at a strength from -2 to 2 (default 1); "
        "repeatable, applied in the order given",
    )
    parser.add_argument("--backend", default="torch", help="torch (default) or onnx")
    parser.add_argument("--daemon", metavar="ENDPOINT", help="render through a running `sa3 serve` daemon instead")
    parser.add_argument(
        "--sample-rate",
        type=int,
        help="output sample rate in Hz (default: 44100 for generate; the input's own rate for inpaint and continue)",
    )
    parser.add_argument(
        "--bit-depth", default="24", choices=["16", "24", "float"], help="output sample format (default 24)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 matmuls (the default on CPUs with AVX-512 bf16, where it is faster)"
    )
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="float32 matmuls, the official numerics (the default runs bf16 where the CPU has it, "
        "and a released model's DiT in int8 on other x86 CPUs)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="a released model's DiT block linears in int8 (the default on x86 CPUs without AVX-512 bf16)",
    )
    parser.add_argument(
        "--phase-iterations",
        type=int,
        metavar="N",
        help="Griffin-Lim iterations on the decoder's phases (default: the model's, 8 for the shipped model; "
        "0 is about 0.3 s faster for 8 s of audio, with notes less clean)",
    )
    parser.add_argument(
        "--scale-lock",
        type=float,
        metavar="DB",
        help='keep notes in a key the prompt names ("in D minor"): dB per sampler step by which notes '
        "outside its scale are turned down (default: the model's, 12 for the shipped model; 0 = off)",
    )
    parser.add_argument(
        "--exact-length",
        action="store_true",
        help="released Stable Audio 3 models: make exactly the requested length instead of the released "
        "6 s of headroom (faster for short takes; the models were trained with the headroom, so the sound "
        "can differ; sa3's own models always make the exact length)",
    )
    threads.add_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _tempo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bpm", type=float, help="song tempo in quarter notes per minute (enables bar lengths and bar.beat positions)"
    )
    parser.add_argument("--meter", default="4/4", help="time signature, e.g. 4/4, 3/4, 6/8 (default 4/4)")


def register(subparsers) -> None:
    gen = subparsers.add_parser("generate", help="text to audio of an exact length in seconds or bars")
    gen.add_argument("prompt", help='what to make, e.g. "warm Rhodes chords in D minor, laid-back"')
    length = gen.add_mutually_exclusive_group(required=True)
    length.add_argument("--seconds", type=float, help="length in seconds")
    length.add_argument("--bars", type=float, help="length in bars (needs --bpm; --meter defaults to 4/4)")
    _tempo(gen)
    gen.add_argument(
        "--warp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make a known tempo on the model's latent frame grid, then warp the take to it "
        "(default: the model's tempo_grid setting, on for the shipped model)",
    )
    gen.add_argument(
        "--tail",
        type=float,
        metavar="SECONDS",
        help="end the take in this much digital silence, the sound decaying into it (default: the model's "
        "one-shot tail for prompts that read as one-shots, e.g. 'kick hit', 'G minor chord stab', 'snare "
        "one-shot': 0.1 s for the shipped model; 0 = none)",
    )
    _common(gen)
    gen.set_defaults(func=run_generate)

    inp = subparsers.add_parser("inpaint", help="regenerate regions of a file, keeping the rest sample-exact")
    inp.add_argument("input", help="source audio file")
    inp.add_argument("prompt", help="what the regions should become")
    inp.add_argument(
        "--region",
        action="append",
        required=True,
        metavar="START:END",
        help="span to regenerate, in seconds (2.0:4.5) or, with --bpm, bar.beat (5.1:9.1); repeatable",
    )
    _tempo(inp)
    _common(inp)
    inp.set_defaults(func=run_inpaint)

    cont = subparsers.add_parser("continue", help="extend a file with new audio that follows on")
    cont.add_argument("input", help="source audio file")
    cont.add_argument("prompt", help="what comes next")
    length = cont.add_mutually_exclusive_group(required=True)
    length.add_argument("--seconds", type=float, help="seconds of new audio")
    length.add_argument("--bars", type=float, help="bars of new audio (needs --bpm)")
    _tempo(cont)
    _common(cont)
    cont.set_defaults(func=run_continue)

    tra = subparsers.add_parser("transform", help="make a file again after a prompt (audio-to-audio), same length")
    tra.add_argument("input", help="source audio file")
    tra.add_argument("prompt", help="what the audio should become")
    tra.add_argument(
        "--init-noise-level",
        type=float,
        default=0.9,
        metavar="X",
        help="how much of the input to let go, above 0 to 1 (near 0: close to the input; 1: only its length "
        "is kept; default 0.9, as the official Stable Audio 3 command)",
    )
    _tempo(tra)
    _common(tra)
    tra.set_defaults(func=run_transform)


def _length_samples(args, rate: int = timebase.SAMPLE_RATE) -> int:
    """--seconds or --bars as a sample count at ``rate``."""
    if args.bars is not None:
        if args.bpm is None:
            raise Sa3Error("--bars needs --bpm (the song tempo), e.g. --bars 4 --bpm 120")
        return timebase.bars_to_samples(args.bars, args.bpm, timebase.Meter.parse(args.meter), rate)
    if args.seconds is None or args.seconds <= 0:
        raise Sa3Error(f"--seconds must be longer than zero (got {args.seconds})")
    return timebase.seconds_to_samples(args.seconds, rate)


def _outputs(args) -> list[Path]:
    """The output files, each checked (not a folder, free unless --overwrite, writable) before
    the model loads: a bad path costs nothing and writes nothing."""
    if args.sample_rate is not None and args.sample_rate not in timebase.HOST_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in timebase.HOST_SAMPLE_RATES)
        raise Sa3Error(f"--sample-rate {args.sample_rate} is not supported; use one of {rates}")
    base = Path(args.output)
    paths = (
        [base]
        if args.variations == 1
        else [base.with_name(f"{base.stem}-{k + 1}{base.suffix}") for k in range(args.variations)]
    )
    return [check_output_path(p, args.overwrite) for p in paths]


def _check_common(args) -> None:
    # The limits the daemon enforces too (sa3core.limits): a request works the same either way.
    limits.check_prompt(args.prompt, "the prompt")
    if args.negative_prompt is not None:
        limits.check_prompt(args.negative_prompt, "--negative-prompt")  # --daemon: protocol 1.4
    limits.check_seed(args.seed, "--seed")
    limits.check_variations(args.variations, "--variations")
    limits.check_steps(args.steps, "--steps")
    limits.check_cfg(args.cfg, "--cfg")
    limits.check_scale_lock(args.scale_lock, "--scale-lock")
    threads.check(args.threads, args.daemon)
    _check_precision(args)
    if not args.daemon:
        from sa3core.backends import BACKENDS

        BACKENDS.check(args.backend)
    if args.bpm is not None:
        timebase.check_bpm(args.bpm)
    timebase.Meter.parse(args.meter)
    if args.phase_iterations is not None:
        if args.phase_iterations < 0:
            raise Sa3Error(f"--phase-iterations must be 0 or more (got {args.phase_iterations})")
        if args.daemon:
            raise Sa3Error("--phase-iterations needs in-process generation (a daemon uses its model's setting)")
    args.loras = _loras(args)
    if args.model is not None and args.daemon:  # the name of a model the daemon serves (protocol 1.4)
        if not args.model.strip():
            raise Sa3Error("--model is empty; name a model the daemon serves (`sa3 serve` lists them at start)")
    elif args.model is not None:  # a folder, or a released model's name resolved from the Hugging Face cache
        from sa3core.hub import resolve_model

        args.model = str(resolve_model(args.model))


def _check_precision(args) -> None:
    asked = [flag for flag in ("--bf16", "--fp32", "--int8") if getattr(args, flag[2:])]
    if len(asked) > 1:
        raise Sa3Error(f"{' and '.join(asked)} are different precisions; give one of them")
    if asked and args.daemon:
        raise Sa3Error(f"{asked[0]} applies to in-process generation; a daemon's precision is set when it starts (`sa3 serve --fp32`)")  # fmt: skip
    if asked and args.backend != "torch":
        raise Sa3Error(f"{asked[0]} is for the torch backend; the {args.backend} backend has its own precision")


def _loras(args) -> list:
    """``--lora`` specs as (path, strength), checked before any model loads (a missing file, a
    strength outside -2..2, a file that is not a LoRA: one line each). With ``--daemon`` a spec is
    ``NAME[:STRENGTH]``, an adapter of the daemon's LoRA folder by name: (name, strength)."""
    if args.daemon:
        return [_daemon_lora(text) for text in args.lora]
    from sa3core.lora import parse_spec, read_lora

    loras = [parse_spec(text) for text in args.lora]
    if loras and args.backend != "torch":
        raise Sa3Error(f"--lora needs the torch backend, not {args.backend!r}")
    for path, _ in loras:
        read_lora(path)  # the format, the config and the tensors' shapes among themselves
    return loras


def _daemon_lora(text: str) -> tuple[str, float]:
    """``NAME[:STRENGTH]`` for ``--daemon``: a name in the daemon's LoRA folder (``NAME.safetensors``
    is that name too), strength -2..2 (default 1); a path is one line saying what to send instead."""
    from sa3core.limits import check_range

    name, sep, tail = text.rpartition(":")
    try:
        strength = float(tail) if sep else None
    except ValueError:
        strength = None
    if strength is None:
        name, strength = text, 1.0
    else:
        check_range(f"--lora {text!r}: the strength", strength, -2.0, 2.0)
    name = name.strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not name or "/" in name or "\\" in name:
        raise Sa3Error(
            f"--lora {text!r}: with --daemon, name an adapter in the daemon's LoRA folder (NAME[:STRENGTH], "
            "e.g. --lora dusty-tape:0.7; `sa3 serve` lists them), not a file"
        )
    return name, strength


def _pipeline(args):
    from sa3core.pipeline import Pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = threads.apply(args.threads, args.backend)
        if args.bf16 or args.fp32:
            options["bf16"] = not args.fp32
        if args.int8:
            options["int8"] = True
        if args.phase_iterations is not None:
            options["phase_iterations"] = args.phase_iterations
        if args.loras:
            options["loras"] = args.loras
        pipeline = Pipeline.load(args.model, backend=args.backend, **options)
    for warning in caught:
        print(f"sa3: warning: {warning.message}", file=sys.stderr)
    return pipeline


class _Bar:
    """A tqdm bar fed by the sampler's progress callback; ``steps`` is its total from the start
    (the sampler's own count, when it reports, wins)."""

    def __init__(self, quiet: bool, label: str, steps: int) -> None:
        from tqdm import tqdm

        self.bar = None if quiet else tqdm(total=steps, desc=label, unit="step", leave=False)

    def __call__(self, step: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = step
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _comment(mode: str, recipe: dict, seed: int, batch_seed=None, batch_size=None, **request) -> str:
    """The take's comment: what makes it again, as key=value words (values left None are left out)."""

    def shown(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return format(value, "g") if isinstance(value, float) else str(value)

    fields = {"seed": seed, "batch_seed": batch_seed, "batch_size": batch_size, **recipe, **request}
    return f"sa3 {mode} " + " ".join(f"{key}={shown(value)}" for key, value in fields.items() if value is not None)


def _write(args, outputs: list[Path], audio, mode: str, recipe: dict, rate: int, started: float, **request) -> None:
    """Write each take at ``rate`` with its comment; a near-silent take gets a one-line warning."""
    from sa3core.level import NEAR_SILENT_DBTP, gain_to_db, is_near_silent, true_peak_db

    music = {"bpm": args.bpm, "meter": args.meter if args.bpm is not None else None}
    # Take k is seed + k; made alone, that seed gives nearly the same take, but a batch's numbers
    # differ from a lone take's, so bit for bit it is the batch's take k: say which batch.
    batch = {"batch_seed": args.seed, "batch_size": args.variations} if args.variations > 1 else {}
    for k, (path, take) in enumerate(zip(outputs, audio)):
        comment = _comment(mode, recipe, args.seed + k, **batch, **music, **request, sample_rate=rate)
        save_audio(
            path,
            take,
            rate,
            args.bit_depth,
            overwrite=args.overwrite,
            tags={"title": args.prompt[:200], "comment": comment, "software": "sa3"},
        )
        print(f"wrote {path} ({take.shape[1]} samples, {take.shape[1] / rate:.3f} s at {rate} Hz)")
        # The true peak is never below the sample peak: only a quiet take needs the oversampled one.
        loud = not is_near_silent(gain_to_db(float(np.abs(take).max())))
        peak = None if loud else true_peak_db(take)
        if peak is not None and is_near_silent(peak):
            print(
                f"sa3: warning: {path} is near-silent (true peak {peak:.1f} dBTP, under {NEAR_SILENT_DBTP:g}); "
                "try another --seed or a fuller prompt",
                file=sys.stderr,
            )
    print(f"done in {time.perf_counter() - started:.2f} s", file=sys.stderr)


def _render(args, started: float, outputs: list[Path], label: str, mode: str, in_process, rate: int, **request) -> int:
    """Run one request in-process (``in_process(pipeline, progress)`` -> (takes at ``rate``,
    the pipeline's recipe)) or through ``--daemon`` (``request["settle"]`` brings its 44.1 kHz
    takes to ``rate``), then write the takes."""
    settle, comment = request.pop("settle"), request.pop("comment", {})
    if args.daemon:
        from bridge.client import generate_via_daemon

        result = settle(generate_via_daemon(args.daemon, mode, prompt=args.prompt, args=args, **request))
        recipe = {"daemon": args.daemon, "steps": args.steps, "cfg": args.cfg, "scale_lock_db": args.scale_lock}
        recipe["loras"] = ",".join(f"{name}:{strength:g}" for name, strength in args.loras) or None
    else:
        pipeline = _pipeline(args)
        bar = _Bar(args.quiet, label, args.steps or pipeline.settings.steps)
        try:
            result, recipe = in_process(pipeline, bar)
        finally:
            bar.close()
    _write(args, outputs, result, mode, recipe, rate, started, **comment)
    return 0


def _music(args) -> dict:
    """--bpm / --meter for the model's beat (the prompt's own "120 bpm" counts when --bpm is absent)."""
    return {"bpm": args.bpm, "meter": args.meter} if args.bpm is not None else {}


def run_generate(args) -> int:
    started = time.perf_counter()
    _check_common(args)
    rate = args.sample_rate or timebase.SAMPLE_RATE
    samples = _length_samples(args, rate)
    model = _length_samples(args)  # the same length at the model's 44.1 kHz
    outputs = _outputs(args)

    if args.warp is not None and args.daemon:
        raise Sa3Error(
            "--warp/--no-warp apply to in-process generation; drop them or --daemon (it uses its model's setting)"
        )
    if args.tail is not None:
        from sa3core.families.sa3 import check_tail

        check_tail(args.tail, "--tail", model)

    def in_process(pipeline, bar):
        takes = pipeline.generate(
            args.prompt, samples, args.steps, args.cfg, args.seed, args.variations, progress=bar,
            tempo_grid=args.warp, scale_lock_db=args.scale_lock, tail_seconds=args.tail, sample_rate=rate,
            negative_prompt=args.negative_prompt, exact_length=args.exact_length or None,
            **_music(args),
        )  # fmt: skip
        return takes, pipeline.recipe(
            args.prompt,
            args.steps,
            args.cfg,
            model,
            scale_lock_db=args.scale_lock,
            tempo_grid=args.warp,
            tail_seconds=args.tail,
            exact_length=args.exact_length or None,
        )

    def settle(takes):  # the daemon's 44.1 kHz takes at the rate asked for, under the ceiling there
        from sa3core.level import limit_peaks

        if rate == timebase.SAMPLE_RATE:
            return takes
        return limit_peaks(resample_to_length(takes, timebase.SAMPLE_RATE, rate, samples))

    return _render(args, started, outputs, "sampling", "generate", in_process, rate, samples=model, settle=settle)


def _regions(args, total: int, rate: int):
    from sa3core.pipeline import Region, check_regions

    limits.check_region_count(len(args.region), "--region")
    meter = timebase.Meter.parse(args.meter)
    regions = []
    for text in args.region:
        start, end = timebase.parse_region(text, args.bpm, meter)
        regions.append(Region.from_seconds(start, end, rate))
    return check_regions(regions, total, rate)


def _source(args) -> tuple:
    """The input file's audio [2, n] at the output rate (its own rate unless --sample-rate says
    otherwise: then it is resampled, and only then are its samples not its own), and that rate."""
    from sa3core.pipeline import check_rate

    audio, own_rate = read_audio(args.input)
    rate = check_rate(args.sample_rate or own_rate, f"the sample rate of {args.input!r}")
    if rate != own_rate:
        audio = resample_to_length(audio, own_rate, rate, timebase.seconds_to_samples(audio.shape[1] / own_rate, rate))
    return audio, rate


def _to_model_rate(audio, rate: int):
    """Audio [2, n] at ``rate`` as the daemon takes it from the CLI: at 44.1 kHz."""
    from sa3core.pipeline import model_samples

    return resample_to_length(audio, rate, timebase.SAMPLE_RATE, model_samples(audio.shape[1], rate))


def _edit_in_process(args, rate: int, mode: str, audio, third):
    """The in-process call of an edit: ``Pipeline.<mode>(audio, prompt, third, ...)`` with the
    command's common options, and the take's recipe."""

    def in_process(pipeline, bar):
        takes = getattr(pipeline, mode)(
            audio, args.prompt, third, args.steps, args.cfg, args.seed, args.variations, progress=bar,
            scale_lock_db=args.scale_lock, sample_rate=rate, negative_prompt=args.negative_prompt,
            exact_length=args.exact_length or None, **_music(args),
        )  # fmt: skip
        recipe = pipeline.recipe(
            args.prompt, args.steps, args.cfg, scale_lock_db=args.scale_lock, exact_length=args.exact_length or None
        )
        return takes, recipe

    return in_process


def run_inpaint(args) -> int:
    started = time.perf_counter()
    _check_common(args)
    audio, rate = _source(args)
    regions = _regions(args, audio.shape[1], rate)  # checked against the file before any model loads
    outputs = _outputs(args)
    spans = {"regions": ",".join(f"{r.start / rate:.6g}:{r.end / rate:.6g}" for r in regions)}

    in_process = _edit_in_process(args, rate, "inpaint", audio, regions)

    request = {"audio": audio, "regions": regions, "comment": spans, "settle": lambda takes: takes}
    if rate != timebase.SAMPLE_RATE and args.daemon:
        from sa3core.pipeline import model_region, place_new_audio

        def settle(takes):  # kept audio: the input's own at its rate; new audio: resampled, matched, held
            takes = resample_to_length(takes, timebase.SAMPLE_RATE, rate, audio.shape[1])
            return np.stack([place_new_audio(audio, take, regions, rate) for take in takes])

        model_audio = _to_model_rate(audio, rate)
        model_regions = [model_region(r, rate, model_audio.shape[1]) for r in regions]
        request.update(audio=model_audio, regions=model_regions, settle=settle)
    return _render(args, started, outputs, "inpainting", "inpaint", in_process, rate, **request)


def run_continue(args) -> int:
    started = time.perf_counter()
    _check_common(args)
    audio, rate = _source(args)
    samples = _length_samples(args, rate)
    outputs = _outputs(args)

    in_process = _edit_in_process(args, rate, "continue_", audio, samples)

    request = {"samples": samples, "audio": audio, "settle": lambda takes: takes}
    if rate != timebase.SAMPLE_RATE and args.daemon:
        from sa3core.pipeline import Region, place_new_audio

        given = audio.shape[1]
        original = np.concatenate([audio, np.zeros((timebase.CHANNELS, samples), dtype=np.float32)], axis=1)

        def settle(takes):  # the input's own samples at its rate, then the new audio resampled and held
            takes = resample_to_length(takes, timebase.SAMPLE_RATE, rate, given + samples)
            new = [Region(given, given + samples)]
            return np.stack([place_new_audio(original, take, new, rate, crossfade=False) for take in takes])

        request.update(samples=_length_samples(args), audio=_to_model_rate(audio, rate), settle=settle)
    return _render(args, started, outputs, "continuing", "continue", in_process, rate, **request)


def run_transform(args) -> int:
    started = time.perf_counter()
    _check_common(args)
    level = limits.check_init_noise_level(args.init_noise_level, "--init-noise-level")
    audio, rate = _source(args)
    outputs = _outputs(args)

    in_process = _edit_in_process(args, rate, "transform", audio, level)

    request = {"audio": audio, "comment": {"init_noise_level": level}, "settle": lambda takes: takes}
    if rate != timebase.SAMPLE_RATE and args.daemon:  # the daemon works at 44.1 kHz: the takes come back to rate

        def settle(takes):
            from sa3core.level import limit_peaks

            return limit_peaks(resample_to_length(takes, timebase.SAMPLE_RATE, rate, audio.shape[1]))

        request.update(audio=_to_model_rate(audio, rate), settle=settle)
    return _render(args, started, outputs, "transforming", "transform", in_process, rate, **request)
