"""WebDataset shards: local files, brace patterns ('train-{000000..000004}.tar'), URLs.

Each sample is ``KEY.<image>`` (jpg, jpeg, png, webp, bmp, gif, tif, tiff, ppm) plus
``KEY.cls``, the class index as ASCII digits; names come from a classes file (one name
per line, line number = index). webdataset reads the tar streams; its ``handler=``
counts unreadable tar data as bad samples instead of stopping; images are decoded by
:func:`hellopack.data.convert.open_rgb`, so every source converts the same way.

Sharding is by sample position (every world-th sample), so each process reads every
shard but decodes only its own samples. For local shards ``num_samples`` and
``count_per_class()`` come from one pass over the tar headers (no image decoding),
made the first time they are asked for; for URLs they are None.
"""

from __future__ import annotations

import os
import random
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from PIL import Image

from hellopack.data.convert import WDS_IMAGE_KEYS, BadImage, open_rgb
from hellopack.data.folder import SMALL_IMAGE_MAX, SPLIT_DIRS, SPLIT_NAMES
from hellopack.data.types import ClassInfo, ImageSource, Sample, SourceMeta
from hellopack.errors import DataPathError, HellopackError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CLASSES_TXT = "classes.txt"  # a shard folder's own class names, used when --classes is not given


def is_url(spec: str) -> bool:
    scheme = urlparse(spec).scheme
    return len(scheme) > 1 and scheme != "file"  # "C:" style drive letters are paths


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Brace patterns and '::' lists expanded (webdataset's rules); local files must exist."""
    from webdataset.shardlists import expand_urls

    urls = list(expand_urls(spec)) if isinstance(spec, str) else [str(s) for s in spec]
    if not urls:
        raise HellopackError(f"shard pattern '{spec}' names no files; check the pattern")
    for url in urls:
        if not is_url(url):
            path = urlparse(url).path if url.startswith("file:") else url
            if not os.path.isfile(path):
                raise HellopackError(f"shard '{url}' does not exist; check the path or brace pattern")
    return urls


def _split_of(name: str) -> str | None:
    low = name.lower()
    for split in SPLIT_NAMES:
        if low.startswith(split) and len(low) > len(split) and low[len(split)] in "-_.":
            return split
    return None


def shards_in_dir(folder: Path, split: str) -> list[str]:
    """Shards of ``split`` in a folder (train-*.tar, val-*.tar, ...) or all of them.

    When no shard name starts with a split name, every shard is used for any split.
    """
    try:
        tars = sorted(p.name for p in folder.iterdir()
                      if p.name.lower().endswith(SHARD_SUFFIXES) and not p.name.startswith("."))
    except OSError as e:
        raise HellopackError(f"cannot read shard folder '{folder}': {e.strerror or e}") from None
    if not tars:
        raise HellopackError(f"no .tar shards in '{folder}'; pass a folder of WebDataset shards or a shard pattern")
    splits = {t: _split_of(t) for t in tars}
    if not any(splits.values()):
        return [str(folder / t) for t in tars]
    for candidate in SPLIT_DIRS.get(split, (split,)):
        chosen = [t for t in tars if splits[t] == candidate]
        if chosen:
            return [str(folder / t) for t in chosen]
    found = ", ".join(sorted({f"{s}-*" for s in splits.values() if s}))
    raise DataPathError(f"no '{split}' shards in '{folder}' (found: {found})",
                        f"add {split}-*.tar shards or point {{flag}} at a folder that holds them")


class WdsSource(ImageSource):
    recipe = "wds"

    def __init__(self, urls: list[str], classes: list[ClassInfo], meta: SourceMeta, where: str,
                 image_size: int | None = None, crop_pct: float | None = None) -> None:
        self.recipe = meta.recipe
        self.urls = list(urls)
        self._local = all(not is_url(u) for u in self.urls)
        self._scan_result: tuple[int, list[int]] | None = None
        self._scanned = False
        if image_size is None:
            natural = _peek_size(self.urls[0]) if self._local else None
            image_size = natural or 224
            crop_pct = crop_pct if crop_pct is not None else (1.0 if natural else 0.875)
        self.crop_pct = crop_pct if crop_pct is not None else 0.875
        n = len(self.urls)
        super().__init__(name=meta.name, classes=classes, image_size=image_size, mean=meta.mean, std=meta.std,
                         where=where, max_bad_fraction=meta.max_bad_fraction,
                         description=f"WebDataset '{where}': {n} shard{'s' if n != 1 else ''}, {len(classes)} classes")

    # ---- streaming ----------------------------------------------------------------
    def _entries(self, order_seed: int | None = None) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        urls = list(self.urls)
        if order_seed is not None:  # same seed in every process, so views stay disjoint
            random.Random(order_seed).shuffle(urls)
        # We shard by sample ourselves: no node/worker splitting, no shuffling inside webdataset.
        ds = wds.WebDataset(urls, handler=self._on_error, shardshuffle=False, nodesplitter=None,
                            workersplitter=None, empty_check=False)
        yield from ds

    def _on_error(self, exn: Exception) -> bool:
        url = next((a for a in reversed(exn.args) if isinstance(a, str)), self.where)
        text = str(exn.args[0]) if exn.args else type(exn).__name__
        self._skips.record_bad(url, f"unreadable tar data: {text}")
        self._skips.check(self.max_bad_fraction, self.where)
        return True  # keep going with the next sample or shard

    def _load(self, raw: dict[str, Any]) -> Sample:
        data = next((raw[k] for k in WDS_IMAGE_KEYS if k in raw), None)
        if data is None:
            raise BadImage(f"no image member ({', '.join(sorted(k for k in raw if not k.startswith('__')))})")
        label = _parse_label(raw.get("cls"), len(self.classes))
        return Sample(image=open_rgb(bytes(data)), label=label, key=str(raw["__key__"]))

    def _describe(self, raw: dict[str, Any]) -> str:
        return f"{raw.get('__url__', self.where)}:{raw.get('__key__', '?')}"

    # ---- counts from tar headers (local shards) --------------------------------------
    def _scan(self) -> tuple[int, list[int]] | None:
        if not self._scanned:
            self._scanned = True
            self._scan_result = _scan_local(self.urls, len(self.classes)) if self._local else None
        return self._scan_result

    def _total(self) -> int | None:
        result = self._scan()
        return None if result is None else result[0]

    def _count_per_class(self) -> list[int] | None:
        result = self._scan()
        return None if result is None else list(result[1])


def _parse_label(data: Any, num_classes: int) -> int:
    if data is None:
        raise BadImage("no .cls member")
    try:
        label = int(bytes(data).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise BadImage(f".cls is not an integer: {bytes(data)[:20]!r}") from None
    if not 0 <= label < num_classes:
        raise BadImage(f"label {label} outside 0..{num_classes - 1} (classes file has {num_classes} names)")
    return label


def _local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file:") else url


def _members(path: str) -> Iterator[tuple[str, str, tarfile.TarFile, tarfile.TarInfo]]:
    from webdataset.tariterators import base_plus_ext

    with tarfile.open(_local_path(path), "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            prefix, ext = base_plus_ext(m.name)
            if prefix is not None:
                yield prefix, ext.lower(), tf, m


def _scan_local(urls: list[str], num_classes: int) -> tuple[int, list[int]] | None:
    """(samples with an image, per-class counts) from tar headers; None if a shard is unreadable."""
    total = 0
    counts: Counter[int] = Counter()
    try:
        for url in urls:
            key, has_image, label = None, False, None
            for prefix, ext, tf, m in _members(url):
                if prefix != key:
                    if has_image:
                        total += 1
                        counts[label] += 1
                    key, has_image, label = prefix, False, None
                if ext in WDS_IMAGE_KEYS:
                    has_image = True
                elif ext == "cls":
                    f = tf.extractfile(m)
                    try:
                        label = int(f.read(32).decode("ascii").strip()) if f else None
                    except (UnicodeDecodeError, ValueError):
                        label = None
            if has_image:
                total += 1
                counts[label] += 1
    except (OSError, tarfile.TarError, EOFError):
        return None
    return total, [counts.get(i, 0) for i in range(num_classes)]


def _peek_size(url: str) -> int | None:
    """The side of the first image when it is small and square (CIFAR-like), else None."""
    try:
        for _prefix, ext, tf, m in _members(url):
            if ext in WDS_IMAGE_KEYS:
                f = tf.extractfile(m)
                if f is None:
                    return None
                with Image.open(f) as img:
                    w, h = img.size
                return w if w == h and w <= SMALL_IMAGE_MAX else None
    except Exception:  # noqa: BLE001 - a bad shard is reported when iterated
        return None
    return None


def open_wds(path: str | os.PathLike, *, split: str = "train", classes_file: str | os.PathLike | None = None,
             max_bad_fraction: float = 0.01) -> WdsSource:
    """The 'wds' recipe: a shard folder, a pattern or URL; class names from --classes."""
    from hellopack.data.folder import FOLDER_MEAN, FOLDER_STD
    from hellopack.data.names import classes_from_names, read_classes_file

    spec = os.fspath(path)
    folder = Path(spec)
    if not is_url(spec) and folder.is_dir():
        urls = shards_in_dir(folder, split)
        if classes_file is None and (folder / CLASSES_TXT).is_file():
            classes_file = folder / CLASSES_TXT
        name = folder.resolve().name
    else:
        if not is_url(spec) and not any(c in spec for c in "{:") and not folder.exists():
            raise HellopackError(f"data dir '{spec}' does not exist; "
                                 f"pass a shard folder, a shard file or a brace pattern")
        urls = expand_shards(spec)
        name = Path(urlparse(spec.split("::")[0]).path).parent.name or "wds"
    if classes_file is None:
        raise HellopackError("recipe 'wds' needs --classes FILE "
                             "(one class name per line, line number = the .cls index)")
    names = read_classes_file(classes_file)
    return WdsSource(urls, classes_from_names(names), SourceMeta(name, FOLDER_MEAN, FOLDER_STD, "wds",
                                                                 max_bad_fraction), where=spec)
