"""Training and held-out sources for a recipe: the recipe's test split, or a fixed holdout.

The held-out images measure teachers (``teach``) and the projector (build's fidelity
report). When the recipe has a separate labelled split (``val``/``test`` folders or
shards, CIFAR's test set, synthetic's test stream) that is used and every training image
is trained on. Otherwise every k-th training image (k = round(1 / val_fraction)) is held
out by stream position, and the training view skips exactly those images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from hellopack.data import ImageSource, open_source
from hellopack.data.subset import DerivedSource, first_n
from hellopack.errors import HellopackError


class HoldoutRest(DerivedSource):
    """Every entry of ``parent`` except positions 0, k, 2k, ... (those form ``parent.shard(0, k)``)."""

    def __init__(self, parent: ImageSource, k: int) -> None:
        if k < 2:
            raise ValueError("holdout stride must be at least 2")
        super().__init__(parent, f"{parent.description} (without every {k}th image)")
        self._k = k

    def _total(self) -> int | None:
        n = self._parent.num_samples
        return None if n is None else n - len(range(0, n, self._k))

    def _entries(self, order_seed: int | None = None) -> Iterator[Any]:
        # The parent's fixed order (no per-epoch shard shuffle), so the holdout never moves.
        for pos, entry in self._parent.iter_entries(None):
            if pos % self._k:
                yield entry

    def _entry_at(self, index: int) -> Any:
        # The j-th kept entry sits after j // (k - 1) + 1 held-out ones.
        return self._parent.entry_at(index + index // (self._k - 1) + 1)


@dataclass(frozen=True)
class Splits:
    full: ImageSource  # the whole training split (selection reads it)
    train: ImageSource  # what is trained on (full, or full minus the holdout)
    eval: ImageSource  # held-out labelled images
    eval_kind: str  # "test" (the recipe's own split) or "holdout"

    def train_count(self) -> int | None:
        return self.train.num_samples


def open_splits(recipe: str, data_dir: str | None, *, val_fraction: float = 0.02, max_images: int | None = None,
                eval_images: int | None = None, **source: Any) -> Splits:
    """``max_images``: train on the first N training images only; ``eval_images``: hold out at most N.

    ``source``: open_source's options for both splits (classes_file, download, max_bad_fraction, synthetic).
    """
    kw = dict(source)
    full = open_source(recipe, data_dir, split="train", **kw)
    try:
        held = open_source(recipe, data_dir, split="val", **kw)
    except HellopackError:
        held = None
    # Sources without split folders serve the same images for every split: that is no holdout.
    if held is not None and _same_classes(full, held) and not _same_images(full, held):
        return Splits(full, first_n(full, max_images), first_n(held, eval_images), "test")
    k = max(2, round(1 / val_fraction))
    return Splits(full, first_n(HoldoutRest(full, k), max_images), first_n(full.shard(0, k), eval_images), "holdout")


def _same_classes(a: ImageSource, b: ImageSource) -> bool:
    return [c.source_id for c in a.classes] == [c.source_id for c in b.classes]


def _same_images(a: ImageSource, b: ImageSource) -> bool:
    """Cheap test: different counts, or a different first image, mean different images."""
    if a.where != b.where:
        return False
    if a.num_samples is not None and b.num_samples is not None and a.num_samples != b.num_samples:
        return False
    first_a, first_b = next(iter(a), None), next(iter(b), None)
    return first_a is None or first_b is None or first_a.key == first_b.key
