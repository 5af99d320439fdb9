"""The shared data types: class info, samples, the skip report and the source base class.

A source is a deterministic, streaming sequence of entries (files, tar records,
generated indices). ``iter(src)`` decodes them one at a time; bad entries are skipped
and counted in :class:`SkipReport`. ``src.shard(rank, world)`` is a view on every
``world``-th entry starting at ``rank``; views compose (a worker's slice of a process's
slice), so no two views ever see the same entry and together they see all of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

from PIL import Image

from hellopack.data.convert import BadImage
from hellopack.errors import HellopackError

# The bad-fraction check waits for this many samples so one early bad file is not fatal.
MIN_SAMPLES_FOR_CHECK = 100
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ClassInfo:
    index: int  # 0..C-1, manifest order
    name: str  # human-readable, used in CLIP prompts
    source_id: str  # folder name, WordNet id or the dataset's own label


@dataclass(frozen=True)
class SourceMeta:
    """What a source is told besides where its images are: its name, channel statistics, recipe, bad-image limit."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    recipe: str
    max_bad_fraction: float = 0.01


@dataclass(frozen=True)
class Sample:
    image: Image.Image  # RGB, 8 bit
    label: int
    key: str  # unique within the source, printable


@dataclass
class SkipReport:
    """Bad entries seen in one pass: counts plus up to five (where, reason) examples."""

    seen: int = 0  # entries looked at, good and bad
    bad: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def good(self) -> int:
        return self.seen - self.bad

    @property
    def fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def record_ok(self) -> None:
        self.seen += 1

    def record_bad(self, where: str, reason: str) -> None:
        self.seen += 1
        self.bad += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((where, reason))

    def merge(self, other: "SkipReport") -> None:
        self.seen += other.seen
        self.bad += other.bad
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def exceeds(self, max_bad_fraction: float, final: bool) -> bool:
        enough = self.seen >= MIN_SAMPLES_FOR_CHECK or (final and self.seen > 0)
        return enough and self.bad > 0 and self.fraction > max_bad_fraction

    def check(self, max_bad_fraction: float, where: str, final: bool = False) -> None:
        """Raise past ``max_bad_fraction`` (after 100 samples, or at the end of a pass)."""
        if self.exceeds(max_bad_fraction, final):
            raise self.error(max_bad_fraction, where)

    def error(self, max_bad_fraction: float, where: str) -> HellopackError:
        path, reason = self.examples[0] if self.examples else ("?", "?")
        return HellopackError(
            # "read": a pass may cover part of the folder (the fit leaves the held-out images out)
            f"{self.bad} of the {self.seen} images read from '{where}' are unreadable ({self.fraction:.1%}, "
            f"allowed {max_bad_fraction:.1%}), e.g. '{path}' ({reason}); "
            f"remove or fix them, or raise --max-bad-fraction")

    def summary(self) -> str:
        if not self.bad:
            return f"{self.seen} images, none skipped"
        shown = "; ".join(f"{w} ({r})" for w, r in self.examples)
        return f"skipped {self.bad} of {self.seen} images ({self.fraction:.2%}): {shown}"

    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "bad": self.bad, "examples": [list(e) for e in self.examples]}


class ImageSource:
    """Base class of every source. Subclasses implement the four ``_`` hooks below.

    Entries are addressed by their position in the full (unsharded) order. A view made
    by :meth:`shard` keeps ``offset`` and ``stride`` into that order.
    """

    recipe: str = ""
    # Eval resize: shorter side to size / crop_pct, then centre crop (timm's convention).
    # 0.875 (256 -> 224) for photo collections; 1.0 for fixed-size small images (CIFAR).
    crop_pct: float = 0.875
    # True when _entry_at(i) is cheap, so loaders can shuffle by index instead of a buffer.
    random_access: bool = False

    def __init__(self, *, name: str, description: str, classes: list[ClassInfo], image_size: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 where: str, max_bad_fraction: float = 0.01) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise HellopackError(f"max bad fraction {max_bad_fraction} is not in [0, 1]; pass e.g. 0.01")
        self.name = name
        self.description = description
        self.classes = classes
        self.image_size = image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.where = where  # path or pattern named in error messages
        self.max_bad_fraction = max_bad_fraction
        self._offset = 0
        self._stride = 1
        self._skips = SkipReport()

    # ---- hooks --------------------------------------------------------------------
    def _total(self) -> int | None:
        """Number of entries in the full order, or None when unknown without reading it."""
        raise NotImplementedError

    def _entries(self, order_seed: int | None = None) -> Iterator[Any]:
        """All entries of the full order (``order_seed`` may reorder coarse units, e.g. shards)."""
        raise NotImplementedError

    def _entry_at(self, index: int) -> Any:
        raise NotImplementedError

    def _load(self, entry: Any) -> Sample:
        """Decode one entry; raise BadImage(reason) for a bad one."""
        raise NotImplementedError

    def _describe(self, entry: Any) -> str:
        """Where an entry lives, for skip examples."""
        return str(entry)

    def _count_per_class(self) -> list[int] | None:
        return None

    # ---- public API ---------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_samples(self) -> int | None:
        """Entries in this view (bad files included: they are only found by decoding)."""
        total = self._total()
        return None if total is None else len(range(self._offset, total, self._stride))

    @property
    def skipped(self) -> SkipReport:
        """Bad entries of the current (or last) pass over this view."""
        return self._skips

    def shard(self, rank: int, world: int) -> "ImageSource":
        """A view on every ``world``-th entry of this view, starting at ``rank``."""
        if world < 1 or not 0 <= rank < world:
            raise HellopackError(f"shard rank {rank} of world size {world} is invalid; need 0 <= rank < world")
        view = copy.copy(self)
        view._offset = self._offset + rank * self._stride
        view._stride = self._stride * world
        view._skips = SkipReport()
        return view

    def count_per_class(self) -> list[int] | None:
        """Entries per class (list indexed by class index) without decoding; None if unknown.

        For the full source only (shards share their parent's per-class counts).
        """
        return self._count_per_class()

    def __iter__(self) -> Iterator[Sample]:
        self._skips = SkipReport()
        found = False
        for _, entry in self.iter_entries():
            found = True
            sample = self.load_entry(entry)
            if sample is not None:
                yield sample
        self.finish_pass(found)

    def iter_entries(self, order_seed: int | None = None) -> Iterator[tuple[int, Any]]:
        """(position in the full order, entry) for this view's entries, undecoded."""
        if self.random_access:
            for i in range(self._offset, self._total(), self._stride):
                yield i, self._entry_at(i)
            return
        for i, entry in enumerate(self._entries(order_seed)):
            if i >= self._offset and (i - self._offset) % self._stride == 0:
                yield i, entry

    def entry_at(self, position: int) -> Any:
        """The entry at ``position`` of this view (random-access sources only)."""
        return self._entry_at(self._offset + position * self._stride)

    def load_entry(self, entry: Any) -> Sample | None:
        """Decode one entry; a bad one is counted and None returned (raises past the limit)."""
        try:
            sample = self._load(entry)
        except BadImage as e:
            self._skips.record_bad(self._describe(entry), str(e))
            self._skips.check(self.max_bad_fraction, self.where)
            return None
        self._skips.record_ok()
        return sample

    def finish_pass(self, found: bool = True) -> None:
        # The bad-fraction error first: it names a reason (e.g. a shard that cannot be opened).
        self._skips.check(self.max_bad_fraction, self.where, final=True)
        if not found and self._stride == 1:
            raise HellopackError(f"no images found in '{self.where}'; check the path or pattern")

    def __repr__(self) -> str:
        view = "" if self._stride == 1 else f", shard {self._offset}/{self._stride}"
        return f"<{type(self).__name__} {self.recipe} '{self.name}': {self.description}{view}>"
