"""Archives are shared files: written with the umask's mode, not mkstemp's private 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hellopack.fsutil import atomic_write_bytes
from test_archive_kit import base_doc, write


def test_archive_and_other_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        a = write(base_doc(), tmp_path / "a.hellopack")
        b = atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    assert stat.S_IMODE(b.stat().st_mode) == 0o644
