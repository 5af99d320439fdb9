"""Images without labels: what the pretraining loop reads.

:class:`UnlabeledImages` wraps an :class:`~hellopack.data.ImageSource` and hands out
PIL images only. It is the one place that touches a decoded ``Sample`` and it reads
``sample.image`` and nothing else, so the loop behind it cannot see a label even by
accident (tests pass samples whose ``label`` raises).

Order. Every epoch is a pure function of (seed, epoch): random-access sources (folders,
synthetic, torchvision CIFAR) by a seeded permutation of positions; streaming sources
(shards) by a seeded shard order and a bounded shuffle buffer of undecoded entries
(with ``max_images``, the first N entries in the source's own order, buffer-shuffled).
Process ``rank`` of ``world`` takes every ``world``-th image of that order. The two
views of an image are seeded by (seed, epoch, position), and DataLoader workers each
take turns on fixed chunks of entries, so a batch's pixels depend on neither the worker
count nor timing. Batches are cut from the stream of good images (bad files are skipped).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hellopack.data.loader import Shard, buffered_shuffle
from hellopack.data.types import ImageSource, SkipReport
from hellopack.errors import HellopackError
from hellopack.pretrain.augment import two_views

SHUFFLE_BUFFER = 2048  # undecoded entries held for streaming sources
CHUNK = 32  # entries per unit of work (one DataLoader item)


def mix(*parts: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    seq = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts])
    return int(seq.generate_state(1, np.uint64)[0] >> 1)


class UnlabeledImages:
    """An image-only view of a source: entries and decoded PIL images, never a label."""

    def __init__(self, src: ImageSource, max_images: int | None = None) -> None:
        self._src = src
        self.max_images = max_images
        self.where = src.where
        self.max_bad_fraction = src.max_bad_fraction

    @property
    def num_images(self) -> int | None:
        n = self._src.num_samples
        if n is None:
            return self.max_images
        return n if self.max_images is None else min(n, self.max_images)

    def epoch(self, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Iterator[tuple[int, Any]]:
        """This process's (position, undecoded entry) pairs of one epoch, in order."""
        if self._src.random_access:
            n = self.num_images or 0
            g = torch.Generator().manual_seed(mix(seed, epoch))
            for pos in torch.randperm(n, generator=g)[rank::world].tolist():
                yield pos, self._src.entry_at(pos)
            return
        mine = self._src.shard(rank, world)
        capped = self.max_images is not None
        entries = mine.iter_entries(None if capped else mix(seed, epoch))
        if capped:  # natural order: positions only grow, so stop at the first one past the cap
            entries = itertools.takewhile(lambda e: e[0] < self.max_images, entries)
        yield from buffered_shuffle(entries, random.Random(mix(seed, epoch, rank)), SHUFFLE_BUFFER)

    def decode(self, view: ImageSource, entry: Any) -> Image.Image | None:
        """The image of one entry (None for a bad file, counted in ``view.skipped``)."""
        sample = view.load_entry(entry)
        return None if sample is None else sample.image

    def counting_view(self) -> ImageSource:
        """A fresh view with its own skip report, for one pass."""
        return self._src.shard(0, 1)


class _Chunks(IterableDataset):
    """One epoch of one process as chunks of CHUNK consecutive entries, each decoded and augmented.

    Worker ``w`` of ``nw`` handles chunks w, w+nw, ... and DataLoader returns them in chunk
    order, so the stream (and every batch cut from it) is the same for any worker count.
    Items: ("chunk", [(position, view1, view2), ...], skip report dict) or ("error", message).
    """

    def __init__(self, images: UnlabeledImages, tf: Callable[[Image.Image], torch.Tensor], seed: int, epoch: int,
                 rank: int, world: int) -> None:
        super().__init__()
        self.images, self.tf, self.seed, self.epoch, self.rank, self.world = images, tf, seed, epoch, rank, world

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        chunk: list[tuple[int, Any]] = []
        index = 0
        try:
            for item in self.images.epoch(self.seed, self.epoch, self.rank, self.world):
                chunk.append(item)
                if len(chunk) == CHUNK:
                    if index % nw == wid:
                        yield self._work(chunk)
                    chunk, index = [], index + 1
            if chunk and index % nw == wid:
                yield self._work(chunk)
        except HellopackError as e:
            yield ("error", str(e))

    def _work(self, chunk: list[tuple[int, Any]]) -> tuple[Any, ...]:
        view = self.images.counting_view()  # a private skip report for this chunk
        out = []
        for pos, entry in chunk:
            image = self.images.decode(view, entry)
            if image is not None:
                a, b = two_views(self.tf, image, mix(self.seed, self.epoch, pos))
                out.append((pos, a, b))
        return ("chunk", out, view.skipped.to_dict())


def two_view_batches(images: UnlabeledImages, tf: Callable[[Image.Image], torch.Tensor], batch_size: int,
                     steps: int, seed: int, epoch: int, shard: Shard = Shard(),
                     num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Up to ``steps`` full batches (positions, view1, view2) of one epoch; bad images are skipped.

    Raises HellopackError past the source's ``max_bad_fraction``.
    """
    rank, world = shard.rank, shard.world
    ds = _Chunks(images, tf, seed, epoch, rank, world)
    stream: Any = ds if num_workers == 0 else DataLoader(ds, batch_size=None, num_workers=num_workers)
    report = SkipReport()
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    done = 0
    for message in stream:
        if message[0] == "error":
            raise HellopackError(message[1])
        _, items, skips = message
        report.merge(SkipReport(skips["seen"], skips["bad"], [tuple(e) for e in skips["examples"]]))
        report.check(images.max_bad_fraction, images.where)
        pending.extend(items)
        while len(pending) >= batch_size and done < steps:
            batch, pending = pending[:batch_size], pending[batch_size:]
            yield (torch.tensor([p for p, _, _ in batch]), torch.stack([a for _, a, _ in batch]),
                   torch.stack([b for _, _, b in batch]))
            done += 1
        if done >= steps:
            return
    if report.seen == 0 and world == 1:
        raise HellopackError(f"no images found in '{images.where}'; check the path or pattern")
    report.check(images.max_bad_fraction, images.where, final=True)
