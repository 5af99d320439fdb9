"""Stage markers in the work directory: a finished stage is skipped when its key still matches.

A stage's key hashes the config values it depends on plus the key of the stage before
it, so changing a flag invalidates that stage and every later one, while rerunning the
same command skips the finished ones. Markers are written last and atomically: a stage
killed before its marker is simply redone (or continued, when the stage checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

try:
    import fcntl
except ImportError:  # no flock (Windows): builds are not locked there
    fcntl = None  # type: ignore[assignment]

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes

MARKER_VERSION = 1
LOCK_FILE = ".lock"  # flock'ed by the running build; holds its pid for the error message


def stage_key(stage: str, parts: Mapping[str, Any], upstream: str = "") -> str:
    """sha256 over the stage name, its config parts (canonical JSON) and the upstream key."""
    blob = json.dumps({"stage": stage, "v": MARKER_VERSION, "parts": parts, "upstream": upstream},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class WorkDir:
    """``<workdir>/<stage>/`` folders and ``<workdir>/<stage>.done.json`` markers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None

    def create(self) -> bool:
        """Make and lock the folder; True when this call created it (so a failed first run can remove it)."""
        existed = self.root.is_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HellopackError(f"cannot create work directory '{self.root}': {e.strerror}; "
                                 f"pass a writable --workdir") from None
        self._lock()
        # Temporaries of atomic writes cut short by a kill (".<name>.<random>.tmp"): never valid results.
        # Only safe under the lock: another build's temporaries would be writes in progress.
        for tmp in [*self.root.glob(".*.tmp"), *self.root.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)
        return not existed

    def _lock(self) -> None:
        """One build per work folder: a second one would race the first's stages and delete its temporaries.

        flock is released by the kernel when the process dies, so a killed build never leaves a stale lock.
        """
        if fcntl is None or self._lock_fd is not None:
            return
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # cannot even create it (read-only or full): later writes report the real problem
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise HellopackError(f"work directory '{self.root}' is in use by another build{who}; wait for it to "
                                 f"finish, or pass another --workdir") from None
        except OSError:  # a filesystem without locks (some network mounts): build unlocked, as before
            os.close(fd)
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except OSError:  # a full disk: the pid is only for the message
            pass
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove_if_unused(self) -> None:
        """Delete a work folder that holds no finished stage: bad input must leave nothing behind."""
        if self.root.is_dir() and not any(self.root.glob("*.done.json")):
            shutil.rmtree(self.root, ignore_errors=True)

    def stage_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def marker_path(self, stage: str) -> Path:
        return self.root / f"{stage}.done.json"

    def done(self, stage: str, key: str) -> dict[str, Any] | None:
        """The marker's payload when ``stage`` finished with this ``key``, else None."""
        path = self.marker_path(stage)
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(marker, dict) or marker.get("key") != key:
            return None
        payload = marker.get("result")
        return payload if isinstance(payload, dict) else None

    def mark(self, stage: str, key: str, result: Mapping[str, Any]) -> None:
        data = json.dumps({"stage": stage, "key": key, "result": result}, sort_keys=True, indent=1)
        atomic_write_bytes(self.marker_path(stage), data.encode("utf-8"))
