"""A build that fails on bad input leaves nothing behind: no archive, no empty work folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellopack.distill import BuildConfig, build
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


def test_teach_on_a_file_leaves_no_output_folder(tmp_path: Path):
    from hellopack.distill.teach import TeachConfig, teach

    data = tmp_path / "data.txt"
    data.write_text("not a folder")
    cfg = TeachConfig(recipe="folder", data_dir=str(data), out=str(tmp_path / "traj"), device="cpu")
    with pytest.raises(HellopackError) as e:
        teach(cfg)
    assert str(e.value) == f"data dir '{data}' is not a folder; pass the folder that holds one folder per class"
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]
