"""The 'cifar10' and 'cifar100' recipes.

Two backends behind one recipe name:

- a folder of WebDataset shards (``train-*.tar``, ``test-*.tar``, KEY.jpg + KEY.cls, like
  ``shared/data/cifar10``): streamed by :class:`~hellopack.data.wds.WdsSource`, names from
  ``--classes``, else the folder's ``classes.txt``, else the standard names;
- torchvision's CIFAR-10/100 files (``cifar-10-batches-py``), fetched with
  ``download=True`` on machines with internet. torchvision keeps the whole split in
  memory (150 MB for 50,000 images) and reads the official files with pickle only after
  checking their MD5 against the published sums: acceptable for this one small,
  well-known dataset; everything else streams.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Iterator

from PIL import Image

from hellopack.data.names import display_name, read_classes_file
from hellopack.data.types import ClassInfo, ImageSource, Sample, SourceMeta
from hellopack.data.wds import CLASSES_TXT, SHARD_SUFFIXES, WdsSource, shards_in_dir
from hellopack.errors import DataPathError, HellopackError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100 fine labels, alphabetical (the order of the official meta file).
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split())
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DEFAULT_ROOT = Path(os.environ.get("HELLOPACK_DATA", Path.home() / ".cache" / "hellopack" / "data"))

_VARIANTS = {
    "cifar10": ("CIFAR-10", CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR-100", CIFAR100_CLASSES, CIFAR100_MEAN, CIFAR100_STD),
}


def has_shards(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(p.name.lower().endswith(SHARD_SUFFIXES) for p in folder.iterdir())
    except OSError:
        return False


def _classes(recipe: str, names: list[str] | None) -> list[ClassInfo]:
    title, standard, _, _ = _VARIANTS[recipe]
    if names is None:
        names = [display_name(n) for n in standard]
    elif len(names) != len(standard):
        raise HellopackError(f"{title} has {len(standard)} classes but the classes file names {len(names)}; "
                             f"write one name per class, in class order")
    return [ClassInfo(i, n, s) for i, (n, s) in enumerate(zip(names, standard))]


class TorchvisionCifar(ImageSource):
    """torchvision's in-memory CIFAR arrays, served one PIL image at a time."""

    crop_pct = 1.0
    random_access = True

    def __init__(self, recipe: str, root: Path, split: str, download: bool, classes: list[ClassInfo],
                 max_bad_fraction: float = 0.01) -> None:
        from torchvision import datasets

        title, _, mean, std = _VARIANTS[recipe]
        self.recipe = recipe
        self.split = "train" if split == "train" else "test"
        cls = datasets.CIFAR10 if recipe == "cifar10" else datasets.CIFAR100
        try:
            # torchvision prints "Files already downloaded and verified" on stdout; keep stdout for --json.
            with contextlib.redirect_stdout(io.StringIO()):
                self._ds = cls(str(root), train=self.split == "train", download=download)
        except RuntimeError:
            raise DataPathError(f"{title} not found in '{root}'",
                                "point {flag} at a folder of WebDataset shards (train-*.tar, test-*.tar)",
                                download="pass --download to fetch it (needs internet)") from None
        except OSError as e:  # URLError is an OSError
            raise HellopackError(f"cannot download {title} into '{root}': {getattr(e, 'reason', None) or e}; "
                                 f"check the internet connection or use a folder of WebDataset shards") from None
        n = len(self._ds)
        super().__init__(name=recipe, classes=classes, image_size=32, mean=mean, std=std, where=str(root),
                         max_bad_fraction=max_bad_fraction,
                         description=f"{title} {self.split} (torchvision, '{root}'): "
                                     f"{n:,} images, {len(classes)} classes")

    def _total(self) -> int:
        return len(self._ds)

    def _entries(self, order_seed: int | None = None) -> Iterator[int]:
        return iter(range(len(self._ds)))

    def _entry_at(self, index: int) -> int:
        return index

    def _load(self, index: int) -> Sample:
        return Sample(image=Image.fromarray(self._ds.data[index]), label=int(self._ds.targets[index]),
                      key=f"{self.split}_{index:05d}")

    def _describe(self, index: int) -> str:
        return f"{self.recipe}:{self.split}:{index}"

    def _count_per_class(self) -> list[int]:
        counts = [0] * len(self.classes)
        for t in self._ds.targets:
            counts[int(t)] += 1
        return counts


def open_cifar(recipe: str, path: str | os.PathLike | None = None, *, split: str = "train",
               classes_file: str | os.PathLike | None = None, download: bool = False,
               max_bad_fraction: float = 0.01) -> ImageSource:
    title, _, mean, std = _VARIANTS[recipe]
    names = read_classes_file(classes_file) if classes_file is not None else None
    root = Path(path) if path is not None else DEFAULT_ROOT
    if path is not None and not root.exists() and not download:
        raise DataPathError(f"data dir '{root}' does not exist", "check {flag}",
                            download=f"pass --download to fetch {title}")
    if has_shards(root):
        urls = shards_in_dir(root, split)
        if names is None and (root / CLASSES_TXT).is_file():
            names = read_classes_file(root / CLASSES_TXT)
        return WdsSource(urls, _classes(recipe, names), SourceMeta(recipe, mean, std, recipe, max_bad_fraction),
                         where=str(root), image_size=32, crop_pct=1.0)
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HellopackError(f"cannot create '{root}' for {title}: {e.strerror or e}; "
                                 f"choose a writable --data-dir") from None
    return TorchvisionCifar(recipe, root, split, download, _classes(recipe, names), max_bad_fraction)
