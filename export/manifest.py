"""Writing an export folder: its manifest (the data contract, :mod:`sa3core.manifest`, which the
runners read) and the output folder handling every exporter shares."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sa3core.checkpoint import atomic_write
from sa3core.config import to_dict
from sa3core.errors import Sa3Error
from sa3core.manifest import EXPORT_FORMAT, MANIFEST_NAME, Manifest, PartSpec, TensorSpec, read_manifest
from sa3core.scale_lock import layout_of

__all__ = [
    "EXPORT_FORMAT",
    "MANIFEST_NAME",
    "Manifest",
    "PartSpec",
    "TensorSpec",
    "prepare_output",
    "read_manifest",
    "semitone_entry",
    "staged_output",
    "write_manifest",
]


def semitone_entry(autoencoder) -> dict[str, Any]:
    """The manifest's ``semitones`` entry for a SAME model (empty without semitone channels)."""
    layout = layout_of(autoencoder)
    return {} if layout is None else layout.to_dict()


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    text = json.dumps(to_dict(manifest), indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    path.chmod(0o644)  # mkstemp made it owner-only; an export is meant to be shared
    return path


def prepare_output(folder: str | Path, force: bool) -> Path:
    """Make ``folder`` ready for an export: Sa3Error if it is a file, not writable, or holds
    files (unless ``force``, which lets the export overwrite them)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise Sa3Error(f"output {str(folder)!r} is a file; give a directory for the export")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise Sa3Error(f"output directory {str(folder)!r} is not empty; pass --force to overwrite it or pick another")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".sa3-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise Sa3Error(
            f"cannot write to output directory {str(folder)!r} ({err.strerror}); pick a writable one"
        ) from None
    return folder


@contextlib.contextmanager
def staged_output(folder: str | Path, force: bool):
    """Export into a hidden folder beside ``folder`` and move the files in only when the export
    finished: a failed or interrupted export leaves ``folder`` as it was (and removes it if it
    made it), never half an export. Checks ``folder`` first as :func:`prepare_output` does."""
    folder = Path(folder)
    existed = folder.exists()
    prepare_output(folder, force)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        yield work
        for item in sorted(work.iterdir()):
            target = folder / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            item.rename(target)
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
