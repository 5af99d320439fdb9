"""Per-step batch augmentation: RDED's patch shuffle, RandomResizedCrop, flip, CutMix/MixUp.

Every random choice of a step comes from one ``torch.Generator`` seeded from
(seed, step, rank), so any step can be recomputed anywhere (data-loader workers,
a resumed run) and gives the same batch. torchvision's v2 transforms draw from
the global RNG, so they run inside ``torch.random.fork_rng`` seeded from that
generator: the caller's global RNG is never touched.

Order (RDED, validation/main.py): patch shuffle on the stored (stitched) image, where
patch borders are known, then RandomResizedCrop + flip per image, then CutMix/MixUp on the
batch; the labeler and the student both see the mixed batch. Patch shuffle is RDED's
``ShufflePatches`` (column strips, then row strips; ``shuffle="strips"``) or, for archives
from hellopack 0.1, any permutation of the factor x factor patches (``shuffle="patches"``).
The crop scale comes from the recipe: RDED's (1/factor, 1) (hellopack.train.protocol).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torchvision.transforms import v2

from hellopack.rng import cpu_seeded


@dataclass(frozen=True)
class AugmentConfig:
    size: int
    num_classes: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    factor: int = 1  # images are factor x factor stitched patches (RDED)
    patch_shuffle: bool = True  # only acts when factor > 1
    shuffle: str = "strips"  # "strips" (RDED's ShufflePatches) or "patches" (hellopack 0.1)
    mix: str = "cutmix"  # "cutmix" | "mixup" | "none"
    mix_alpha: float = 1.0


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, rank): well mixed, independent per step."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _grid(x: torch.Tensor, factor: int) -> tuple[int, int] | None:
    """Patch height and width of a factor x factor grid, or None when there is nothing to shuffle."""
    if factor <= 1:
        return None
    ph, pw = x.shape[-2] // factor, x.shape[-1] // factor
    return None if ph == 0 or pw == 0 else (ph, pw)


def shuffle_patches(x: torch.Tensor, factor: int, gen: torch.Generator) -> torch.Tensor:
    """Permute each image's factor x factor patches independently (hellopack 0.1's patch shuffle).

    Images whose side is not a multiple of ``factor`` keep their last rows/columns in place.
    """
    grid = _grid(x, factor)
    if grid is None:
        return x
    (ph, pw), (b, c) = grid, x.shape[:2]
    n = factor * factor
    core = x[:, :, : ph * factor, : pw * factor]
    patches = core.reshape(b, c, factor, ph, factor, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, n, c, ph, pw)
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(b)])
    patches = torch.gather(patches, 1, perm.view(b, n, 1, 1, 1).expand_as(patches))
    core = patches.reshape(b, factor, factor, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, ph * factor, pw * factor)
    out = x.clone()
    out[:, :, : ph * factor, : pw * factor] = core
    return out


def shuffle_strips(x: torch.Tensor, factor: int, gen: torch.Generator) -> torch.Tensor:
    """RDED's ``ShufflePatches`` (validation/utils.py), batched: per image, permute the ``factor`` column
    strips, then the ``factor`` row strips (each image draws its own two permutations).

    Images whose side is not a multiple of ``factor`` keep their last rows/columns in place.
    """
    grid = _grid(x, factor)
    if grid is None:
        return x
    (th, tw), c = grid, x.shape[1]
    hh, ww = th * factor, tw * factor
    out = x.clone()
    for i in range(len(x)):
        cols = torch.randperm(factor, generator=gen)
        rows = torch.randperm(factor, generator=gen)
        img = x[i, :, :hh, :ww].reshape(c, hh, factor, tw)[:, :, cols].reshape(c, hh, ww)
        out[i, :, :hh, :ww] = img.reshape(c, factor, th, ww)[:, rows].reshape(c, hh, ww)
    return out


class Augmenter(v2.Transform):
    """The archive's training views as a torchvision v2 transform: patch shuffle, RandomResizedCrop, flip, then
    CutMix/MixUp on the batch.

    ``aug(images, labels, generator)``: uint8 images [B,3,H,W] and class ids [B] -> (float [B,3,S,S] in [0,1],
    target probabilities [B,C]); the targets are the (mixed) one-hot hard labels the CE term uses. Every
    random choice comes from ``generator`` (``hellopack train`` passes ``step_generator(seed, step, rank)``);
    without one, a generator is seeded from torch's global RNG, as torchvision's own transforms draw.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        crop = [v2.RandomResizedCrop(cfg.size, scale=cfg.crop_scale, antialias=True)]
        self.per_image = v2.Compose(crop + ([v2.RandomHorizontalFlip()] if cfg.flip else []))
        if cfg.mix == "cutmix":
            self.batch_mix: v2.Transform | None = v2.CutMix(alpha=cfg.mix_alpha, num_classes=cfg.num_classes)
        elif cfg.mix == "mixup":
            self.batch_mix = v2.MixUp(alpha=cfg.mix_alpha, num_classes=cfg.num_classes)
        else:
            self.batch_mix = None

    @classmethod
    def from_recipe(cls, recipe: Any, num_classes: int) -> "Augmenter":
        """The augmentation of a resolved train recipe (``hellopack.train.config.Recipe``) for ``num_classes``."""
        from hellopack.train import protocol as proto

        r = recipe
        return cls(AugmentConfig(size=r.image_size, num_classes=num_classes, crop_scale=r.crop_scale,
                                 factor=r.factor, patch_shuffle=r.patch_shuffle, mix=r.mix, mix_alpha=r.mix_alpha,
                                 shuffle="patches" if r.protocol == proto.LEGACY else "strips"))

    def forward(self, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One training batch: ``views`` then the batch mix, all drawn from ``generator``."""
        gen = _generator(generator)
        with self._views_rng(images, gen) as x:
            x, targets = self._mix(x, labels)
        return x.contiguous(), targets

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Patch shuffle, crop and flip without the mix: float [B,3,S,S] in [0,1].

        For the same generator state these are the views ``aug(images, labels, generator)`` mixes.
        """
        with self._views_rng(images, _generator(generator)) as x:
            return x.contiguous()

    def mix(self, x: torch.Tensor, labels: torch.Tensor,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CutMix/MixUp (the recipe's) on a float batch: (mixed batch, target probabilities [B,C])."""
        seed = int(torch.randint(0, 2**62, (1,), generator=_generator(generator)))
        with cpu_seeded(seed):
            x, targets = self._mix(x.float(), labels)
        return x.contiguous(), targets

    @contextlib.contextmanager
    def _views_rng(self, images: torch.Tensor, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """The views, inside the forked global RNG their crops were drawn from (the mix draws next)."""
        cfg = self.cfg
        if cfg.patch_shuffle and cfg.factor > 1:
            shuffle = shuffle_strips if cfg.shuffle == "strips" else shuffle_patches
            images = shuffle(images, cfg.factor, gen)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with cpu_seeded(seed):
            # v2 applies one crop to a whole batch tensor, so crop image by image
            x = torch.stack([self.per_image(img) for img in images])
            yield x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def _mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = labels.long()
        if self.batch_mix is not None and len(labels) > 1:
            return self.batch_mix(x, labels)
        return x, torch.nn.functional.one_hot(labels, self.cfg.num_classes).float()


def _generator(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, or one seeded from torch's global RNG (DataLoader workers seed it per worker)."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
