"""Which images each seed trains on (``--images``): the archive's, or real images of its source dataset.

``archive`` (default): the archive's distilled images, decoded once. ``random``: DD-Ranking's random
baseline, ``images_per_class`` (default: the archive's IPC) real images per class from ``--data-dir``,
drawn anew for every seed (hellopack.data.draw). ``full``: every real training image (acc(real data)).
The real images are read by the manifest's dataset recipe (or ``--data-recipe``), centre-cropped to
the archive's image size, and their classes are matched to the archive's by source id.
"""

from __future__ import annotations

from typing import Any

import torch

from hellopack.errors import HellopackError
from hellopack.progress import Reporter
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.dataset import ArchiveDataset

Images = tuple[torch.Tensor, torch.Tensor]


def open_real_source(cfg: TrainConfig, manifest: dict) -> tuple[Any, list[int | None]]:
    """The source dataset behind ``--data-dir`` and, per source label, the archive's class index (None: unused)."""
    from hellopack.data import open_source
    from hellopack.errors import DataPathError

    dataset = manifest.get("dataset") or {}
    recipe = cfg.data_recipe or dataset.get("recipe")
    if not recipe:
        raise HellopackError("the archive's manifest names no dataset recipe; pass --data-recipe (e.g. cifar10, "
                             "imagenet, folder, wds)")
    synthetic = (manifest.get("build") or {}).get("synthetic") if recipe == "synthetic" else None
    try:
        src = open_source(recipe, cfg.data_dir, split="train", synthetic=synthetic)
    except DataPathError as e:
        raise e.for_flag("--data-dir", download=False) from None
    ours = [str(c.get("source_id", c.get("name"))) for c in manifest.get("classes") or []]
    theirs = {c.source_id: c.index for c in src.classes}
    missing = [s for s in ours if s not in theirs]
    if missing:
        shown = ", ".join(c.source_id for c in src.classes[:5]) + (", ..." if len(src.classes) > 5 else "")
        raise HellopackError(f"class '{missing[0]}' of the archive ({len(missing)} of its {len(ours)} classes) is not "
                             f"in --data-dir '{cfg.data_dir}' read as {recipe} (its classes: {shown}); pass the "
                             "dataset the archive was built from, or the --data-recipe that reads it")
    mapping: list[int | None] = [None] * len(src.classes)
    for index, source_id in enumerate(ours):
        mapping[theirs[source_id]] = index
    return src, mapping


class TrainingImages:
    """The archive's images (always: the fallback evaluation set) and, per seed, the images a student trains on."""

    def __init__(self, cfg: TrainConfig, archive: Any, recipe: Recipe, reporter: Reporter) -> None:
        manifest = archive.manifest
        self.cfg, self.size = cfg, recipe.image_size
        self.real = open_real_source(cfg, manifest) if cfg.images != "archive" else None  # fails before loading
        self.per_class = cfg.images_per_class or int((manifest.get("images") or {}).get("ipc") or 0) or None
        # the images `hellopack.open(...).dataset()` serves: decoded once, checked against the manifest
        data = ArchiveDataset.from_archive(archive, recipe.image_size, len(manifest["classes"]), reporter)
        self.archive = data.images, data.labels
        self.reporter = reporter
        self._full: Images | None = None

    def for_seed(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any] | None]:
        """(uint8 images, class ids, what joins the checkpoint identity) for ``seed``."""
        from hellopack.data.draw import random_subset

        cfg = self.cfg
        if self.real is None:
            return (*self.archive, None)
        src, mapping = self.real
        extra = {"images": cfg.images, "data_dir": cfg.data_dir, "data_recipe": src.recipe}
        if cfg.images == "full":
            if self._full is None:
                self.reporter.info(f"training on every image of {src.description}")
                self._full = random_subset(src, None, 0, self.size, mapping)
            return (*self._full, extra)
        self.reporter.info(f"seed {seed}: {self.per_class} real images per class drawn at random from "
                           f"{src.description}")
        return (*random_subset(src, self.per_class, seed, self.size, mapping), {**extra, "per_class": self.per_class})
