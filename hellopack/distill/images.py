"""The distilled images of a build: each one stitched from factor x factor stored patches, then
encoded the way the archive stores it."""

from __future__ import annotations

import numpy as np
import torch

from hellopack.archive.images import Codec, decode_image
from hellopack.distill.select import Chosen, patch_layout, stitch

CACHE_BYTES = 256 * 1024**2  # encoded bytes kept in memory; past this, images are re-encoded (same bytes)


class DistilledImages:
    """The archive's images, stitched from the (memory-mapped) patches on demand: an ImageNet
    IPC-50 build holds 50,000 of them, so they are never all in memory at once.

    ``image(i)`` is what the archive stores: for a lossy ``codec`` the pixels decoded from the
    bytes ``encoded(i)`` returns, so refine and every later reader see the same pixels."""

    def __init__(self, chosen: Chosen, patches: np.ndarray, ipc: int, factor: int, codec: Codec = Codec()) -> None:
        labels, self.slots = patch_layout(chosen, ipc, factor)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.patches, self.factor, self.codec = patches, factor, codec
        self._bytes: dict[int, bytes] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.slots)

    def pixels(self, i: int) -> torch.Tensor:
        """uint8 [3,S,S]: the stitched pixels before encoding."""
        return stitch(torch.from_numpy(np.array(self.patches[self.slots[i]])), self.factor)

    def encoded(self, i: int) -> bytes:
        """The bytes the archive stores for image ``i`` (encoded once, kept while the cache has room)."""
        data = self._bytes.get(i)
        if data is None:
            data = self.codec.encode(self.pixels(i).permute(1, 2, 0).numpy())
            if self._cached + len(data) <= CACHE_BYTES:
                self._bytes[i] = data
                self._cached += len(data)
        return data

    def image(self, i: int) -> torch.Tensor:
        """uint8 [3,S,S]: exactly the pixels the archive stores."""
        if self.codec.lossless:
            return self.pixels(i)
        arr = decode_image(f"image {i}", self.codec.ext, self.encoded(i), max_pixels=1 << 62)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.image(int(i)) for i in idx])
