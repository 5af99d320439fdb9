"""open_archive reads the header and manifest only; small members never touch the images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import hellopack.archive.reader as reader_mod
from hellopack.archive import ArchiveError, open_archive
from test_archive_kit import base_doc, write


class CountingFile(io.FileIO):
    total = 0

    def read(self, n=-1):
        data = super().read(n)
        CountingFile.total += len(data)
        return data

    def readinto(self, b):
        n = super().readinto(b)
        CountingFile.total += n or 0
        return n


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    # 4 incompressible 2 MiB "images": an 8 MiB images.tar behind a ~2 KB manifest.
    rng = np.random.default_rng(0)
    doc = base_doc()
    doc["manifest"]["images"]["count"] = 4
    imgs = [(f"k{i}", i % 2, rng.bytes(2 << 20), "png") for i in range(4)]
    return write(doc, tmp_path_factory.mktemp("big") / "big.hellopack", images=imgs)


def test_open_reads_only_header_and_manifest(big: Path, monkeypatch) -> None:
    monkeypatch.setattr(reader_mod, "_open", lambda p: CountingFile(p, "rb"))
    CountingFile.total = 0
    a = open_archive(big)
    images = a.member("images.tar")
    assert images.size > 8 << 20
    assert CountingFile.total == a.data_start < 4096
    CountingFile.total = 0
    a.read_prompts()
    a.read_lora()
    assert CountingFile.total < 1024


def test_images_region_is_not_touched_by_open_or_small_members(big: Path, tmp_path: Path) -> None:
    blob = bytearray(big.read_bytes())
    a = open_archive(big)
    start = a.data_start + a.member("images.tar").offset
    blob[start:] = b"\xa5" * (len(blob) - start)  # wreck every image byte
    p = tmp_path / "wrecked.hellopack"
    p.write_bytes(bytes(blob))
    b = open_archive(p)
    assert b.manifest == a.manifest
    assert b.read_prompts().classnames == ("red checker", "blue stripe")
    assert set(b.read_lora()) == {"head.lora_A", "head.lora_B", "visual.conv1.lora_A", "visual.conv1.lora_B"}
    with pytest.raises(ArchiveError) as e:
        b.verify(decode_images=False)
    assert str(e.value) == "images.tar: is not a zstd frame"


def test_images_stream_in_bounded_chunks(big: Path) -> None:
    recs = [(r.key, r.cls, len(r.data)) for r in open_archive(big).iter_images()]
    assert recs == [("k0", 0, 2 << 20), ("k1", 1, 2 << 20), ("k2", 0, 2 << 20), ("k3", 1, 2 << 20)]
