"""Atomic file writes: a crash never leaves a file with the final name that is not complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from hellopack.errors import HellopackError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success fsync and rename it into place.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HellopackError(f"output folder '{parent}' does not exist; create it or choose another path")
    if path.is_dir():
        raise HellopackError(f"cannot write '{path}': it is a folder; choose a file name instead")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise HellopackError(f"cannot write '{path}': {e.strerror}; choose a writable location") from None
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600; shared files want the umask's mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            raise HellopackError(f"cannot write '{path}': {e.strerror or e}; free space or choose another location") from None
        raise
    _fsync_dir(parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (POSIX); best effort elsewhere.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
