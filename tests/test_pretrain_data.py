"""Two-view augmentation and the image-only stream: deterministic, label-free, worker-independent."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from hellopack.data import Shard, open_source
from hellopack.data.synthetic import SyntheticSource
from hellopack.pretrain.augment import two_views, view_transform
from hellopack.pretrain.images import UnlabeledImages, two_view_batches

SMALL = {"per_class": 4, "test_per_class": 1}  # 40 training images


class _NoLabel:
    """A decoded sample whose label cannot be read."""

    def __init__(self, image: Image.Image, key: str) -> None:
        self.image, self.key = image, key

    @property
    def label(self) -> int:
        raise AssertionError("the pretraining data path read a label")


def poison_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SyntheticSource._load
    monkeypatch.setattr(SyntheticSource, "_load", lambda self, entry: _NoLabel(original(self, entry).image,
                                                                               original(self, entry).key))


def _batches(workers: int = 0, epoch: int = 0, rank: int = 0, world: int = 1, batch: int = 8, steps: int = 4):
    src = open_source("synthetic", synthetic=SMALL)
    return list(two_view_batches(UnlabeledImages(src), view_transform(32), batch, steps, seed=5, epoch=epoch,
                                 shard=Shard(rank, world), num_workers=workers))


def test_two_views_are_a_pure_function_of_the_seed_and_leave_the_global_rng_alone() -> None:
    img = Image.new("RGB", (32, 32), (200, 30, 40))
    img.paste((10, 200, 30), (8, 8, 24, 24))
    tf = view_transform(32)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a1, b1 = two_views(tf, img, seed=7)
    a2, b2 = two_views(tf, img, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, b1)  # the two views differ
    assert a1.shape == (3, 32, 32) and a1.dtype == torch.float32
    assert 0.0 <= float(a1.min()) and float(a1.max()) <= 1.0


def test_blur_only_for_large_views_by_default() -> None:
    names = lambda tf: repr(tf)  # noqa: E731
    assert "GaussianBlur" not in names(view_transform(32))
    assert "GaussianBlur" in names(view_transform(96))
    assert "GaussianBlur" in names(view_transform(32, blur=True))


def test_the_stream_never_reads_a_label(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _batches()
    poison_labels(monkeypatch)
    poisoned = _batches()
    assert len(poisoned) == 4
    for (p1, a1, b1), (p2, a2, b2) in zip(clean, poisoned):
        assert torch.equal(p1, p2) and torch.equal(a1, a2) and torch.equal(b1, b2)


def test_batches_do_not_depend_on_the_worker_count() -> None:
    one, two = _batches(workers=0), _batches(workers=2)
    assert len(one) == len(two) == 4
    for (p1, a1, b1), (p2, a2, b2) in zip(one, two):
        assert torch.equal(p1, p2) and torch.equal(a1, a2) and torch.equal(b1, b2)


def test_epochs_reshuffle_and_processes_split_the_images() -> None:
    e0 = torch.cat([p for p, _, _ in _batches(batch=10, steps=4)])
    e1 = torch.cat([p for p, _, _ in _batches(epoch=1, batch=10, steps=4)])
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(40))
    assert e0.tolist() != e1.tolist()
    r0 = torch.cat([p for p, _, _ in _batches(rank=0, world=2, batch=10, steps=2)])
    r1 = torch.cat([p for p, _, _ in _batches(rank=1, world=2, batch=10, steps=2)])
    assert sorted(r0.tolist() + r1.tolist()) == list(range(40))


def test_max_images_keeps_the_first_images() -> None:
    src = open_source("synthetic", synthetic=SMALL)
    images = UnlabeledImages(src, max_images=12)
    assert images.num_images == 12
    got = list(two_view_batches(images, view_transform(32), 4, 10, seed=0, epoch=0))
    assert sorted(torch.cat([p for p, _, _ in got]).tolist()) == list(range(12))


def _shard(folder, n: int):
    import io
    import tarfile

    path = folder / "train-000000.tar"
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (i * 10, 0, 0)).save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", b"0")):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_streaming_shards_shuffle_per_epoch_and_cap(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hellopack.data.wds import WdsSource

    original = WdsSource._load
    monkeypatch.setattr(WdsSource, "_load", lambda self, raw: _NoLabel(original(self, raw).image, "k"))
    (tmp_path / "names.txt").write_text("thing\n")
    src = open_source("wds", str(_shard(tmp_path, 20)), classes_file=tmp_path / "names.txt")
    images = UnlabeledImages(src)
    assert images.num_images == 20

    def positions(epoch: int, imgs: UnlabeledImages = images, steps: int = 5) -> list[int]:
        got = two_view_batches(imgs, view_transform(16), 4, steps, seed=0, epoch=epoch)
        return torch.cat([p for p, _, _ in got]).tolist()

    e0, e1 = positions(0), positions(1)
    assert sorted(e0) == sorted(e1) == list(range(20)) and e0 != e1
    assert positions(0) == e0
    assert sorted(positions(0, UnlabeledImages(src, max_images=8), steps=9)) == list(range(8))
