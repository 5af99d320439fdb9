"""The archive's images in memory, and the step batches `train` draws from them.

``load_archive_images`` decodes every image once into a uint8 tensor; ``StepBatches`` item
``step`` is this process's augmented shard of global batch ``step``, a pure function of
(seed, step, rank), so workers, restarts and resumes all see the same batches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hellopack.errors import HellopackError
from hellopack.progress import NULL, Reporter
from hellopack.train.augment import Augmenter, step_generator


def load_archive_images(archive: Any, size: int, num_classes: int,
                        reporter: Reporter = NULL) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every archive image into one uint8 tensor [N,3,size,size] plus class ids [N]."""
    count = int((archive.manifest.get("images") or {}).get("count", 0))
    arrays: list[np.ndarray] = []
    classes: list[int] = []
    with reporter.stage("load images", total=count or None, unit="img") as stage:
        # the archive's one image reader: magic, header pixel caps and the manifest's pixel budget are
        # checked before any image is decoded (ArchiveError, which names the member)
        for rec, arr in archive.decoded_images():
            if arr.shape[:2] != (size, size):
                raise HellopackError(f"archive '{archive.path}': image {rec.key} is {arr.shape[1]}x{arr.shape[0]}, "
                                     f"the manifest says {size}x{size}; the archive is inconsistent, rebuild it")
            if not 0 <= int(rec.cls) < num_classes:
                raise HellopackError(f"archive '{archive.path}': image {rec.key} has class {rec.cls}, outside "
                                     f"0..{num_classes - 1}; the archive is inconsistent, rebuild it")
            arrays.append(arr)
            classes.append(int(rec.cls))
            stage.advance(1)
    if not arrays:
        raise HellopackError(f"archive '{archive.path}' holds no images; rebuild it")
    if count and count != len(arrays):
        raise HellopackError(f"archive '{archive.path}': manifest says {count} images but images.tar holds "
                             f"{len(arrays)}; the archive is damaged, download or rebuild it")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(classes, dtype=torch.long)


def steps_per_epoch(n_images: int, batch_size: int, drop_last: bool) -> int:
    return n_images // batch_size if drop_last else math.ceil(n_images / batch_size)


def steps_images(n_images: int, batch_size: int, drop_last: bool, steps: int) -> int:
    """Images (over all processes) in the first ``steps`` global batches."""
    spe = steps_per_epoch(n_images, batch_size, drop_last)
    epochs, rest = divmod(steps, spe)
    per_epoch = spe * batch_size if drop_last else n_images
    return epochs * per_epoch + min(rest * batch_size, n_images)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # a stream apart from the per-step generators: no process has rank 2**31 - 1
    return torch.randperm(n, generator=step_generator(seed, epoch, rank=2**31 - 1))


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` = this process's augmented shard of global batch ``step``: (x01, hard targets, class ids).

    A pure function of (seed, step, rank), so workers, restarts and resumes all see the same batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augmenter: Augmenter, batch_size: int,
                 drop_last: bool, seed: int, rank: int, world: int) -> None:
        self.images, self.labels, self.augmenter = images, labels, augmenter
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.drop_last = drop_last
        self.steps_per_epoch = steps_per_epoch(len(images), batch_size, drop_last)
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def images_until(self, step: int) -> int:
        return steps_images(len(self.images), self.batch_size, self.drop_last, step)

    def indices(self, step: int) -> torch.Tensor:
        """The archive images of this process's shard of global batch ``step``, in batch order."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, epoch_permutation(len(self.images), self.seed, epoch)
        idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        return idx.tensor_split(self.world)[self.rank]

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.indices(step)
        x, hard = self.augmenter(self.images[idx], self.labels[idx], step_generator(self.seed, step, self.rank))
        return x, hard, self.labels[idx]
