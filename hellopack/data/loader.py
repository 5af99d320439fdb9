"""Batches of float images in [0, 1] from any source, for training and evaluation.

Order. Evaluation follows the source's order. Training reshuffles every epoch:
random-access sources (folders, synthetic, torchvision CIFAR) by a seeded permutation
of indices; streaming sources (shards) by a seeded shard order plus a bounded shuffle
buffer of undecoded samples (memory stays flat). Processes take every ``world``-th
sample of that order starting at ``rank``, DataLoader workers every ``num_workers``-th
of a process's share: disjoint, and together complete.

Augmentation (torchvision.transforms.v2). Train: ``RandomResizedCrop(size, scale=(0.08, 1))``
and a horizontal flip for photo sources; for fixed-size small images (CIFAR, synthetic:
``src.crop_pct == 1``) the standard CIFAR recipe instead, a random crop with
``size // 8`` zero padding plus a flip, because 8 % crops of a 32-pixel image are
mostly noise. Each sample's randomness is seeded by (seed, epoch, sample position), so a
batch's pixels do not depend on the worker count. Eval: shorter side resized to
``size / crop_pct`` (256 for 224 on photos), centre crop; images already ``size`` square
in a ``crop_pct == 1`` source are only converted.

Bad images are skipped and counted per pass in ``loader.skipped``; past the source's
``max_bad_fraction`` the iteration raises HellopackError (also from worker processes).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import v2

from hellopack.data.types import ImageSource, SkipReport
from hellopack.errors import HellopackError
from hellopack.rng import cpu_seeded

SHUFFLE_BUFFER = 512  # undecoded samples held for streaming sources (about 60 MB of ImageNet JPEGs)

T = TypeVar("T")


def buffered_shuffle(items: Iterable[T], rng: random.Random, size: int = SHUFFLE_BUFFER) -> Iterator[T]:
    """Shuffle a stream through a bounded buffer (webdataset's shuffle stage): memory stays flat."""
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            k = rng.randrange(len(buffer))
            buffer[k], buffer[-1] = buffer[-1], buffer[k]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def _mix(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    seq = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts])
    return int(seq.generate_state(1, np.uint64)[0] >> 1)


def eval_transform(size: int, crop_pct: float, resize_to: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """Shorter side to ``resize_to`` (default: ``size / crop_pct``), then a centre crop of ``size``."""
    scale = resize_to if resize_to is not None else int(math.floor(size / crop_pct + 1e-6))
    resize = v2.Compose([v2.Resize(scale, antialias=True), v2.CenterCrop(size)])
    to_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    identity = scale == size if resize_to is not None else crop_pct == 1.0

    def apply(img: Image.Image) -> torch.Tensor:
        if not (identity and img.size == (size, size)):
            img = resize(img)
        return to_float(img)

    return apply


def train_transform(size: int, crop_pct: float) -> Callable[[Image.Image], torch.Tensor]:
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if crop_pct == 1.0:
        fit = v2.Resize((size, size), antialias=True)
        crop = v2.Compose([v2.RandomCrop(size, padding=max(1, size // 8)), v2.RandomHorizontalFlip(), *to_float])

        def apply(img: Image.Image) -> torch.Tensor:
            return crop(img if img.size == (size, size) else fit(img))

        return apply
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                       *to_float])


@dataclass(frozen=True)
class Shard:
    """This process's part of the data: every ``world``-th sample, starting at ``rank``."""

    rank: int = 0
    world: int = 1


class _Batches(IterableDataset):
    """One epoch of one process; yields ("batch", x, y), then ("skips", report) or ("error", msg)."""

    def __init__(self, src: ImageSource, size: int, batch_size: int, train: bool, seed: int, epoch: int,
                 shard: Shard = Shard(), eval_resize: int | None = None) -> None:
        super().__init__()
        self.src, self.size, self.batch_size, self.train = src, size, batch_size, train
        self.seed, self.epoch, self.rank, self.world = seed, epoch, shard.rank, shard.world
        self.eval_resize = eval_resize

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            view, items = self._plan(wid, nw)
            yield from self._batches(view, items)
        except HellopackError as e:
            yield ("error", str(e))
            return
        yield ("skips", view.skipped.to_dict())

    def _plan(self, wid: int, nw: int) -> tuple[ImageSource, Iterator[tuple[int, Any]]]:
        """This worker's private view of the source (its skip report is the worker's) and its
        (position, entry) pairs in this epoch's order."""
        if self.src.random_access:
            view = self.src.shard(0, 1)
            return view, self._by_index(view, wid, nw)
        view = self.src.shard(self.rank, self.world).shard(wid, nw)
        return view, self._by_stream(view, wid)

    def _by_index(self, view: ImageSource, wid: int, nw: int) -> Iterator[tuple[int, Any]]:
        n = view.num_samples or 0
        if self.train:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(n, generator=g).numpy()
        else:
            order = np.arange(n)
        for pos in order[self.rank::self.world][wid::nw]:
            yield int(pos), view.entry_at(int(pos))

    def _by_stream(self, mine: ImageSource, wid: int) -> Iterator[tuple[int, Any]]:
        order_seed = _mix(self.seed, self.epoch) if self.train else None
        entries = mine.iter_entries(order_seed)
        if not self.train:
            yield from entries
            return
        yield from buffered_shuffle(entries, random.Random(_mix(self.seed, self.epoch, self.rank, wid)))

    def _batches(self, view: ImageSource, items: Iterator[tuple[int, Any]]) -> Iterator[tuple[Any, ...]]:
        tf = train_transform(self.size, view.crop_pct) if self.train else \
            eval_transform(self.size, view.crop_pct, self.eval_resize)
        xs: list[torch.Tensor] = []
        ys: list[int] = []
        for pos, entry in items:
            sample = view.load_entry(entry)
            if sample is None:
                continue
            if self.train:
                with cpu_seeded(_mix(self.seed, self.epoch, pos)):
                    xs.append(tf(sample.image))
            else:
                xs.append(tf(sample.image))
            ys.append(sample.label)
            if len(xs) == self.batch_size:
                yield ("batch", torch.stack(xs), torch.tensor(ys, dtype=torch.long))
                xs, ys = [], []
        # A one-image training batch breaks BatchNorm; drop it (only then).
        if xs and not (self.train and len(xs) == 1 and self.batch_size > 1):
            yield ("batch", torch.stack(xs), torch.tensor(ys, dtype=torch.long))


class Loader:
    """Iterable of (x float[B, 3, size, size] in [0, 1], y long[B]); each pass is one epoch.

    The epoch advances by one per pass (``set_epoch`` to resume elsewhere), so training
    order and augmentation change every epoch and are reproducible from ``seed``.
    """

    def __init__(self, src: ImageSource, size: int, batch_size: int, train: bool, seed: int,
                 num_workers: int = 0, shard: Shard = Shard(), eval_resize: int | None = None) -> None:
        rank, world = shard.rank, shard.world
        if size < 1 or batch_size < 1 or num_workers < 0:
            raise HellopackError(f"loader needs size >= 1, batch size >= 1 and workers >= 0 "
                                 f"(got {size}, {batch_size}, {num_workers})")
        if world < 1 or not 0 <= rank < world:
            raise HellopackError(f"rank {rank} of world size {world} is invalid; need 0 <= rank < world")
        self.src, self.size, self.batch_size, self.train = src, size, batch_size, train
        self.seed, self.num_workers, self.rank, self.world = seed, num_workers, rank, world
        self.eval_resize = eval_resize  # evaluation: shorter side to this (default: size / crop_pct)
        self.epoch = 0
        self.skipped = SkipReport()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_batches(self) -> int | None:
        """Batches per pass when the sample count is known (bad images make it smaller)."""
        n = self.src.num_samples
        if n is None:
            return None
        mine = len(range(self.rank, n, self.world))
        total = 0
        for w in range(max(1, self.num_workers)):
            k = len(range(w, mine, max(1, self.num_workers)))
            full, rest = divmod(k, self.batch_size)
            total += full + (1 if rest and not (self.train and rest == 1 and self.batch_size > 1) else 0)
        return total

    def __len__(self) -> int:
        n = self.num_batches
        if n is None:
            raise TypeError("this loader's length is unknown (streaming source without a sample count)")
        return n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = _Batches(self.src, self.size, self.batch_size, self.train, self.seed, self.epoch,
                      Shard(self.rank, self.world), self.eval_resize)
        self.epoch += 1
        stream: Any = iter(ds) if self.num_workers == 0 else iter(
            DataLoader(ds, batch_size=None, num_workers=self.num_workers, persistent_workers=False))
        report = SkipReport()
        self.skipped = report
        for message in stream:
            if message[0] == "batch":
                yield message[1], message[2]
            elif message[0] == "error":
                raise HellopackError(message[1])
            else:
                d = message[1]
                report.merge(SkipReport(d["seen"], d["bad"], [tuple(e) for e in d["examples"]]))
        if report.seen == 0 and self.world == 1:
            raise HellopackError(f"no images found in '{self.src.where}'; check the path or pattern")
        report.check(self.src.max_bad_fraction, self.src.where, final=True)


def make_loader(src: ImageSource, size: int, batch_size: int, train: bool, seed: int, num_workers: int = 0,
                shard: Shard = Shard(), eval_resize: int | None = None) -> Loader:
    return Loader(src, size, batch_size, train, seed, num_workers=num_workers, shard=shard, eval_resize=eval_resize)
