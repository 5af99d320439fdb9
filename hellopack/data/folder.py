"""ImageFolder trees: ROOT/<class>/**/<image>, streamed in a fixed order.

Order: class folders sorted by name (byte order, which equals torchvision's order for
UTF-8 names), then each class's files depth-first with every directory level sorted.
Hidden entries (names starting with '.', e.g. .ipynb_checkpoints) are ignored.

The scan keeps only file names, packed into one bytes buffer with an offsets array
(about 40 bytes per image, and no per-path Python objects, which would be copied into
every DataLoader worker); images are decoded one at a time when iterated.

Symlinks are followed, but each directory is entered once per class (keyed by device
and inode), so symlink loops and links back to the root cannot hang the scan.
Unreadable directories are skipped and noted in ``src.notes``. File names need not be
UTF-8: paths are kept as bytes; keys and class ids show undecodable bytes as \\xNN.
"""

from __future__ import annotations

import os
import stat
from array import array
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from hellopack.data.convert import BadImage, is_image_name, open_rgb
from hellopack.data.names import apply_classes_file, display_name, printable
from hellopack.data.types import ClassInfo, ImageSource, Sample, SourceMeta
from hellopack.errors import DataPathError, HellopackError

SPLIT_NAMES = ("train", "val", "validation", "test")
# Which sub-folder serves a requested split, in order of preference.
SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "test"), "test": ("test", "val", "validation")}
SMALL_IMAGE_MAX = 64
MIN_NATURAL_SIZE = 8  # smaller images (icons, 1x1 spacers) never set a folder's natural size
NATURAL_SIZE_PROBES = 32  # images looked at (headers only) to find it
# Unknown photo collections get ImageNet statistics (timm's default for any RGB data).
FOLDER_MEAN = (0.485, 0.456, 0.406)
FOLDER_STD = (0.229, 0.224, 0.225)  # square images up to this size are "CIFAR-like": natural size, crop_pct 1


def check_dir(path: str | os.PathLike) -> Path:
    root = Path(path)
    if not root.exists():
        raise DataPathError(f"data dir '{root}' does not exist", "check {flag}")
    if not root.is_dir():
        raise HellopackError(f"data dir '{root}' is not a folder; pass the folder that holds one folder per class")
    return root


def visible_subdirs(root: Path) -> list[bytes]:
    """Names (bytes, sorted) of the non-hidden sub-folders of ``root``, symlinks followed."""
    try:
        with os.scandir(os.fsencode(root)) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise HellopackError(f"cannot read data dir '{root}': {e.strerror or e}; check its permissions") from None
    out = []
    for e in entries:
        if e.name.startswith(b"."):
            continue
        try:
            if e.is_dir():
                out.append(e.name)
        except OSError:
            continue
    return out


def resolve_split_dir(root: Path, split: str) -> Path:
    """ROOT/train, ROOT/val, ... when ROOT holds only split folders; else ROOT itself."""
    names = [os.fsdecode(n) for n in visible_subdirs(root)]
    if not names or not set(names) <= set(SPLIT_NAMES):
        return root
    for candidate in SPLIT_DIRS.get(split, (split,)):
        if candidate in names:
            return root / candidate
    raise DataPathError(f"no '{split}' folder under '{root}' (found: {', '.join(sorted(names))})",
                        f"add a '{split}' folder or point {{flag}} at the class folders")


def walk_images(top: bytes, stop_at: tuple[bytes, ...] = ()) -> tuple[list[bytes], list[str]]:
    """Image paths under ``top`` relative to it (bytes), in the documented order, plus problems.

    Directories are entered once (device, inode); ``stop_at`` are extra directories
    never entered (the data root, so a link back to it does not pull in other classes).
    """
    files: list[bytes] = []
    problems: list[str] = []
    visited: set[tuple[int, int]] = set()
    for d in stop_at:
        try:
            st = os.stat(d)
            visited.add((st.st_dev, st.st_ino))
        except OSError:
            pass

    def listing(path: bytes) -> list[os.DirEntry] | None:
        try:
            st = os.stat(path)
        except OSError as e:
            problems.append(f"{printable(path)}: {e.strerror or e}")
            return None
        key = (st.st_dev, st.st_ino)
        if key in visited:
            return None
        visited.add(key)
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems.append(f"{printable(path)}: {e.strerror or e}")
            return None

    # An explicit stack of (relative prefix, remaining entries) keeps depth unlimited.
    first = listing(top)
    stack: list[tuple[bytes, Iterator[os.DirEntry]]] = [(b"", iter(first))] if first is not None else []
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith(b"."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            sub = listing(entry.path)
            if sub is not None:
                stack.append((prefix + entry.name + b"/", iter(sub)))
        elif is_image_name(entry.name):
            # Broken links and unreadable files stay in: decoding counts them as bad.
            files.append(prefix + entry.name)
    return files, problems


class FolderSource(ImageSource):
    """One folder per class; ``folders[i]`` holds the images of ``classes[i]``."""

    recipe = "folder"
    random_access = True

    def __init__(self, root: Path, folders: list[bytes], classes: list[ClassInfo], meta: SourceMeta,
                 image_size: int | None = None) -> None:
        assert len(folders) == len(classes)
        self.recipe = meta.recipe
        self.root = root
        self._folders = [os.path.join(os.fsencode(root), f) for f in folders]
        self.notes: list[str] = []
        blob = bytearray()
        offsets = array("q", [0])
        starts = [0]
        empty = []
        root_b = os.fsencode(root)
        for folder, info in zip(self._folders, classes):
            files, problems = walk_images(folder, stop_at=(root_b,))
            self.notes.extend(problems)
            if not files:
                empty.append(info.source_id)
            for rel in files:
                blob += rel
                offsets.append(len(blob))
            starts.append(starts[-1] + len(files))
        if starts[-1] == 0:
            raise HellopackError(f"no images found under '{root}'; expected one folder per class")
        if empty:
            shown = ", ".join(f"'{e}'" for e in empty[:5]) + (", ..." if len(empty) > 5 else "")
            why = f" (cannot read: {self.notes[0]})" if self.notes else ""
            raise HellopackError(f"class folder {shown} under '{root}' has no images{why}; "
                                 f"add images or remove the folder")
        self._blob = np.frombuffer(bytes(blob), dtype=np.uint8)
        self._offsets = np.frombuffer(offsets.tobytes(), dtype=np.int64)
        self._starts = np.asarray(starts, dtype=np.int64)
        counts = np.diff(self._starts)
        natural, crop_pct = _natural_size(self._path(i) for i in range(min(int(self._starts[-1]), NATURAL_SIZE_PROBES)))
        self.crop_pct = crop_pct
        n = int(self._starts[-1])
        super().__init__(
            name=meta.name, classes=classes, image_size=image_size or natural, mean=meta.mean, std=meta.std,
            where=str(root), max_bad_fraction=meta.max_bad_fraction,
            description=f"image folder '{root}': {len(classes)} classes, {n:,} images "
                        f"({int(counts.min())}..{int(counts.max())} per class)")

    def _path(self, index: int) -> bytes:
        label = self._label(index)
        rel = self._blob[self._offsets[index]:self._offsets[index + 1]].tobytes()
        return self._folders[label] + b"/" + rel

    def _label(self, index: int) -> int:
        return int(np.searchsorted(self._starts, index, side="right")) - 1

    def _total(self) -> int:
        return int(self._starts[-1])

    def _entry_at(self, index: int) -> int:
        return index

    def _entries(self, order_seed: int | None = None) -> Iterator[int]:
        return iter(range(self._total()))

    def _load(self, index: int) -> Sample:
        label = self._label(index)
        path = self._path(index)
        _check_regular(path)
        image = open_rgb(os.fsdecode(path))  # bytes would mean image data; surrogateescape keeps odd names
        rel = path[len(os.fsencode(self.root)):].lstrip(b"/")
        return Sample(image=image, label=self.classes[label].index, key=printable(rel))

    def _describe(self, index: int) -> str:
        return printable(self._path(index))

    def _count_per_class(self) -> list[int]:
        counts = np.diff(self._starts)
        out = [0] * len(self.classes)
        for info, c in zip(self.classes, counts):
            out[info.index] = int(c)
        return out


def _check_regular(path: bytes) -> None:
    """Never open what is not a regular file: a FIFO named 000.jpg would block the build forever, a
    device would stream without end. Counted as an unreadable image (BadImage), like a broken link."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise BadImage(f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "not a file"
        raise BadImage(f"not a regular file ({kind})")


def _natural_size(paths: Iterable[bytes]) -> tuple[int, float]:
    """Small square images (CIFAR-like exports) keep their size; photos default to 224.

    Decided by the first readable image of at least MIN_NATURAL_SIZE px: one stray icon or
    broken file sorted first must not set the size of the whole build.
    """
    for path in paths:
        try:
            _check_regular(path)
            with Image.open(path) as img:
                w, h = img.size
        except Exception:  # noqa: BLE001 - a bad file is counted later, not fatal here
            continue
        if min(w, h) < MIN_NATURAL_SIZE:
            continue
        if w == h and w <= SMALL_IMAGE_MAX:
            return w, 1.0
        return 224, 0.875
    return 224, 0.875


def class_folders(root: Path) -> list[bytes]:
    folders = visible_subdirs(root)
    if not folders:
        raise HellopackError(f"no images found under '{root}'; expected one folder per class")
    return folders


def open_folder(path: str | os.PathLike, *, split: str = "train", classes_file: str | os.PathLike | None = None,
                max_bad_fraction: float = 0.01) -> FolderSource:
    """The 'folder' recipe: class names are the folder names ('_' shown as spaces)."""
    base = check_dir(path)
    root = resolve_split_dir(base, split)
    folders = class_folders(root)
    ids = [printable(f) for f in folders]
    classes = apply_classes_file([ClassInfo(i, display_name(s), s) for i, s in enumerate(ids)], classes_file)
    return FolderSource(root, folders, classes, SourceMeta(base.resolve().name or str(base), FOLDER_MEAN,
                                                           FOLDER_STD, "folder", max_bad_fraction))
