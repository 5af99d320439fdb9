"""The 'imagenet' recipe: an ImageFolder whose class folders are WordNet ids.

Works for ImageNet-1K and any subset (ImageNet-100, Imagenette, ImageWoof): class
indices follow ImageNet-1K order (timm's ``ImageNetInfo``) restricted to the folders
present, and names are CLIP's curated ones (``open_clip``'s ``IMAGENET_CLASSNAMES``,
by ImageNet-1K index), so prompts read "a photo of a tench", not "n01440764".
"""

from __future__ import annotations

import os
from functools import lru_cache

from hellopack.data.folder import FolderSource, check_dir, class_folders, resolve_split_dir
from hellopack.data.names import apply_classes_file, printable
from hellopack.data.types import ClassInfo, SourceMeta
from hellopack.errors import HellopackError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)  # timm.data.IMAGENET_DEFAULT_STD


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    from timm.data import ImageNetInfo

    return {wnid: i for i, wnid in enumerate(ImageNetInfo("imagenet-1k").label_names())}


def imagenet_classes(wnids: list[str]) -> list[ClassInfo]:
    """ClassInfo for the given WordNet ids, in ImageNet-1K order, indices 0..len-1."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    known = _wnid_index()
    unknown = [w for w in wnids if w not in known]
    if unknown:
        shown = ", ".join(f"'{printable(w)}'" for w in unknown[:5])
        if len(unknown) > 5:
            shown += f" and {len(unknown) - 5} more"
        raise HellopackError(f"folder {shown} is not an ImageNet-1K WordNet id (like 'n01440764'); "
                             f"use the 'folder' recipe for other datasets")
    ordered = sorted(set(wnids), key=known.__getitem__)
    return [ClassInfo(i, IMAGENET_CLASSNAMES[known[w]], w) for i, w in enumerate(ordered)]


def open_imagenet(path: str | os.PathLike, *, split: str = "train", classes_file: str | os.PathLike | None = None,
                  max_bad_fraction: float = 0.01) -> FolderSource:
    base = check_dir(path)
    root = resolve_split_dir(base, split)
    folders = class_folders(root)
    by_name = {os.fsdecode(f): f for f in folders}
    classes = imagenet_classes(list(by_name))
    classes = apply_classes_file(classes, classes_file)
    ordered = [by_name[c.source_id] for c in classes]
    name = base.resolve().name or "imagenet"
    return FolderSource(root, ordered, classes, SourceMeta(name, IMAGENET_MEAN, IMAGENET_STD, "imagenet",
                                                           max_bad_fraction))
