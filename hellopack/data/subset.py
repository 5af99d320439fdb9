"""The first N entries of a source, in its own fixed order: quick runs and capped evaluations."""

from __future__ import annotations

from typing import Any, Iterator

from hellopack.data.types import ImageSource, Sample


class DerivedSource(ImageSource):
    """A source made of some of ``parent``'s entries: same classes, statistics and decoding."""

    def __init__(self, parent: ImageSource, description: str) -> None:
        super().__init__(name=parent.name, description=description, classes=parent.classes,
                         image_size=parent.image_size, mean=parent.mean, std=parent.std, where=parent.where,
                         max_bad_fraction=parent.max_bad_fraction)
        self.recipe = parent.recipe
        self.crop_pct = parent.crop_pct
        self.random_access = parent.random_access
        self._parent = parent

    def _load(self, entry: Any) -> Sample:
        return self._parent._load(entry)

    def _describe(self, entry: Any) -> str:
        return self._parent._describe(entry)


class FirstN(DerivedSource):
    """Entries 0..n-1 of ``parent`` (its unshuffled order, so the subset never moves between epochs)."""

    def __init__(self, parent: ImageSource, n: int) -> None:
        if n < 1:
            raise ValueError("a subset needs at least one image")
        super().__init__(parent, f"{parent.description} (first {n:,} images)")
        self._n = n

    def _total(self) -> int | None:
        total = self._parent.num_samples
        return None if total is None else min(total, self._n)

    def _entries(self, order_seed: int | None = None) -> Iterator[Any]:
        for j, (_, entry) in enumerate(self._parent.iter_entries(None)):
            if j >= self._n:
                return
            yield entry

    def _entry_at(self, index: int) -> Any:
        return self._parent.entry_at(index)


def first_n(src: ImageSource, n: int | None) -> ImageSource:
    """``src`` itself when ``n`` is None or covers it, else its first ``n`` images."""
    if n is None or (src.num_samples is not None and src.num_samples <= n):
        return src
    return FirstN(src, n)
