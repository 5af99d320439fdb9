"""A shared archive carries no directory of the builder's machine (spec section 2.3)."""

from __future__ import annotations

from pathlib import Path

from hellopack.archive import open_archive
from hellopack.distill import BuildConfig, build
from hellopack.progress import NULL

from helpers_build import TINY_BUILD, tiny_teacher
from test_train_kit import write_imagefolder


def test_the_archive_holds_no_builder_path(tmp_path: Path) -> None:
    private = tmp_path / "home" / "alice" / "secret-project"
    data = write_imagefolder(private / "my-photos", 8, 16, seed=3)
    (private / "teachers").mkdir()
    teacher = tiny_teacher(private / "teachers" / "t0.safetensors", image_size=16)
    cfg = BuildConfig(recipe="folder", data_dir=str(data), out=str(tmp_path / "out.hellopack"),
                      workdir=str(tmp_path / "work"), teachers=(f"convnet:{teacher}",),
                      dataset_name="photos-v1", **{**TINY_BUILD, "n_real": 8})
    archive = open_archive(build(cfg, NULL))
    blobs = [archive.path.read_bytes()] + [archive.read_member(m.name) for m in archive.members]
    for needle in (str(private), str(tmp_path), "alice", "secret-project"):
        assert not any(needle.encode() in b for b in blobs), needle
    m = archive.manifest
    assert m["dataset"] == {"name": "photos-v1", "recipe": "folder", "source": "my-photos", "train_images": 32}
    assert m["build"]["data_dir"] == "my-photos" and m["build"]["teachers"] == ["convnet:t0.safetensors"]
