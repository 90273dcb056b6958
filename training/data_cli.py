"""``sa3 data encode MANIFEST -o DIR [--model PATH]``: pre-encode a corpus to latents once.

Diffusion training then reads latent shards, not audio (training/data.py). The autoencoder
must be the one the DiT will be trained and sampled with: ``--model`` takes a model folder
(with ``same.safetensors``) or a ``same.safetensors`` file.

Run it again on the same folder (after an interruption, or after growing the corpus) and it
encodes only the clips whose audio has no latents there yet from the same autoencoder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from sa3core import checkpoint
from sa3core.errors import Sa3Error


def register(actions) -> None:
    parser = actions.add_parser(
        "encode",
        help="encode a manifest's clips to latent shards for diffusion training",
        description="Run the autoencoder once over every clip of MANIFEST and write safetensors shards "
        "plus index.json (captions, tags, frame counts) into DIR. Clips DIR already holds latents of "
        "(same audio, same autoencoder) are not encoded again, so an interrupted or grown corpus resumes.",
    )
    parser.add_argument("manifest", help="manifest.jsonl (path, caption, seconds, licence, source per line)")
    parser.add_argument("-o", "--out", required=True, help="folder for the latent shards and index.json")
    parser.add_argument(
        "--model",
        help="model folder or same.safetensors (default: a random tiny autoencoder, for smoke tests only)",
    )
    parser.add_argument("--shard-items", type=int, default=256, help="clips per shard file (default 256)")
    parser.set_defaults(func=run)


def resolve_autoencoder(path: str | None):
    """(autoencoder module, name recorded in the index) for ``--model``."""
    if path is None:
        from training.smoke import tiny_autoencoder

        warnings.warn(
            "no --model: encoding with a randomly initialised tiny autoencoder (smoke tests only)", stacklevel=2
        )
        return tiny_autoencoder(seed=0), "random tiny SAME (seed 0)"
    file = Path(path)
    if file.is_dir():
        file = file / "same.safetensors"
    if not file.exists():
        raise Sa3Error(f"--model {path!r} is neither a model folder with same.safetensors nor a .safetensors file")
    import sa3core.models.same  # noqa: F401  (registers the "same" model kind)

    model, _ = checkpoint.load_model(file, expect_kind="same")
    return model, str(file.resolve())


def run(args) -> int:
    from training.data import encode_manifest

    if args.shard_items < 1:
        raise Sa3Error(f"--shard-items {args.shard_items} must be at least 1")
    model, name = resolve_autoencoder(args.model)
    index = encode_manifest(
        args.manifest, Path(args.out), model, autoencoder_name=name, items_per_shard=args.shard_items
    )
    written = json.loads(index.read_text())
    clips, reused = len(written["items"]), written["reused"]
    print(f"wrote {index}: {clips} clips, {clips - reused} encoded, {reused} already there")
    return 0
