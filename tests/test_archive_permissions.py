"""Archives are shared files: written with the umask's mode, not mkstemp's private 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hellopack.errors import HellopackError
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


def test_writing_onto_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sheet.png").mkdir()
    with pytest.raises(HellopackError) as e:
        atomic_write_bytes(tmp_path / "sheet.png", b"x")
    assert str(e.value) == f"cannot write '{tmp_path / 'sheet.png'}': it is a folder; choose a file name instead"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temporary file beside it
