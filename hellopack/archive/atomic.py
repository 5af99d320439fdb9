"""Atomic file creation (own copy: the archive package imports nothing else from hellopack)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from hellopack.archive.format import ArchiveError


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Temp file beside ``path``; fsync and os.replace on success, removed on any error."""
    parent = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise ArchiveError("file", f"cannot write into '{parent}' ({e.strerror or e}); "
                                   "create the folder or choose another path") from None
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600; shared files want the umask's mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise ArchiveError("file", f"cannot write '{path.name}' ({e.strerror or e}); "
                                       "free space or choose another path") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable (POSIX)
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
