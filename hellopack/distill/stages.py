"""Stage markers in the work directory: a finished stage is skipped when its key still matches.

A stage's key hashes the config values it depends on plus the key of the stage before
it, so changing a flag invalidates that stage and every later one, while rerunning the
same command skips the finished ones. Markers are written last and atomically: a stage
killed before its marker is simply redone (or continued, when the stage checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from hellopack.errors import HellopackError
from hellopack.fsutil import FolderLock, atomic_write_bytes

MARKER_VERSION = 1
LOCK_FILE = FolderLock.NAME  # flock'ed by the running build; holds its pid for the error message


def stage_key(stage: str, parts: Mapping[str, Any], upstream: str = "") -> str:
    """sha256 over the stage name, its config parts (canonical JSON) and the upstream key."""
    blob = json.dumps({"stage": stage, "v": MARKER_VERSION, "parts": parts, "upstream": upstream},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class WorkDir:
    """``<workdir>/<stage>/`` folders and ``<workdir>/<stage>.done.json`` markers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._folder_lock = FolderLock(self.root, f"work directory '{self.root}' is in use by another build{{pid}}; "
                                                  "wait for it to finish, or pass another --workdir")

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
        """One build per work folder: a second one would race the first's stages and delete its temporaries."""
        self._folder_lock.acquire()

    def release(self) -> None:
        self._folder_lock.release()

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
