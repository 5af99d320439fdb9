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


class FolderLock:
    """One process per folder: ``<folder>/.lock`` is flock'ed while it works and holds its pid.

    A second ``build`` on a work folder, or ``train`` on a run folder, would race the first's files and
    delete its temporaries. flock is released by the kernel when the process dies, so a killed run never
    leaves a stale lock. ``busy`` is the one-line error for a held lock; ``{pid}`` is filled in.
    Filesystems without locks (some network mounts) and Windows run unlocked, as before.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, busy: str) -> None:
        self.folder = Path(folder)
        self.busy = busy
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): not locked there
            return
        if self._fd is not None:
            return
        path = self.folder / self.NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # cannot even create it (read-only or full): later writes report the real problem
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise HellopackError(self.busy.replace("{pid}", who)) from None
        except OSError:  # a filesystem without locks
            os.close(fd)
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except OSError:  # a full disk: the pid is only for the message
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock); the file stays, for the next run."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
