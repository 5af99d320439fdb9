"""The augmentation record of a batch: what FKD keeps per crop (box, flip), plus what our batches add.

``RecordingAugmenter`` is train's ``Augmenter`` with its random choices written down as it makes
them: the patch-shuffle permutations (re-drawn from a copy of the step's generator, in the same
order), each image's RandomResizedCrop box and flip, and the batch's CutMix box or MixUp lambda.
``replay`` rebuilds the views from the stored images and that record alone, bit for bit; the tests
hold it to that, so the record is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from hellopack.train.augment import AugmentConfig, Augmenter


@dataclass(frozen=True)
class BatchRecord:
    crop: np.ndarray  # u16 [B, 4]: top, left, height, width
    flip: np.ndarray  # u8 [B]
    shuffle: np.ndarray  # u8 [B, W]: strips: column then row permutation; patches: the factor^2 permutation
    mix: np.ndarray  # cutmix: u16 [4] box x1, y1, x2, y2; mixup: f64 [1] lambda; none: [0]


def shuffle_width(cfg: AugmentConfig, size: int) -> int:
    """u8 per view for the patch shuffle: 0 when the augmenter draws none (shuffle off, factor 1, tiny images)."""
    f = cfg.factor
    if not cfg.patch_shuffle or f <= 1 or size // f == 0:
        return 0
    return 2 * f if cfg.shuffle == "strips" else f * f


class RecordingAugmenter(Augmenter):
    """An ``Augmenter`` whose ``record(images, labels, gen)`` also returns the batch's ``BatchRecord``."""

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__(cfg)
        self._events: list[tuple[str, Any]] = []
        transforms = list(self.per_image.transforms)
        self._listen(transforms[0], "crop")
        if cfg.flip:
            self._listen(transforms[1], "flip")  # make_params runs only when the flip is applied
        if self.batch_mix is not None:
            self._listen(self.batch_mix, "mix")

    def _listen(self, t: Any, tag: str) -> None:
        make = t.make_params

        def make_params(flat: list[Any]) -> dict[str, Any]:
            params = make(flat)
            self._events.append((tag, params))
            return params

        t.make_params = make_params  # this instance only: the recorder owns its transforms

    def record(self, images: torch.Tensor, labels: torch.Tensor,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, BatchRecord]:
        shuffle = self._shuffle_draws(images, gen)
        self._events = []
        x, targets = self(images, labels, gen)
        events, self._events = self._events, []
        crop, flip, mix = [], [], None
        for tag, p in events:
            if tag == "crop":
                crop.append((p["top"], p["left"], p["height"], p["width"]))
                flip.append(0)
            elif tag == "flip":
                flip[-1] = 1
            else:
                mix = p
        if self.cfg.mix == "cutmix":
            box = np.asarray(mix["box"] if mix else (0, 0, 0, 0), dtype="<u2")
        elif self.cfg.mix == "mixup":
            box = np.asarray([mix["lam"] if mix else 1.0], dtype="<f8")
        else:
            box = np.zeros(0, dtype="<u2")
        return x, targets, BatchRecord(np.asarray(crop, dtype="<u2").reshape(-1, 4), np.asarray(flip, dtype="u1"),
                                       shuffle, box)

    def _shuffle_draws(self, images: torch.Tensor, gen: torch.Generator) -> np.ndarray:
        """The permutations shuffle_strips / shuffle_patches will draw, from a copy of ``gen`` (same order)."""
        cfg, b = self.cfg, len(images)
        width = shuffle_width(cfg, min(images.shape[-2:]))
        if width == 0:
            return np.zeros((b, 0), dtype="u1")
        g = torch.Generator()
        g.set_state(gen.get_state())
        f = cfg.factor
        if cfg.shuffle == "strips":
            rows = [torch.cat([torch.randperm(f, generator=g), torch.randperm(f, generator=g)]) for _ in range(b)]
        else:
            rows = [torch.randperm(f * f, generator=g) for _ in range(b)]
        return torch.stack(rows).numpy().astype("u1")


def replay(cfg: AugmentConfig, images: torch.Tensor, rec: BatchRecord) -> torch.Tensor:
    """The views of a batch from its uint8 images [B,3,H,W] and its record: train's ``x``, bit for bit."""
    if rec.shuffle.shape[1]:
        images = _shuffle(images, cfg, rec.shuffle)
    views = []
    for img, (top, left, h, w), flip in zip(images, rec.crop.astype(int), rec.flip):
        v = TF.resized_crop(img, int(top), int(left), int(h), int(w), [cfg.size, cfg.size], antialias=True)
        views.append(TF.horizontal_flip(v) if flip else v)
    x = torch.stack(views).float().div_(255.0)
    if cfg.mix == "cutmix" and len(x) > 1:
        x1, y1, x2, y2 = (int(v) for v in rec.mix)
        out = x.clone()
        out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
        x = out
    elif cfg.mix == "mixup" and len(x) > 1:
        lam = float(rec.mix[0])
        x = x.roll(1, 0).mul_(1.0 - lam).add_(x.mul(lam))
    return x.contiguous()


def _shuffle(x: torch.Tensor, cfg: AugmentConfig, perms: np.ndarray) -> torch.Tensor:
    """shuffle_strips / shuffle_patches with the recorded permutations."""
    f = cfg.factor
    ph, pw = x.shape[-2] // f, x.shape[-1] // f
    hh, ww, c = ph * f, pw * f, x.shape[1]
    out = x.clone()
    for i, perm in enumerate(torch.from_numpy(perms.astype(np.int64))):
        if cfg.shuffle == "strips":
            cols, rows = perm[:f], perm[f:]
            img = x[i, :, :hh, :ww].reshape(c, hh, f, pw)[:, :, cols].reshape(c, hh, ww)
            out[i, :, :hh, :ww] = img.reshape(c, f, ph, ww)[:, rows].reshape(c, hh, ww)
        else:
            patches = x[i, :, :hh, :ww].reshape(c, f, ph, f, pw).permute(1, 3, 0, 2, 4).reshape(f * f, c, ph, pw)
            out[i, :, :hh, :ww] = patches[perm].reshape(f, f, c, ph, pw).permute(2, 0, 3, 1, 4).reshape(c, hh, ww)
    return out
