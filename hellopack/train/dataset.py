"""The archive's stored images as a ``torch.utils.data.Dataset``: what `hellopack train` and the Python API train on.

The images are decoded once into one uint8 tensor (``load_archive_images``); the dataset holds
tensors only, no open file, so it pickles into ``DataLoader`` workers (fork or spawn) and
shards under ``DistributedSampler`` like any map-style dataset.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from hellopack.progress import NULL, Reporter
from hellopack.train.images import load_archive_images


class ArchiveDataset(torch.utils.data.Dataset):
    """Item ``i``: (image, class index). The image is uint8 [3,H,W] (CHW, RGB), a ``PIL.Image`` with
    ``pil=True``, and then whatever ``transform`` makes of it.

    ``images`` (uint8 [N,3,H,W]) and ``labels`` (long [N]) are the whole archive, for batch-level use.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, pil: bool = False,
                 transform: Callable[[Any], Any] | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 [N,3,H,W] with one label per image")
        self.images, self.labels, self.pil, self.transform = images, labels, pil, transform

    @classmethod
    def from_archive(cls, archive: Any, size: int, num_classes: int, reporter: Reporter = NULL) -> "ArchiveDataset":
        """Decode every image of an opened archive (``hellopack.archive.open_archive``); checks size and classes."""
        images, labels = load_archive_images(archive, size, num_classes, reporter)
        return cls(images, labels)

    def with_options(self, *, pil: bool = False, transform: Callable[[Any], Any] | None = None) -> "ArchiveDataset":
        """The same images (shared, not copied) returned as PIL images and/or through ``transform``."""
        return ArchiveDataset(self.images, self.labels, pil=pil, transform=transform)

    def __len__(self) -> int:
        """How many images the archive stores."""
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(image ``index``, its class index 0..C-1 in manifest order)."""
        image: Any = self.images[index]
        if self.pil:
            from PIL import Image

            image = Image.fromarray(image.permute(1, 2, 0).numpy())  # HxWx3 uint8: RGB
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
