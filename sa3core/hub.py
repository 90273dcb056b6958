"""The released Stable Audio 3 models on the Hugging Face Hub, by the names a person types.

One table (:data:`RELEASED`) maps each name (``small-music``, ``same-s``, ...) to its repo, whether
the repo is gated (its licence must be accepted on the hub before a download), the files sa3 needs
from it and the licences that cover them. :func:`resolve_model` turns what ``--model`` was given
into a folder: an existing path as it is; a name from the Hugging Face cache, the one cache
huggingface_hub shares with every tool on the machine (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``).

Resolving never uses the network, whatever ``HF_HUB_OFFLINE`` says: a name that is not in the cache
is a one-line :class:`Sa3Error` that says to run ``sa3 model pull NAME``; downloading is that
command's (the application's) job. huggingface_hub is imported only when a name is resolved, so a
run of the embedded default model does not pay for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import Sa3Error

TEXT_ENCODER_FOLDER = "t5gemma-b-b-ul2"  # the text encoder's subfolder in every DiT repo
_MODEL_FILES = ("model_config.json", "model.safetensors")  # every repo: the architecture and the weights
_TEXT_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json")  # what loading it reads
# The licence texts and the model card; `*` crosses folders in huggingface_hub's patterns, so these
# match at the top only. The text encoder's own terms come with its folder.
_LICENCE_PATTERNS = ("LICENSE*", "LICENCE*", "NOTICE*", "README.md")


@dataclass(frozen=True)
class Licence:
    name: str
    url: str


STABILITY_COMMUNITY = Licence("Stability AI Community License", "https://stability.ai/license")
GEMMA_TERMS = Licence("Gemma Terms of Use (the T5Gemma text encoder)", "https://ai.google.dev/gemma/terms")


@dataclass(frozen=True)
class ReleasedModel:
    """A released checkpoint: ``name`` (what a person types), ``repo_id`` on the hub, ``kind``
    (``"generator"``: DiT + SAME + text encoder; ``"autoencoder"``: SAME alone), ``gated`` (the
    licence must be accepted on the repo's page first) and ``what`` (one line for listings)."""

    name: str
    repo_id: str
    kind: str
    gated: bool
    what: str

    @property
    def required(self) -> tuple[str, ...]:
        """The files (relative to the repo) a folder of this model must hold to be loadable."""
        if self.kind == "autoencoder":
            return _MODEL_FILES
        return _MODEL_FILES + tuple(f"{TEXT_ENCODER_FOLDER}/{name}" for name in _TEXT_ENCODER_FILES)

    @property
    def allow_patterns(self) -> list[str]:
        """huggingface_hub ``allow_patterns``: the files sa3 downloads (and looks for in the cache)."""
        patterns = [*_MODEL_FILES, *_LICENCE_PATTERNS]
        return patterns if self.kind == "autoencoder" else [*patterns, f"{TEXT_ENCODER_FOLDER}/*"]

    @property
    def licences(self) -> tuple[Licence, ...]:
        return (STABILITY_COMMUNITY,) if self.kind == "autoencoder" else (STABILITY_COMMUNITY, GEMMA_TERMS)

    @property
    def url(self) -> str:
        """The repo's page on the hub (``HF_ENDPOINT`` respected): where its licence is accepted."""
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{self.repo_id}"


# The official names (the stable-audio-3 README's model table and its model_configs.py).
RELEASED: dict[str, ReleasedModel] = {
    m.name: m
    for m in (
        ReleasedModel("small-music", "stabilityai/stable-audio-3-small-music", "generator", True, "music, small DiT + SAME-S"),
        ReleasedModel("small-sfx", "stabilityai/stable-audio-3-small-sfx", "generator", True, "sound effects, small DiT + SAME-S"),
        ReleasedModel("medium", "stabilityai/stable-audio-3-medium", "generator", True, "music and effects, medium DiT + SAME-L"),
        ReleasedModel("small-music-base", "stabilityai/stable-audio-3-small-music-base", "generator", False, "pre-trained small-music (for LoRA training)"),
        ReleasedModel("small-sfx-base", "stabilityai/stable-audio-3-small-sfx-base", "generator", False, "pre-trained small-sfx (for LoRA training)"),
        ReleasedModel("medium-base", "stabilityai/stable-audio-3-medium-base", "generator", False, "pre-trained medium (for LoRA training)"),
        ReleasedModel("same-s", "stabilityai/SAME-S", "autoencoder", False, "the SAME-S autoencoder alone"),
        ReleasedModel("same-l", "stabilityai/SAME-L", "autoencoder", False, "the SAME-L autoencoder alone"),
    )
}  # fmt: skip


def find_released(name: str) -> ReleasedModel | None:
    """The table entry for a name or a repo id, in any case; None if there is none."""
    key = name.strip().lower()
    for model in RELEASED.values():
        if key in (model.name, model.repo_id.lower()):
            return model
    return None


def released(name: str) -> ReleasedModel:
    """The table entry for ``name`` (a name or repo id); a one-line Sa3Error listing the names otherwise."""
    model = find_released(name)
    if model is None:
        raise Sa3Error(f"unknown model {name!r}: the released Stable Audio 3 models are {', '.join(RELEASED)}")
    return model


def cache_dir() -> Path:
    """The Hugging Face cache folder huggingface_hub uses (``HF_HUB_CACHE``, ``HF_HOME`` respected)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def cached_folder(model: ReleasedModel, revision: str | None = None) -> Path | None:
    """The snapshot folder of ``model`` at ``revision`` (a branch, tag or commit; default the
    repo's main branch) in the cache, or None when the cache has no snapshot of it. Never uses the
    network. The folder may lack files (an interrupted download by another tool): :func:`missing_files`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            model.repo_id, revision=revision, local_files_only=True, allow_patterns=model.allow_patterns
        )
    except IncompleteSnapshotError as err:  # a snapshot whose tree listing says files are missing
        return Path(err.snapshot_path)
    except LocalEntryNotFoundError:
        return None
    return Path(folder)


def missing_files(model: ReleasedModel, folder: Path) -> list[str]:
    """The files of :attr:`ReleasedModel.required` that ``folder`` lacks (a snapshot's files are links
    into the cache's blobs: a broken link counts as missing)."""
    return [name for name in model.required if not (folder / name).is_file()]


def resolve_model(name_or_path: str | os.PathLike | None) -> Path | None:
    """The folder (or file) ``--model`` names.

    - None: None (the caller's embedded default);
    - a path that exists, as it is (a folder of any layout, or a file): a folder in the current
      directory wins over a released model of the same name;
    - a released name or repo id (``small-music``, ``stabilityai/SAME-S``; ``NAME@REVISION`` for a
      branch, tag or commit pulled with ``--revision``): its snapshot in the Hugging Face cache,
      found without the network.

    Raises a one-line Sa3Error for a name not in the cache (run ``sa3 model pull NAME``; for a gated
    repo, accept its licence first, at the URL given), a cached copy that lacks files, an unknown name
    (the known ones listed) and a path that does not exist."""
    if name_or_path is None:
        return None
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    name, _, revision = text.partition("@")
    model = find_released(name)
    if model is None:
        if os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).suffix:
            raise Sa3Error(
                f"model {text!r} does not exist; give a model folder, a released model name "
                f"({', '.join(RELEASED)}) or leave --model out for the default"
            )
        raise Sa3Error(
            f"unknown model {text!r}: give a model folder or a released model name ({', '.join(RELEASED)}; "
            "`sa3 model list` shows those downloaded)"
        )
    folder = cached_folder(model, revision or None)
    pull = f"sa3 model pull {model.name}" + (f" --revision {revision}" if revision else "")
    if folder is None:
        from huggingface_hub import constants

        where = f"the Hugging Face cache ({cache_dir()})"
        offline = " with HF_HUB_OFFLINE unset" if constants.HF_HUB_OFFLINE else ""
        gated = f"; it is gated: accept its licence at {model.url} first" if model.gated else ""
        at = f" at revision {revision!r}" if revision else ""
        raise Sa3Error(f"{model.name}{at} is not in {where}: run `{pull}`{offline}{gated}")
    missing = missing_files(model, folder)
    if missing:
        raise Sa3Error(
            f"the cached copy of {model.name} in {str(folder)!r} is incomplete (no {missing[0]}); run `{pull}` to complete it"
        )
    return folder


@dataclass(frozen=True)
class Installed:
    """A released model in the cache: the snapshot sa3 uses (the main branch's, else the newest),
    its commit, the repo's size on disk (every revision the cache holds of it) and what it lacks."""

    model: ReleasedModel
    folder: Path
    commit: str
    size_bytes: int
    missing: tuple[str, ...]


def installed() -> list[Installed]:
    """The released models in the Hugging Face cache, in :data:`RELEASED` order. Never uses the network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        scanned = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    repos = {repo.repo_id.lower(): repo for repo in scanned.repos if repo.repo_type == "model"}
    found = []
    for model in RELEASED.values():
        repo = repos.get(model.repo_id.lower())
        if repo is None or not repo.revisions:
            continue
        on_main = [rev for rev in repo.revisions if "main" in rev.refs]
        revision = on_main[0] if on_main else max(repo.revisions, key=lambda rev: rev.last_modified)
        folder = Path(revision.snapshot_path)
        found.append(
            Installed(model, folder, revision.commit_hash, repo.size_on_disk, tuple(missing_files(model, folder)))
        )
    return found
