"""The distilled images of a build: each one stitched from factor x factor stored patches."""

from __future__ import annotations

import numpy as np
import torch

from hellopack.distill.select import Chosen, patch_layout, stitch


class DistilledImages:
    """The archive's images, stitched from the (memory-mapped) patches on demand: an ImageNet
    IPC-50 build holds 50,000 of them, so they are never all in memory at once."""

    def __init__(self, chosen: Chosen, patches: np.ndarray, ipc: int, factor: int) -> None:
        labels, self.slots = patch_layout(chosen, ipc, factor)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.patches, self.factor = patches, factor

    def __len__(self) -> int:
        return len(self.slots)

    def image(self, i: int) -> torch.Tensor:
        """uint8 [3,S,S]: exactly the pixels the archive stores (PNG is lossless)."""
        return stitch(torch.from_numpy(np.array(self.patches[self.slots[i]])), self.factor)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.image(int(i)) for i in idx])
