"""``sa3 encode`` and ``sa3 decode``: audio files <-> SAME latent files.

A latent file is a safetensors file holding ``latents`` float32 [256, frames] and metadata:
``sa3_latents`` (format version), ``samples`` (the source's length at 44.1 kHz, which decode
restores exactly), ``sample_rate`` and ``autoencoder`` (an identity hash of the model's config
and weights: decoding with another model warns, since its latent space differs), ``source`` and
``search_steps`` (``--search``: analysis-by-synthesis steps, sa3core.codec_search; 0 = the plain
encoder).

Model resolution (both commands): ``--model`` is a ``.safetensors`` of kind "same", an sa3 model
folder holding ``same.safetensors``, or a released Stable Audio 3 model: a folder in the released
layout or a released name from the Hugging Face cache (``same-s``, ``same-l``, or a DiT repo such
as ``small-music``, whose autoencoder is used); without it the shipped default model's autoencoder.
sa3's decoder refines its phases as the folder's ``model.json`` says (``phase_iterations``) unless
``--phase-iterations`` is given. The released autoencoders run as the official code does: windows
of 128 latents overlapping by 32 for long audio, and noise drawn while decoding (SAME-L also while
encoding), from ``--seed`` (default 0), so the same command gives the same file.
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
MODEL_HELP = (
    "SAME .safetensors, a model folder, or a released model: same-s, same-l, small-music, ... "
    "(its autoencoder; default: the shipped model)"
)
SEED_HELP = "seed of the noise a released autoencoder draws (default 0); sa3's own draws none"


def register(subparsers) -> None:
    encode = subparsers.add_parser("encode", help="encode an audio file to SAME latents (.safetensors)")
    encode.add_argument("input", help="audio file (WAV, FLAC, AIFF, OGG; any rate, mono or stereo)")
    encode.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors)")
    encode.add_argument("--model", help=MODEL_HELP)
    encode.add_argument("--seed", type=int, default=0, help=SEED_HELP)
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
    decode.add_argument("--model", help=MODEL_HELP)
    decode.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    decode.add_argument("--bit-depth", choices=["16", "24", "float"], default="24", help="sample format (default 24)")
    decode.add_argument(
        "--phase-iterations",
        type=int,
        help="Griffin-Lim iterations on the decoder's phases (default: the model folder's model.json, else 0)",
    )
    decode.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    decode.set_defaults(func=run_decode)


class Codec:
    """An autoencoder as the two commands use it: audio [2, S] <-> latents [256, F], with the
    identity written into latent files. sa3's own SAME, or a released one (``released``)."""

    def __init__(self, model, identity: str, released: bool, phase_iterations: int = 0) -> None:
        self.model, self.identity, self.released = model, identity, released
        self.phase_iterations = phase_iterations
        self.channels = model.config.latent_dim if released else LATENT_CHANNELS

    def encode(self, audio: torch.Tensor, seed: int) -> torch.Tensor:
        if self.released:
            generator = torch.Generator().manual_seed(seed)
            return self.model.encode(audio[None], generator)[0].float().contiguous()
        return self.model.encode(audio[None])[0].contiguous()

    def decode(self, latents: torch.Tensor, seed: int, iterations: int | None) -> torch.Tensor:
        if self.released:
            if iterations:
                raise Sa3Error("--phase-iterations is for sa3's own autoencoder; a released SAME decodes phases itself")
            generator = torch.Generator().manual_seed(seed)
            return self.model.decode(latents[None].contiguous(), generator)[0].float()
        iterations = self.phase_iterations if iterations is None else iterations
        return self.model.decode(latents[None], phase_iterations=iterations)[0]


def resolve_model(path: str | None) -> Codec:
    """The autoencoder ``--model`` names (see the module doc), in eval mode."""
    from sa3core.hub import resolve_model as resolve
    from sa3core.models import same  # noqa: F401  (registers the "same" model kind)
    from sa3core.pipeline import default_model_dir
    from sa3core.released.checkpoint import CONFIG_FILE, load_autoencoder

    if path is not None and not path.strip():
        raise Sa3Error("--model is empty; give a SAME .safetensors, a model folder or a released name (same-s)")
    folder = resolve(path) if path else default_model_dir()
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        return Codec(*load_autoencoder(folder), released=True)
    model_path = folder / "same.safetensors" if folder.is_dir() else folder
    if not model_path.exists():
        raise Sa3Error(
            f"model {path!r} holds no autoencoder; give a SAME .safetensors, a folder holding same.safetensors, "
            "or a released model (same-s, same-l, or a folder with model_config.json)"
        )
    model = load_model(model_path, expect_kind="same")[0]
    return Codec(model, same.model_identity(model), released=False, phase_iterations=model_phase_iterations(folder))


def model_phase_iterations(folder: Path) -> int:
    """The ``phase_iterations`` the model folder says; 0 for a file."""
    from sa3core.families.sa3 import read_settings

    if not folder.is_dir() or not (folder / "model.json").is_file():
        return 0
    return read_settings(folder).phase_iterations


def run_encode(args) -> int:
    output = Path(args.output)
    if output.suffix.lower() != ".safetensors":
        raise Sa3Error(f"latent output {args.output!r} must end in .safetensors")
    check_output_file(output, args.overwrite)  # before any work: not a folder, free, writable
    if args.search < 0:
        raise Sa3Error(f"--search {args.search} must be 0 (off) or a number of steps, e.g. 30")
    audio = load_audio(args.input)  # float32 [2, samples] at 44.1 kHz
    codec = resolve_model(args.model)
    if args.search:
        if codec.released:
            raise Sa3Error("--search works with sa3's own autoencoder; drop it for a released SAME")
        latents = _searched(codec.model, torch.from_numpy(audio)[None], args.search, args.quiet)[0].contiguous()
    else:
        latents = codec.encode(torch.from_numpy(audio), args.seed)  # (256, frames)
    metadata = {
        "sa3_latents": str(LATENT_FORMAT),
        "samples": str(audio.shape[1]),
        "sample_rate": str(SAMPLE_RATE),
        "autoencoder": codec.identity,
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
    if latents.ndim != 2 or latents.shape[1] < 1:
        raise Sa3Error(f"{path!r} holds latents of shape {tuple(latents.shape)}, not [channels, frames]")
    if not torch.isfinite(latents).all():
        raise Sa3Error(f"{path!r} holds NaN or infinite latents")
    return latents.float(), metadata


def run_decode(args) -> int:
    output = check_output_path(args.output, args.overwrite)
    latents, metadata = read_latents(args.latents)
    available = frames_to_samples(latents.shape[1])
    samples = args.samples if args.samples is not None else int(metadata.get("samples", available))
    if not 1 <= samples <= available:
        raise Sa3Error(
            f"--samples {samples} is outside 1..{available}, the length {latents.shape[1]} latent frames hold"
        )
    if args.phase_iterations is not None and args.phase_iterations < 0:
        raise Sa3Error(f"--phase-iterations {args.phase_iterations} must be 0 or more")
    codec = resolve_model(args.model)
    if latents.shape[0] != codec.channels:
        raise Sa3Error(
            f"{args.latents!r} holds {latents.shape[0]} latent channels; this autoencoder takes {codec.channels}: "
            "decode with the model that encoded it"
        )
    if metadata.get("autoencoder") not in (None, codec.identity):
        print(
            "sa3: warning: these latents were made by a different autoencoder; the audio will not match the source",
            file=sys.stderr,
        )
    audio = codec.decode(latents, args.seed, args.phase_iterations)[:, :samples]  # (2, samples)
    save_audio(output, audio.numpy(), bit_depth=args.bit_depth, overwrite=args.overwrite)
    print(f"wrote {output} ({samples} samples, {samples / SAMPLE_RATE:.3f} s)")
    return 0
