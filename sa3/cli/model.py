"""``sa3 model pull NAME`` and ``sa3 model list``: the released Stable Audio 3 models, through the
Hugging Face cache (docs/models.md).

``pull`` downloads the files sa3 needs of a released model (the table in :mod:`sa3core.hub`) with
huggingface_hub and the user's own token (``HF_TOKEN``, or ``hf auth login``), into the cache every
Hugging Face tool shares; ``--model NAME`` then finds it there without the network. A pull that
fails (gated repo without access, no token, no network, an unknown repo or revision, a full disk,
Ctrl-C) prints one line, exits 2 (130 for Ctrl-C, at once: the download runs in a child process that
is killed) and leaves the cache as it found it: every file, link and folder the pull made is
removed and the refs it moved are put back.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

from sa3core.errors import Sa3Error


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="download the released Stable Audio 3 models, list those installed")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull = actions.add_parser(
        "pull", help="download a released model into the Hugging Face cache (small-music, medium, same-s, ...)"
    )
    pull.add_argument("name", help="small-music, small-sfx, medium, their -base forms, same-s or same-l")
    pull.add_argument("--revision", help="branch, tag or commit of the repo (default main)")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(func=run_pull)
    listing = actions.add_parser("list", help="the models installed: the shipped default, then the released ones")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--lora-dir",
        metavar="DIR",
        help="LoRA folder whose adapters to list (default: $SA3_LORA_DIR, else ~/.local/share/sa3/loras if it exists)",
    )
    listing.set_defaults(func=run_list)


# ---------------------------------------------------------------------------------- pull


def run_pull(args) -> int:
    from huggingface_hub import HfApi, constants, get_token

    from sa3core import hub

    model = hub.released(args.name)
    revision = args.revision or "main"
    if constants.HF_HUB_OFFLINE:
        raise Sa3Error("HF_HUB_OFFLINE is set, so `sa3 model pull` may not use the network; unset it and run again")
    cache = hub.cache_dir()
    first = _first_pull(model, cache)
    token = get_token()
    undo = _Undo(cache, model.repo_id)
    try:
        info = HfApi().model_info(model.repo_id, revision=revision, files_metadata=True)
        if info.gated and token is None:
            raise Sa3Error(_gated_message(model, token))
        _check_space(model, info, cache)
        if first:
            _show_licences(model)
        folder = _download(model, revision, args.quiet)
        missing = hub.missing_files(model, folder)
        if missing:
            raise Sa3Error(
                f"{model.repo_id} at {revision} has no {missing[0]}: it is not in the released layout sa3 reads"
            )
    except BaseException as err:
        undo()
        if isinstance(err, (Sa3Error, KeyboardInterrupt, SystemExit)):
            raise
        message = _pull_error(err, model, revision, token, cache)
        if message is None:
            raise
        raise Sa3Error(message) from None
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{model.name}: {model.repo_id} at {info.sha[:12] if info.sha else revision} ({_size(size)}) in {folder}")
    licence_files = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE", "NOTICE", "GEMMA"))
    )
    if licence_files:
        print(f"licence texts: {', '.join(licence_files)}")
    use = model.name if revision == "main" else f"{model.name}@{revision}"
    print(f"use it with --model {use}")
    return 0


def _download(model, revision: str, quiet: bool) -> Path:
    """huggingface_hub's ``snapshot_download`` of the files sa3 needs, in a child process: its
    download threads cannot be stopped, and on Ctrl-C it would first finish every file (gigabytes);
    a child is killed at once, so the caller can take back what it wrote. The progress bar is the
    child's, on the same terminal. Raises Sa3Error with the child's one line when the download fails."""
    import subprocess

    request = json.dumps({"name": model.name, "revision": revision, "quiet": quiet})
    child = subprocess.Popen([sys.executable, "-m", __name__, request], stdout=subprocess.PIPE, text=True)
    try:
        answer, _ = child.communicate()
    except BaseException:  # Ctrl-C: the child ignores it and is killed here
        child.kill()
        child.wait()
        raise
    lines = answer.strip().splitlines()
    result = json.loads(lines[-1]) if child.returncode == 0 and lines else {}
    if "folder" in result:
        return Path(result["folder"])
    raise Sa3Error(result.get("error") or f"the download of {model.name} failed (the error is above)")


def _download_child(request: str) -> None:
    """The child of :func:`_download`: one JSON line on stdout, ``{"folder": ...}`` or ``{"error": LINE}``
    (an error nobody foresaw ends it with a traceback on stderr and a non-zero status)."""
    import signal

    from huggingface_hub import get_token, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    from sa3core import hub

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, by killing this process
    asked = json.loads(request)
    model, revision = hub.released(asked["name"]), asked["revision"]
    try:
        if asked["quiet"]:
            disable_progress_bars()
        folder = snapshot_download(model.repo_id, revision=revision, allow_patterns=model.allow_patterns)
    except Exception as err:
        message = _pull_error(err, model, revision, get_token(), hub.cache_dir())
        if message is None:
            raise
        print(json.dumps({"error": message}))
        return
    print(json.dumps({"folder": folder}))


def _first_pull(model, cache: Path) -> bool:
    """Whether the cache holds no snapshot of the model's repo yet (its licence is shown then)."""
    from huggingface_hub.file_download import repo_folder_name

    snapshots = cache / repo_folder_name(repo_id=model.repo_id, repo_type="model") / "snapshots"
    return not snapshots.is_dir() or not any(snapshots.iterdir())


def _show_licences(model) -> None:
    print(f"{model.name} ({model.repo_id}) is released under:")
    for licence in model.licences:
        print(f"  {licence.name}: {licence.url}")
    print("Using it means accepting these terms; their texts come with the download.")
    sys.stdout.flush()  # before huggingface_hub's progress bars on stderr


def _gated_message(model, token: str | None) -> str:
    pull = f"sa3 model pull {model.name}"
    if token is None:
        return (
            f"{model.repo_id} is gated and you are not logged in to Hugging Face: accept its licence at "
            f"{model.url}, log in with `hf auth login` (or set HF_TOKEN), then run `{pull}` again"
        )
    return (
        f"your Hugging Face account has no access to {model.repo_id} yet: accept its licence at {model.url} "
        f"(with the account of your token), then run `{pull}` again"
    )


def _check_space(model, info, cache: Path) -> None:
    """Sa3Error before anything is written when the files still to download do not fit on the disk."""
    from huggingface_hub.utils import filter_repo_objects

    siblings = [s for s in info.siblings or [] if s.size is not None]
    wanted = filter_repo_objects(siblings, allow_patterns=model.allow_patterns, key=lambda s: s.rfilename)
    snapshot = _storage(cache, model.repo_id) / "snapshots" / (info.sha or "-")
    need = sum(s.size for s in wanted if not (snapshot / s.rfilename).is_file())
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise Sa3Error(
            f"{model.name} needs {_size(need)} and the disk of {cache} has {_size(free)} free; "
            "free some space or set HF_HUB_CACHE to a folder on another disk"
        )


def _pull_error(err: BaseException, model, revision: str, token: str | None, cache: Path) -> str | None:
    """One line for an error of huggingface_hub, the network or the disk; None for anything else."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    pull = f"sa3 model pull {model.name}"
    if isinstance(err, GatedRepoError):
        return _gated_message(model, token)
    if isinstance(err, RevisionNotFoundError):
        return f"{model.repo_id} has no revision {revision!r}; give a branch, tag or commit it has (see {model.url})"
    if isinstance(err, RepositoryNotFoundError):
        return (
            f"{model.repo_id} was not found on {constants.ENDPOINT}; check HF_ENDPOINT, or if the repo is "
            "private to your account, log in with `hf auth login`"
        )
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        if status == 401:
            return f"{constants.ENDPOINT} refused your Hugging Face token (401): log in again with `hf auth login` or fix HF_TOKEN"
        if status == 403:
            return (
                f"{constants.ENDPOINT} refused to serve {model.repo_id} (403): give your token read access to the "
                f"public gated repos you can access (a fine-grained token needs it), accept the licence at {model.url}, "
                f"then run `{pull}` again"
            )
        reason = "try again later" if status >= 500 else f"run `{pull}` again or report it"
        return f"{constants.ENDPOINT} answered {status} while downloading {model.repo_id}; {reason}"
    network = _network_error(err)
    if network is not None:
        reason = (str(network).strip().splitlines() or [type(network).__name__])[0]
        return (
            f"cannot reach {constants.ENDPOINT} to download {model.name} ({reason}); check the network "
            f"(or proxy, HF_ENDPOINT) and run `{pull}` again"
        )
    if isinstance(err, LocalEntryNotFoundError):
        first_line = (str(err).strip().splitlines() or [""])[0]
        return f"could not download {model.repo_id}: {first_line}; run `{pull}` again"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot write {model.name} to the Hugging Face cache {cache}: {err.strerror}; free some space, fix "
            "the folder's permissions or set HF_HUB_CACHE to another folder"
        )
    return None


def _network_error(err: BaseException | None) -> BaseException | None:
    """The network error that caused ``err`` (it or one in its chain), if any."""
    import httpx2  # huggingface_hub's HTTP client

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def _storage(cache: Path, repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache / repo_folder_name(repo_id=repo_id, repo_type="model")


class _Undo:
    """Puts the cache back as a pull found it: calling it removes every file, link and folder made
    since it was created under the repo's cache folder and its lock folder, the files made at the
    top of the cache (huggingface_hub's CACHEDIR.TAG) and the cache folders themselves where the
    pull made them, and restores the refs (branch name -> commit) the pull rewrote. Files that were
    there before are never touched: blobs are immutable, named by hash."""

    def __init__(self, cache: Path, repo_id: str) -> None:
        storage = _storage(cache, repo_id)
        self.roots = [storage, cache / ".locks" / storage.name]
        self.before = {root: _entries(root) for root in self.roots}
        self.refs = {p: p.read_bytes() for p in (storage / "refs").rglob("*") if p.is_file() and not p.is_symlink()}
        self.made_folders = [p for p in (cache / ".locks", *_missing_chain(cache)) if not p.exists()]
        self.cache, self.cache_files = cache, _top_files(cache)  # huggingface_hub tags the cache (CACHEDIR.TAG)

    def __call__(self) -> None:
        for root in self.roots:
            before = self.before[root]
            if not os.path.lexists(root):
                continue
            for folder, dirnames, filenames in os.walk(root, topdown=False):
                for name in [*filenames, *dirnames]:
                    path = Path(folder) / name
                    if path in before:
                        continue
                    if path.is_symlink() or not path.is_dir():
                        path.unlink(missing_ok=True)
                    else:
                        _rmdir(path)
            if root not in before:
                _rmdir(root)
        for path, data in self.refs.items():
            if not path.is_file() or path.read_bytes() != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        for path in _top_files(self.cache) - self.cache_files:
            path.unlink(missing_ok=True)
        for folder in sorted(self.made_folders, key=lambda p: len(p.parts), reverse=True):
            _rmdir(folder)


def _entries(root: Path) -> set[Path]:
    """Every file, link and folder under ``root`` and ``root`` itself (links not followed)."""
    if not os.path.lexists(root):
        return set()
    found = {root}
    for folder, dirnames, filenames in os.walk(root):
        found.update(Path(folder) / name for name in [*dirnames, *filenames])
    return found


def _top_files(folder: Path) -> set[Path]:
    """The plain files directly in ``folder``."""
    return {p for p in folder.iterdir() if p.is_file() and not p.is_symlink()} if folder.is_dir() else set()


def _missing_chain(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet (what a download would create)."""
    chain = []
    while not folder.exists() and folder != folder.parent:
        chain.append(folder)
        folder = folder.parent
    return chain


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()  # only when empty: what is left was not the pull's
    except OSError:
        pass


# ---------------------------------------------------------------------------------- list


def run_list(args) -> int:
    from sa3core import hub

    rows = [_default_row()]
    installed = hub.installed()
    for entry in installed:
        rows.append(
            {
                "name": entry.model.name,
                "repo": entry.model.repo_id,
                "commit": entry.commit,
                "size_bytes": entry.size_bytes,
                "licences": [{"name": lic.name, "url": lic.url} for lic in entry.model.licences],
                "path": str(entry.folder),
                "missing": list(entry.missing),
            }
        )
    missing = [m for name, m in hub.RELEASED.items() if name not in {e.model.name for e in installed}]
    folder, adapters = _adapters(args.lora_dir)
    if args.json:
        document = {"models": rows, "cache": str(hub.cache_dir()), "not_installed": [m.name for m in missing]}
        document.update(lora_dir=str(folder) if folder else None, loras=adapters)
        print(json.dumps(document, indent=2))
        return 0
    licences = [" + ".join(lic["name"].split(" (")[0] for lic in row["licences"]) for row in rows]
    widths = [
        max(len(text) for text in column) for column in ([r["name"] for r in rows], [r["repo"] for r in rows], licences)
    ]
    for row, licence in zip(rows, licences):
        note = f"  (incomplete: no {row['missing'][0]}; run `sa3 model pull {row['name']}`)" if row["missing"] else ""
        print(
            f"{row['name']:<{widths[0]}}  {row['repo']:<{widths[1]}}  {_size(row['size_bytes']):>8}  "
            f"{licence:<{widths[2]}}  {row['path']}{note}"
        )
    if missing:
        gated = [m.name for m in missing if m.gated]
        print(
            f"not downloaded: {', '.join(m.name for m in missing)}: `sa3 model pull NAME`"
            + (f" (gated: {', '.join(gated)}; accept the licence on its hub page first)" if gated else "")
        )
    for name, url in {lic["name"]: lic["url"] for row in rows[1:] for lic in row["licences"]}.items():
        print(f"{name}: {url}")
    if folder is None:
        print("LoRA adapters: no LoRA folder (set SA3_LORA_DIR, create ~/.local/share/sa3/loras, or --lora-dir DIR)")
        return 0
    print(f"LoRA adapters in {folder}: {len(adapters) or 'none'}")
    for adapter in adapters:
        if adapter.get("problem"):
            print(f"  {adapter['name']}  (unusable: {adapter['problem']})")
            continue
        print(
            f"  {adapter['name']:<24} {adapter['adapter_type']:<13} rank {adapter['rank']:<4} "
            f"base: {adapter['base']:<28} {_size(adapter['size_bytes']):>8}"
        )
    return 0


# Released DiT widths, for telling which base model an adapter was trained on.
_BASE_BY_WIDTH = {1024: "small (small-music, small-sfx)", 1536: "medium"}


def _adapters(lora_dir: str | None) -> tuple[Path | None, list[dict]]:
    """The LoRA folder and its adapters: name, file, type, rank, base model, size (or a problem)."""
    from sa3core.lora import default_lora_dir, read_lora

    if lora_dir is not None:
        folder = Path(lora_dir).expanduser()
        if not folder.is_dir():
            raise Sa3Error(f"--lora-dir {lora_dir!r} is not a folder")
    else:
        folder = default_lora_dir()
    if folder is None:
        return None, []
    adapters = []
    for path in sorted(folder.glob("*.safetensors")):
        entry = {"name": path.stem.lower(), "file": path.name, "size_bytes": path.stat().st_size}
        try:
            lora = read_lora(path)
        except Sa3Error as err:
            adapters.append({**entry, "problem": str(err)})
            continue
        entry.update(adapter_type=lora.config.adapter_type, rank=lora.config.rank, base=_base_of(lora))
        adapters.append(entry)
    return folder, adapters


def _base_of(lora) -> str:
    """The base model an adapter fits, from the DiT width its tensors imply (the attention input
    of the first block); an -xs adapter stores no width ("unknown")."""
    for layer, params in sorted(lora.layers.items()):
        if layer.endswith("self_attn.to_out") or layer.endswith("self_attn.to_qkv"):
            shape = params.get("lora_A", params.get("magnitude_c"))
            if shape is not None:
                width = int(shape.shape[-1])
                return _BASE_BY_WIDTH.get(width, f"a DiT {width} wide")
    return "unknown (no width in the file)"


def _default_row() -> dict:
    """The embedded default model: always there, always first."""
    from sa3core.pipeline import DEFAULT_MODEL_DIR

    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    return {
        "name": "default",
        "repo": "(shipped with sa3)",
        "commit": None,
        "size_bytes": size,
        "licences": [{"name": "GPL-3.0-or-later, as sa3 (data licences in MODEL_CARD.md)", "url": None}],
        "path": str(DEFAULT_MODEL_DIR),
        "missing": [],
    }


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


if __name__ == "__main__":  # the download child of `sa3 model pull` (see _download)
    _download_child(sys.argv[1])
