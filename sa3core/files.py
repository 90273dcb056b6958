"""Publishing a finished temporary file: sa3 writes outputs to a temporary file in the target
folder and renames it into place, so readers never see half a file. ``tempfile.mkstemp`` makes
that file owner-only (0600); an output is meant to be shared (a DAW or a daemon running as
another user opens it), so it gets the permissions a plain ``open()`` would give, under the
process's umask.

Before any work, :func:`check_output_file` makes sure the file can be written there at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import Sa3Error


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the default file permissions, then rename it onto ``path`` (atomic)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def check_output_file(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Sa3Error (one line) unless ``path`` can be written as a new file, or replaced with
    ``overwrite``; meant for before any work is done, so a bad path costs no generation."""
    path = Path(path)
    if path.is_dir():
        raise Sa3Error(f"output {str(path)!r} is a folder; give a file name (in it or elsewhere)")
    if path.exists() and not overwrite:
        raise Sa3Error(f"output {str(path)!r} already exists; pass --overwrite to replace it")
    folder = path.parent
    if not folder.exists():
        raise Sa3Error(f"folder {str(folder)!r} for the output does not exist")
    if not folder.is_dir():
        raise Sa3Error(f"{str(folder)!r} is a file, not a folder; the output {str(path)!r} cannot go in it")
    check_writable_folder(folder)
    return path


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Sa3Error unless a new file can be created in the existing folder ``folder``.

    Probed by creating and removing an empty temporary file, as the atomic writes will: the
    permission bits do not tell (root ignores them; read-only mounts, /proc and /sys refuse
    files whatever the bits say)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".sa3-probe-", dir=folder)
    except OSError as err:
        raise Sa3Error(
            f"cannot write files in folder {str(folder)!r} ({err.strerror}); choose a writable folder"
        ) from None
    os.close(fd)
    os.unlink(probe)
