"""The Python API: an archive in your own training loop.

``hellopack.open(path_or_url)`` returns a ``Pack``: the archive's classes, manifest and resolved train
recipe, and the four pieces `hellopack train` itself trains with (hellopack.train.loop and .run build
them through the same constructors): ``dataset()`` (the stored images), ``augmenter()`` (the recipe's
views and batch mix), ``labeler(device)`` (the merged projector: soft labels for any view) and
``train_loss()`` (the recipe's loss). Importing this module loads no torch; the pieces load it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hellopack.errors import HellopackError
from hellopack.train.config import OVERRIDES, Recipe, TrainConfig

if TYPE_CHECKING:
    import torch

    from hellopack.train.augment import Augmenter
    from hellopack.train.dataset import ArchiveDataset
    from hellopack.train.labelers import ProjectorLabeler
    from hellopack.train.losses import TrainLoss


def open(path_or_url: str | os.PathLike[str], *, arch: str | None = None,  # noqa: A001 (hellopack.open)
         cache_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> Pack:
    """Open an archive (a path, or an http(s) URL downloaded once into the cache as `hellopack train` does).

    The archive is checked as `hellopack train` checks it before any work (manifest, prompts, LoRA
    factors; a download is verified in full). ``arch`` names the student the recipe is for (RDED's
    learning rate by architecture); ``overrides`` replace recipe settings as train's flags do
    (``epochs=``, ``lr=``, ``mix=``, ``batch_size=``, ...). Bad input raises ``HellopackError``.
    """
    from hellopack import dist
    from hellopack.progress import NULL
    from hellopack.train.loop import open_run_archive

    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise HellopackError(f"hellopack.open() got unknown recipe setting(s) {', '.join(unknown)}; "
                             f"settings: {', '.join(OVERRIDES)}")
    cfg = TrainConfig(archive=os.fspath(path_or_url), arch=arch or "", out=None,
                      cache_dir=None if cache_dir is None else os.fspath(cache_dir), **overrides)
    reader = open_run_archive(cfg, NULL, dist.current())
    recipe = cfg.resolve(reader.manifest)
    if arch is None and recipe.lr_source != "--lr":
        # no student named: RDED's per-architecture table falls back to the archive's lr; say so plainly
        recipe = dataclasses.replace(recipe, lr_source="the archive's lr (no arch given)")
    return Pack(reader, recipe)


class Pack:
    """An opened archive: ``classes``, ``recipe``, ``manifest``, and the pieces of its training loop.

    Every piece is built by the constructor `hellopack train` uses, so a loop written with them
    trains as the CLI does (the CLI adds checkpoints, evaluation, DDP and its step-seeded batches).
    """

    def __init__(self, reader: Any, recipe: Recipe) -> None:
        self._reader = reader
        self._recipe = recipe
        self._data: ArchiveDataset | None = None  # decoded once, shared by every dataset() call

    @property
    def path(self) -> Path:
        """Where the archive file is (a URL's cached copy)."""
        return Path(self._reader.path)

    @property
    def manifest(self) -> dict[str, Any]:
        """The archive's manifest (spec/FORMAT.md): dataset, classes, images, base, lora, recipe, ..."""
        return self._reader.manifest

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in manifest order: ``classes[i]`` is class index ``i`` of the dataset and the labels."""
        return tuple(str(c.get("name") or c.get("source_id") or i) for i, c in enumerate(self.manifest["classes"]))

    @property
    def recipe(self) -> Recipe:
        """The resolved train recipe (the manifest's, plus ``open``'s overrides): epochs, lr, batch_size, ..."""
        return self._recipe

    def dataset(self, *, pil: bool = False, transform: Callable[[Any], Any] | None = None) -> ArchiveDataset:
        """The stored images as a map-style ``Dataset`` of (uint8 [3,H,W] image, class index).

        ``pil=True`` gives ``PIL.Image`` images; ``transform`` is applied to each image. The images are
        decoded once (the first call) and held in memory; the dataset holds no open file, so it works
        with ``DataLoader`` workers (fork or spawn) and ``DistributedSampler``.
        """
        if self._data is None:
            from hellopack.train.dataset import ArchiveDataset

            self._data = ArchiveDataset.from_archive(self._reader, self._recipe.image_size, len(self.classes))
        return self._data.with_options(pil=pil, transform=transform)

    def augmenter(self) -> Augmenter:
        """The recipe's augmentation as a torchvision v2 transform (see ``Augmenter``).

        ``augmenter(images, labels)``: a uint8 batch [B,3,H,W] and its class ids -> (float views [B,3,S,S]
        in [0,1], mixed target probabilities [B,C]): patch shuffle, random resized crop, flip, then
        CutMix/MixUp. ``.views(images)`` and ``.mix(x, labels)`` are the two halves.
        """
        from hellopack.train.augment import Augmenter

        return Augmenter.from_recipe(self._recipe, len(self.classes))

    def labeler(self, device: str | torch.device = "auto", *, clip_weights: str | os.PathLike[str] | None = None,
                allow_base_mismatch: bool = False) -> ProjectorLabeler:
        """The archive's merged projector on ``device``: ``labeler(x)`` maps a float batch in [0,1] on that
        device (the augmented views) to soft-label logits [B,C] (float32; eval and inference mode, bf16
        autocast on CUDA). ``clip_weights``: the base weights file for an archive built on custom weights.
        """
        from hellopack.device import resolve_device
        from hellopack.train.labelers import TeacherSet, build_labeler

        dev = resolve_device(device) if isinstance(device, str) else device
        r = self._recipe
        no_teachers = TeacherSet((), len(self.classes), r.image_size, r.mean, r.std)
        return build_labeler("projector", archive=self._reader, teachers=no_teachers, device=dev,
                             clip_weights=None if clip_weights is None else os.fspath(clip_weights),
                             allow_base_mismatch=allow_base_mismatch, warn=warnings.warn)

    def train_loss(self) -> TrainLoss:
        """The recipe's loss as one call: ``loss_fn(student_logits, labeler(x), targets)`` (MSE to the soft
        labels + beta x CE to the targets for HeLlO's recipe; CE alone when the soft labels are None)."""
        from hellopack.train.losses import TrainLoss

        return TrainLoss.from_recipe(self._recipe)

    def __repr__(self) -> str:
        """``Pack('<path>', <classes> classes, <images> images)``."""
        count = (self.manifest.get("images") or {}).get("count", "?")
        return f"Pack({str(self.path)!r}, {len(self.classes)} classes, {count} images)"


__all__ = ["open", "Pack"]
