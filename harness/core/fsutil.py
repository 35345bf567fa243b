"""The one atomic-write helper: every file the harness writes for someone else to read
(result files, worker and rank messages, calibration and quality caches, reports) is
written to a temp file beside its destination, flushed and fsynced, then moved into place
with ``os.replace``, so a reader never sees half a file and a crash leaves either the old
file or the new one (plus, at worst, a hidden ``.NAME.*.tmp`` that is removed on error).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_temp_beside", "atomic_write_text", "atomic_write_bytes", "atomic_write_with", "discard"]


def discard(tmp: str | Path) -> None:
    """Remove a temp file, ignoring a file that is already gone (best effort)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_with(path: str | Path, write: Callable[[str], None], *, mode: int | None = None,
                      fsync: bool = True) -> Path:
    """Create a temp file beside ``path``, let ``write(temp_path)`` fill it (e.g.
    ``torch.save``), optionally ``chmod`` it to ``mode``, fsync it and ``os.replace`` it
    onto ``path``. On any error the temp file is removed and the error propagates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)  # never hide the write's own error (e.g. ENOSPC)
        raise
    return path


def write_temp_beside(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to a synced temp file beside ``path`` and return the temp path,
    for callers that publish it themselves (``os.link`` to claim a new name without
    clobbering, as the result store does)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        discard(tmp)
        raise
    return Path(tmp)


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None, fsync: bool = True) -> Path:
    """Replace ``path`` atomically with ``data``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write_with(path, write, mode=mode, fsync=fsync)


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None, fsync: bool = True) -> Path:
    """Replace ``path`` atomically with ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, fsync=fsync)
