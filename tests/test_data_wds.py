"""WebDataset shards: the real CIFAR-10 shards, tiny written shards, bad samples, errors."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from hellopack.data import open_source
from hellopack.errors import HellopackError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buf, "PNG")
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def good(i: int, label: int) -> tuple[str, dict[str, bytes]]:
    return f"s{i:04d}", {"png": _png((i, label, 0)), "cls": str(label).encode()}


@pytest.fixture
def shards(tmp_path) -> Path:
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "train-000000.tar", [good(i, i % 3) for i in range(0, 5)])
    write_shard(d / "train-000001.tar", [good(i, i % 3) for i in range(5, 9)])
    write_shard(d / "test-000000.tar", [good(i, 0) for i in range(100, 102)])
    (d / "classes.txt").write_text("cat\ndog\nowl\n")
    return d


def test_cifar10_shards(cifar10_dir):
    src = open_source("cifar10", cifar10_dir)
    assert [c.name for c in src.classes] == CIFAR10_NAMES
    assert (src.image_size, src.crop_pct, src.recipe) == (32, 1.0, "cifar10")
    assert src.mean == (0.4914, 0.4822, 0.4465) and src.std == (0.2470, 0.2435, 0.2616)
    first = next(iter(src))
    assert first.key == "train_000000" and first.image.mode == "RGB" and first.image.size == (32, 32)
    # The labels of the first 300 samples, read independently from the tar members.
    with tarfile.open(cifar10_dir / "train-000000.tar") as tf:
        expected = []
        for m in tf:
            if m.name.endswith(".cls"):
                expected.append(int(tf.extractfile(m).read()))
            if len(expected) == 300:
                break
    got = [s.label for _, s in zip(range(300), src)]
    assert got == expected and first.label == expected[0]
    assert Counter(got) == Counter(expected) and len(set(got)) == 10


def test_cifar10_test_split_counts(cifar10_dir):
    src = open_source("cifar10", cifar10_dir, split="test")
    assert src.num_samples == 10000
    assert src.count_per_class() == [1000] * 10
    assert src.shard(1, 4).num_samples == 2500


def test_folder_of_shards_by_split_with_classes_txt(shards):
    src = open_source("wds", shards)
    assert [c.name for c in src.classes] == ["cat", "dog", "owl"]
    samples = list(src)
    assert [s.key for s in samples] == [f"s{i:04d}" for i in range(9)]
    assert [s.label for s in samples] == [i % 3 for i in range(9)]
    assert samples[4].image.getpixel((0, 0)) == (4, 1, 0)
    assert src.num_samples == 9 and src.count_per_class() == [3, 3, 3]
    assert src.image_size == 6 and src.crop_pct == 1.0
    assert [s.key for s in open_source("wds", shards, split="test")] == ["s0100", "s0101"]


def test_brace_pattern_and_shard_views(shards):
    pattern = str(shards / "train-{000000..000001}.tar")
    src = open_source("wds", pattern, classes_file=shards / "classes.txt")
    views = [[s.key for s in src.shard(r, 3)] for r in range(3)]
    assert views == [["s0000", "s0003", "s0006"], ["s0001", "s0004", "s0007"], ["s0002", "s0005", "s0008"]]


def test_wds_needs_classes(shards):
    (shards / "classes.txt").unlink()
    with pytest.raises(HellopackError) as e:
        open_source("wds", shards)
    assert str(e.value) == "recipe 'wds' needs --classes FILE (one class name per line, line number = the .cls index)"


def test_missing_shard_and_split(shards):
    with pytest.raises(HellopackError) as e:
        open_source("wds", str(shards / "train-{000000..000002}.tar"), classes_file=shards / "classes.txt")
    assert str(e.value) == (f"shard '{shards / 'train-000002.tar'}' does not exist; "
                            f"check the path or brace pattern")
    assert open_source("wds", shards, split="val").urls == [str(shards / "test-000000.tar")]  # val falls back to test
    (shards / "test-000000.tar").unlink()
    with pytest.raises(HellopackError) as e:
        open_source("wds", shards, split="val")
    assert str(e.value) == (f"no 'val' shards in '{shards}' (found: train-*); "
                            "add val-*.tar shards or point --data-dir at a folder that holds them")


def test_bad_samples_are_counted(tmp_path):
    samples = [good(i, 0) for i in range(6)]
    samples.insert(1, ("broken", {"png": b"\x89PNG garbage", "cls": b"0"}))
    samples.insert(3, ("nolabel", {"png": _png((0, 0, 0))}))
    samples.insert(5, ("far", {"png": _png((0, 0, 0)), "cls": b"7"}))
    samples.insert(6, ("text", {"txt": b"hello", "cls": b"0"}))
    write_shard(tmp_path / "a.tar", samples)
    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n")
    src = open_source("wds", tmp_path / "a.tar", classes_file=names, max_bad_fraction=0.5)
    assert [s.key for s in src] == [f"s{i:04d}" for i in range(6)]
    rep = src.skipped
    assert (rep.seen, rep.bad) == (10, 4)
    a = str(tmp_path / "a.tar")
    assert rep.examples == [
        (f"{a}:broken", "not an image Pillow can read"),
        (f"{a}:nolabel", "no .cls member"),
        (f"{a}:far", "label 7 outside 0..1 (classes file has 2 names)"),
        (f"{a}:text", "no image member (cls, txt)"),
    ]
    strict = open_source("wds", tmp_path / "a.tar", classes_file=names)
    with pytest.raises(HellopackError, match=r"^4 of the 10 images read from .* are unreadable \(40\.0%, allowed 1\.0%\)"):
        list(strict)


def test_unreadable_shard_counts_as_bad(tmp_path):
    write_shard(tmp_path / "a.tar", [good(i, 0) for i in range(3)])
    (tmp_path / "b.tar").write_bytes(b"\x00garbage" * 200)
    names = tmp_path / "names.txt"
    names.write_text("one\n")
    src = open_source("wds", f"{tmp_path}/{{a,b}}.tar", classes_file=names, max_bad_fraction=0.5)
    assert len(list(src)) == 3
    assert src.skipped.bad == 1 and src.skipped.examples[0][0] == str(tmp_path / "b.tar")
    assert src.num_samples is None  # the header scan cannot read b.tar either
