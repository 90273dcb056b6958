"""Publishing a finished temporary file: sa3 writes outputs to a temporary file in the target
folder and renames it into place, so readers never see half a file. ``tempfile.mkstemp`` makes
that file owner-only (0600); an output is meant to be shared (a DAW or a daemon running as
another user opens it), so it gets the permissions a plain ``open()`` would give, under the
process's umask."""

from __future__ import annotations

import os


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the default file permissions, then rename it onto ``path`` (atomic)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
