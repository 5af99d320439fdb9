"""ImageFolder trees: order, class names, bad files, odd file systems, the imagenet recipe."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hellopack.data import check_class_counts, open_source
from hellopack.errors import HellopackError


def png(path: Path, colour=(200, 10, 10), size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    noise.save(path, "JPEG")
    path.write_bytes(path.read_bytes()[:300])
    return path


def keys(src) -> list[str]:
    return [s.key for s in src]


def test_order_and_classes(tmp_path):
    for rel in ["b_cls/z.png", "b_cls/a.JPG", "a/2.png", "a/10.png", "a/sub/0.png", "C/x.webp",
                "a/notes.txt", ".ipynb_checkpoints/h.png", "a/.hidden.png"]:
        if rel.endswith("webp"):
            (tmp_path / "C").mkdir()
            Image.new("RGB", (8, 8)).save(tmp_path / rel, "WEBP")
        elif rel.endswith("txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            png(tmp_path / rel)
    src = open_source("folder", tmp_path)
    assert [(c.index, c.name, c.source_id) for c in src.classes] == [
        (0, "C", "C"), (1, "a", "a"), (2, "b cls", "b_cls")]
    assert keys(src) == ["C/x.webp", "a/10.png", "a/2.png", "a/sub/0.png", "b_cls/a.JPG", "b_cls/z.png"]
    assert [s.label for s in src] == [0, 1, 1, 1, 2, 2]
    assert src.num_samples == 6 and src.count_per_class() == [1, 3, 2]
    assert src.recipe == "folder" and src.name == tmp_path.name
    assert src.image_size == 8 and src.crop_pct == 1.0  # small square images keep their size
    assert src.mean == (0.485, 0.456, 0.406)


def test_photo_sized_images_default_to_224(tmp_path):
    png(tmp_path / "a" / "0.png", size=(120, 90))
    src = open_source("folder", tmp_path)
    assert (src.image_size, src.crop_pct) == (224, 0.875)


def test_corrupt_truncated_and_zero_byte_files_are_skipped_and_counted(tmp_path):
    for i in range(8):
        png(tmp_path / "a" / f"{i}.png")
    truncated_jpeg(tmp_path / "a" / "t.jpg")
    (tmp_path / "a" / "zero.png").write_bytes(b"")
    src = open_source("folder", tmp_path, max_bad_fraction=0.5)
    assert src.num_samples == 10
    got = keys(src)
    assert got == [f"a/{i}.png" for i in range(8)]
    rep = src.skipped
    assert (rep.seen, rep.bad) == (10, 2)
    assert rep.examples == [(str(tmp_path / "a" / "t.jpg"), "truncated image data"),
                            (str(tmp_path / "a" / "zero.png"), "empty file")]


def test_bad_fraction_at_end_of_pass(tmp_path):
    for i in range(3):
        png(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "y.png").write_bytes(b"junk")
    src = open_source("folder", tmp_path)
    with pytest.raises(HellopackError) as e:
        list(src)
    assert str(e.value) == (
        f"2 of the 5 images read from '{tmp_path}' are unreadable (40.0%, allowed 1.0%), e.g. "
        f"'{tmp_path / 'a' / 'x.png'}' (empty file); remove or fix them, or raise --max-bad-fraction")


def test_bad_fraction_checked_after_100_samples_without_reading_on(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(150):
        (tmp_path / "a" / f"{i:03d}.png").write_bytes(b"")
    src = open_source("folder", tmp_path, max_bad_fraction=0.9)
    with pytest.raises(HellopackError, match=r"^100 of the 100 images"):
        list(src)


def test_symlink_loops_do_not_hang(tmp_path):
    png(tmp_path / "a" / "0.png")
    png(tmp_path / "b" / "0.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "self")  # a/self -> a
    os.symlink(tmp_path, tmp_path / "a" / "root")  # a/root -> the data root
    os.symlink(tmp_path / "b" / "0.png", tmp_path / "a" / "linked.png")  # links to files count
    os.symlink(tmp_path / "nowhere.png", tmp_path / "a" / "broken.png")  # counted as bad
    src = open_source("folder", tmp_path, max_bad_fraction=0.5)
    assert src.count_per_class() == [3, 1]
    assert keys(src) == ["a/0.png", "a/linked.png", "b/0.png"]
    assert src.skipped.bad == 1 and src.skipped.examples[0][1].startswith("cannot read")


def test_non_utf8_names(tmp_path):
    root = os.fsencode(tmp_path)
    cls = os.path.join(root, b"caf\xe9")
    os.mkdir(cls)
    Image.new("RGB", (4, 4), (9, 9, 9)).save(os.path.join(cls, b"\xff\xfe.png").decode("utf-8", "surrogateescape"))
    src = open_source("folder", tmp_path)
    assert src.classes[0].source_id == "caf\\xe9"
    (sample,) = list(src)
    assert sample.key == "caf\\xe9/\\xff\\xfe.png"
    assert sample.key.encode("utf-8") and sample.image.getpixel((0, 0)) == (9, 9, 9)


def test_unreadable_subfolder_is_skipped_and_noted(tmp_path, monkeypatch):
    png(tmp_path / "a" / "0.png")
    png(tmp_path / "a" / "locked" / "1.png")
    locked = os.fsencode(tmp_path / "a" / "locked")
    real = os.scandir

    def scandir(path):
        if os.fsencode(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    src = open_source("folder", tmp_path)
    assert src.num_samples == 1
    assert src.notes == [f"{tmp_path / 'a' / 'locked'}: Permission denied"]


def test_missing_empty_and_imageless_folders(tmp_path):
    with pytest.raises(HellopackError) as e:
        open_source("folder", tmp_path / "nope")
    assert str(e.value) == f"data dir '{tmp_path / 'nope'}' does not exist; check --data-dir"
    with pytest.raises(HellopackError) as e:
        open_source("folder", tmp_path)
    assert str(e.value) == f"no images found under '{tmp_path}'; expected one folder per class"
    png(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(HellopackError) as e:
        open_source("folder", tmp_path)
    assert str(e.value) == f"class folder 'b' under '{tmp_path}' has no images; add images or remove the folder"
    with pytest.raises(HellopackError, match="needs a data location; pass --data-dir"):
        open_source("folder")


def test_split_subfolders(tmp_path):
    png(tmp_path / "train" / "a" / "0.png")
    png(tmp_path / "train" / "b" / "0.png")
    png(tmp_path / "val" / "a" / "1.png")
    assert keys(open_source("folder", tmp_path)) == ["a/0.png", "b/0.png"]
    assert keys(open_source("folder", tmp_path, split="val")) == ["a/1.png"]
    assert keys(open_source("folder", tmp_path, split="test")) == ["a/1.png"]  # val serves test
    (tmp_path / "val").rename(tmp_path / "other")
    png(tmp_path / "other" / "x.png")  # not only split folders any more: the root is the class root
    assert [c.source_id for c in open_source("folder", tmp_path, split="val").classes] == ["other", "train"]


def test_missing_split_folder(tmp_path):
    png(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(HellopackError) as e:
        open_source("folder", tmp_path, split="val")
    # no command has a split option: the fix adds the folder or moves --data-dir (train's --val says --val)
    assert str(e.value) == (f"no 'val' folder under '{tmp_path}' (found: train); "
                            "add a 'val' folder or point --data-dir at the class folders")


def test_class_counts_check_names_the_class(tmp_path):
    for cls, n in (("a", 3), ("b", 1), ("c", 2)):
        for i in range(n):
            png(tmp_path / cls / f"{i}.png")
    src = open_source("folder", tmp_path)
    assert check_class_counts(src, 1) == [3, 1, 2]
    with pytest.raises(HellopackError) as e:
        check_class_counts(src, 3)
    assert str(e.value) == ("class 'b' (b) has 1 images but 3 are needed (2 classes are short); "
                            "add images, ask for fewer, or pass --allow-short to use what exists")
    assert check_class_counts(src, 3, allow_short=True) == [3, 1, 2]


def test_classes_file_gives_names(tmp_path):
    png(tmp_path / "x1" / "0.png")
    png(tmp_path / "x2" / "0.png")
    names = tmp_path.parent / f"{tmp_path.name}-names.txt"
    names.write_text("red fox\nsnow owl\n\n")
    src = open_source("folder", tmp_path, classes_file=names)
    assert [(c.name, c.source_id) for c in src.classes] == [("red fox", "x1"), ("snow owl", "x2")]
    names.write_text("only one\n")
    with pytest.raises(HellopackError, match="has 1 names but the data has 2 classes"):
        open_source("folder", tmp_path, classes_file=names)


def test_imagenet_subset_uses_imagenet_order_and_clip_names(tmp_path):
    # ImageNet-1K indices: tench 0, goldfish 1, English springer 217.
    for wnid, colour in (("n02102040", (0, 0, 255)), ("n01443537", (0, 255, 0)), ("n01440764", (255, 0, 0))):
        png(tmp_path / "train" / wnid / "img.png", colour)
    png(tmp_path / "val" / "n01443537" / "v.png")
    src = open_source("imagenet", tmp_path)
    assert [(c.index, c.name, c.source_id) for c in src.classes] == [
        (0, "tench", "n01440764"), (1, "goldfish", "n01443537"), (2, "English Springer Spaniel", "n02102040")]
    assert [(s.label, s.image.getpixel((0, 0))) for s in src] == [(0, (255, 0, 0)), (1, (0, 255, 0)), (2, (0, 0, 255))]
    assert src.recipe == "imagenet" and src.mean == (0.485, 0.456, 0.406) and src.std == (0.229, 0.224, 0.225)
    val = open_source("imagenet", tmp_path, split="val")
    assert [c.name for c in val.classes] == ["goldfish"]


def test_imagenet_rejects_non_wordnet_folders(tmp_path):
    png(tmp_path / "n01440764" / "0.png")
    png(tmp_path / "cats" / "0.png")
    with pytest.raises(HellopackError) as e:
        open_source("imagenet", tmp_path)
    assert str(e.value) == ("folder 'cats' is not an ImageNet-1K WordNet id (like 'n01440764'); "
                            "use the 'folder' recipe for other datasets")


def _unblock(fifo: Path) -> None:
    """Release a reader stuck in open() on ``fifo`` (so a failing test does not hang the session)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_named_like_an_image_is_skipped_never_opened(tmp_path):
    """A FIFO named 000.jpg sorted first (it would set the natural size) is counted as bad, not opened."""
    import threading

    for i in range(1, 9):
        png(tmp_path / "a" / f"{i}.png")
    fifo = tmp_path / "a" / "000.jpg"
    os.mkfifo(fifo)
    result: dict = {}

    def scan() -> None:
        try:
            src = open_source("folder", tmp_path, max_bad_fraction=0.5)
            result["keys"] = keys(src)
            result["skipped"] = src.skipped
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=scan, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        _unblock(fifo)
        t.join(5)
        pytest.fail("opening the folder blocked on the FIFO")
    assert "error" not in result, result.get("error")
    assert result["keys"] == [f"a/{i}.png" for i in range(1, 9)]
    rep = result["skipped"]
    assert (rep.seen, rep.bad) == (9, 1)
    assert rep.examples == [(str(fifo), "not a regular file (a FIFO)")]
