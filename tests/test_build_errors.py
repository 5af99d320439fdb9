"""A build that fails on bad input leaves nothing behind: no archive, no empty work folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellopack.build import BuildConfig, build
from hellopack.errors import HellopackError


def test_missing_data_dir_leaves_no_work_folder(tmp_path: Path):
    cfg = BuildConfig(recipe="imagenet", data_dir=str(tmp_path / "nope"), out=str(tmp_path / "a.hellopack"))
    with pytest.raises(HellopackError, match=r"^data dir '.*nope' does not exist; check --data-dir$"):
        build(cfg)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_work_folder_is_kept_on_failure(tmp_path: Path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "note.txt").write_text("mine")
    cfg = BuildConfig(recipe="imagenet", data_dir=str(tmp_path / "nope"), out=str(tmp_path / "a.hellopack"),
                      workdir=str(work))
    with pytest.raises(HellopackError):
        build(cfg)
    assert (work / "note.txt").read_text() == "mine"
