"""``sa3 encode`` and ``sa3 decode``: audio files <-> SAME latent files.

A latent file is a safetensors file holding ``latents`` float32 [256, frames] and metadata:
``sa3_latents`` (format version), ``samples`` (the source's length at 44.1 kHz, which decode
restores exactly), ``sample_rate`` and ``autoencoder`` (an identity hash of the model's config
and weights: decoding with another model warns, since its latent space differs), ``source`` and
``search_steps`` (``--search``: analysis-by-synthesis steps, sa3core.codec_search; 0 = the plain
encoder).

Model resolution (both commands): ``--model`` is a ``.safetensors`` of kind "same" or a model
folder holding ``same.safetensors``; without it the shipped default model's autoencoder.
Decoding refines the decoder's phases as the folder's ``model.json`` says (``phase_iterations``)
unless ``--phase-iterations`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sa3core.audio import check_output_path, load_audio, save_audio
from sa3core.checkpoint import atomic_write, load_model
from sa3core.errors import Sa3Error
from sa3core.files import check_output_file
from sa3core.timebase import LATENT_CHANNELS, SAMPLE_RATE, frames_to_samples

LATENT_FORMAT = 1


def register(subparsers) -> None:
    encode = subparsers.add_parser("encode", help="encode an audio file to SAME latents (.safetensors)")
    encode.add_argument("input", help="audio file (WAV, FLAC, AIFF, OGG; any rate, mono or stereo)")
    encode.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors)")
    encode.add_argument("--model", help="SAME .safetensors or a model folder (default: the shipped model)")
    encode.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="STEPS",
        help="refine the latents by that many steps of analysis-by-synthesis (30 is a good start; on 2 cores "
        "about 70 s for 10 s of audio, 7 min for 30 s): they decode closer to the input, but leave the "
        "encoder's distribution, so keep them for `sa3 decode`, not for training or conditioning "
        "(default 0: the plain encoder)",
    )
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    encode.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    encode.set_defaults(func=run_encode)

    decode = subparsers.add_parser("decode", help="decode SAME latents to an audio file")
    decode.add_argument("latents", help="latent file written by `sa3 encode`")
    decode.add_argument("-o", "--output", required=True, help="audio file to write (.wav, .flac, .aiff, .ogg)")
    decode.add_argument("--samples", type=int, help="output length in samples (default: the encoded source's)")
    decode.add_argument("--model", help="SAME .safetensors or a model folder (default: the shipped model)")
    decode.add_argument("--bit-depth", choices=["16", "24", "float"], default="24", help="sample format (default 24)")
    decode.add_argument(
        "--phase-iterations",
        type=int,
        help="Griffin-Lim iterations on the decoder's phases (default: the model folder's model.json, else 0)",
    )
    decode.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    decode.set_defaults(func=run_decode)


def resolve_model(path: str | None):
    """The SAME model to use (see module doc), in eval mode."""
    from sa3core.models import same  # noqa: F401  (registers the "same" model kind)

    if path:
        model_path = Path(path)
        if model_path.is_dir():
            model_path = model_path / "same.safetensors"
        if not model_path.exists():
            raise Sa3Error(
                f"model {path!r} not found; give a SAME .safetensors file or a folder holding same.safetensors"
            )
        return load_model(model_path, expect_kind="same")[0]
    from sa3core.pipeline import default_model_dir

    return load_model(default_model_dir() / "same.safetensors", expect_kind="same")[0]


def model_phase_iterations(path: str | None) -> int:
    """The ``phase_iterations`` the model folder ``path`` (or the shipped one) says; 0 for a file."""
    from sa3core.families.sa3 import read_settings
    from sa3core.pipeline import default_model_dir

    folder = Path(path) if path else default_model_dir()
    if not (folder / "model.json").is_file():
        return 0
    return read_settings(folder).phase_iterations


def run_encode(args) -> int:
    from sa3core.models.same import model_identity

    output = Path(args.output)
    if output.suffix.lower() != ".safetensors":
        raise Sa3Error(f"latent output {args.output!r} must end in .safetensors")
    check_output_file(output, args.overwrite)  # before any work: not a folder, free, writable
    if args.search < 0:
        raise Sa3Error(f"--search {args.search} must be 0 (off) or a number of steps, e.g. 30")
    audio = load_audio(args.input)  # float32 [2, samples] at 44.1 kHz
    model = resolve_model(args.model)
    if args.search:
        latents = _searched(model, torch.from_numpy(audio)[None], args.search, args.quiet)[0].contiguous()
    else:
        latents = model.encode(torch.from_numpy(audio)[None])[0].contiguous()  # (256, frames)
    metadata = {
        "sa3_latents": str(LATENT_FORMAT),
        "samples": str(audio.shape[1]),
        "sample_rate": str(SAMPLE_RATE),
        "autoencoder": model_identity(model),
        "source": Path(args.input).name,
        "search_steps": str(args.search),
    }
    atomic_write(output, lambda tmp: save_file({"latents": latents}, tmp, metadata=metadata))
    print(f"wrote {output} ({latents.shape[1]} latent frames for {audio.shape[1]} samples)")
    return 0


def _searched(model, audio: torch.Tensor, steps: int, quiet: bool) -> torch.Tensor:
    """sa3core.codec_search with a progress bar (on stderr, as generate's, unless ``quiet``)
    whose total is right from the start: ``steps`` for each chunk the search takes in turn."""
    from tqdm import tqdm

    from sa3core.codec_search import CHUNK_FRAMES, search_latents
    from sa3core.timebase import samples_to_frames

    total = steps * -(-samples_to_frames(audio.shape[-1]) // CHUNK_FRAMES)
    with tqdm(total=total, desc="search", unit="step", disable=quiet, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return search_latents(model, audio, steps, progress=progress)


def read_latents(path: str) -> tuple[torch.Tensor, dict[str, str]]:
    """Latents [256, frames] and metadata of a file written by ``sa3 encode``; Sa3Error otherwise."""
    file = Path(path)
    if not file.exists():
        raise Sa3Error(f"latent file {path!r} does not exist")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            latents = handle.get_tensor("latents") if "latents" in handle.keys() else None
    except (SafetensorError, OSError, ValueError) as err:
        raise Sa3Error(f"{path!r} is not a latent file written by `sa3 encode`: {err}") from None
    if metadata.get("sa3_latents") != str(LATENT_FORMAT) or latents is None:
        raise Sa3Error(f"{path!r} is not an sa3 latent file (format {LATENT_FORMAT}); make one with `sa3 encode`")
    if latents.ndim != 2 or latents.shape[0] != LATENT_CHANNELS or latents.shape[1] < 1:
        raise Sa3Error(f"{path!r} holds latents of shape {tuple(latents.shape)}, not [{LATENT_CHANNELS}, frames]")
    if not torch.isfinite(latents).all():
        raise Sa3Error(f"{path!r} holds NaN or infinite latents")
    return latents.float(), metadata


def run_decode(args) -> int:
    from sa3core.models.same import model_identity

    output = check_output_path(args.output, args.overwrite)
    latents, metadata = read_latents(args.latents)
    available = frames_to_samples(latents.shape[1])
    samples = args.samples if args.samples is not None else int(metadata.get("samples", available))
    if not 1 <= samples <= available:
        raise Sa3Error(
            f"--samples {samples} is outside 1..{available}, the length {latents.shape[1]} latent frames hold"
        )
    model = resolve_model(args.model)
    iterations = args.phase_iterations if args.phase_iterations is not None else model_phase_iterations(args.model)
    if iterations < 0:
        raise Sa3Error(f"--phase-iterations {iterations} must be 0 or more")
    if metadata.get("autoencoder") not in (None, model_identity(model)):
        print(
            "sa3: warning: these latents were made by a different autoencoder; the audio will not match the source",
            file=sys.stderr,
        )
    audio = model.decode(latents[None], phase_iterations=iterations)[0, :, :samples]  # (2, samples)
    save_audio(output, audio.numpy(), bit_depth=args.bit_depth, overwrite=args.overwrite)
    print(f"wrote {output} ({samples} samples, {samples / SAMPLE_RATE:.3f} s)")
    return 0
