"""make_loader: shapes, eval transform, deterministic training order, process/worker sharding."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from hellopack.data import Shard, SyntheticConfig, make_loader, open_source
from hellopack.data.loader import _Batches
from hellopack.errors import HellopackError

CFG = SyntheticConfig(num_classes=5, per_class=7, test_per_class=2, image_size=16)  # 35 training images


def synth():
    return open_source("synthetic", synthetic=CFG)


def rows(batches) -> list[bytes]:
    return [row.numpy().tobytes() for x, _ in batches for row in x]


def test_eval_batches_are_the_images_in_order():
    src = synth()
    batches = list(make_loader(src, 16, 8, train=False, seed=0))
    assert [tuple(x.shape) for x, _ in batches] == [(8, 3, 16, 16)] * 4 + [(3, 3, 16, 16)]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    images = list(src)
    expected = F.to_dtype(F.to_image(images[0].image), torch.float32, scale=True)
    assert torch.equal(x[0], expected)
    assert torch.cat([y for _, y in batches]).tolist() == [s.label for s in images]


def test_eval_resizes_and_centre_crops_photos(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.new("RGB", (120, 80), (i * 50, 0, 0)).save(tmp_path / "a" / f"{i}.png")
    src = open_source("folder", tmp_path)
    assert src.crop_pct == 0.875
    (x, y), = list(make_loader(src, 24, 4, train=False, seed=0))
    assert tuple(x.shape) == (3, 3, 24, 24) and y.tolist() == [0, 0, 0]
    assert abs(float(x[1, 0].mean()) - 50 / 255) < 1e-3


def test_training_order_is_seeded_and_changes_each_epoch():
    src = synth()
    a, b = make_loader(src, 16, 8, train=True, seed=3), make_loader(src, 16, 8, train=True, seed=3)
    ea0, eb0 = list(a), list(b)
    assert rows(ea0) == rows(eb0) and all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(ea0, eb0))
    ea1 = list(a)
    assert rows(ea1) != rows(ea0)
    a.set_epoch(0)
    assert rows(list(a)) == rows(ea0)
    assert rows(list(make_loader(src, 16, 8, train=True, seed=4))) != rows(ea0)
    # every image once per epoch: the label multiset is the source's
    assert Counter(torch.cat([y for _, y in ea0]).tolist()) == Counter({c: 7 for c in range(5)})


def test_training_drops_only_a_final_batch_of_one():
    src = open_source("synthetic", synthetic=SyntheticConfig(num_classes=2, per_class=8, image_size=16))  # 16 images
    train = make_loader(src, 16, 5, train=True, seed=0)
    assert [len(y) for _, y in train] == [5, 5, 5] and train.num_batches == 3
    test = make_loader(src, 16, 5, train=False, seed=0)
    assert [len(y) for _, y in test] == [5, 5, 5, 1] and len(test) == 4


@pytest.mark.parametrize("train", [False, True])
def test_process_and_worker_shares_are_disjoint_and_complete(train):
    src = synth()
    n = src.num_samples
    seen: list[int] = []
    for rank in range(3):
        for wid in range(2):
            ds = _Batches(src, 16, 4, train, seed=1, epoch=2, shard=Shard(rank, 3))
            _, items = ds._plan(wid, 2)
            seen.extend(pos for pos, _ in items)
    assert sorted(seen) == list(range(n))


def test_rank_loaders_split_eval_images():
    src = synth()
    full = rows(make_loader(src, 16, 4, train=False, seed=0))
    parts = [rows(make_loader(src, 16, 4, train=False, seed=0, shard=Shard(r, 3))) for r in range(3)]
    assert sum(len(p) for p in parts) == len(full) == 35
    assert sorted(b for p in parts for b in p) == sorted(full)
    assert parts[1][0] == full[1] and parts[2][0] == full[2]  # every third image


def test_workers_give_the_same_images_as_in_process():
    src = synth()
    solo = rows(make_loader(src, 16, 5, train=True, seed=5))
    pool = rows(make_loader(src, 16, 5, train=True, seed=5, num_workers=2))
    assert len(solo) == 35 and sorted(pool) == sorted(solo)  # per-sample seeds: same augmented pixels, other batch order


def _shard(path: Path, n: int) -> None:
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i, 0, 0)).save(buf, "PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"k{i:03d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_streaming_source_training_shuffles_and_splits(tmp_path):
    _shard(tmp_path / "train-0.tar", 12)
    _shard(tmp_path / "train-1.tar", 12)
    (tmp_path / "classes.txt").write_text("even\nodd\n")
    src = open_source("wds", tmp_path)
    assert src.random_access is False
    reds = lambda batches: sorted(round(float(v) * 255) for x, _ in batches for v in x[:, 0, 4, 4])  # noqa: E731
    ev = list(make_loader(src, 8, 5, train=False, seed=0))
    assert reds(ev) == sorted(list(range(12)) * 2)
    parts = [list(make_loader(src, 8, 5, train=False, seed=0, shard=Shard(r, 2))) for r in range(2)]
    assert sorted(reds(parts[0]) + reds(parts[1])) == reds(ev)
    tr = make_loader(src, 8, 24, train=True, seed=0)
    (x, y), = list(tr)
    assert x.shape == (24, 3, 8, 8) and sorted(y.tolist()) == [0] * 12 + [1] * 12
    assert tr.num_batches == 1


def test_bad_images_in_loader_are_counted_or_fatal(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8)).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "z.png").write_bytes(b"")
    lenient = open_source("folder", tmp_path, max_bad_fraction=0.5)
    loader = make_loader(lenient, 8, 4, train=False, seed=0)
    assert sum(len(y) for _, y in loader) == 6
    assert (loader.skipped.seen, loader.skipped.bad) == (7, 1)
    for workers in (0, 1):
        strict = make_loader(open_source("folder", tmp_path), 8, 4, train=False, seed=0, num_workers=workers)
        with pytest.raises(HellopackError) as e:
            list(strict)
        assert str(e.value).startswith("1 of the 7 images read from ") and "\n" not in str(e.value)


def test_bad_loader_arguments():
    with pytest.raises(HellopackError, match="rank 3 of world size 2 is invalid"):
        make_loader(synth(), 16, 4, train=False, seed=0, shard=Shard(3, 2))
