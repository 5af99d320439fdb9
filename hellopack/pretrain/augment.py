"""SimCLR's two-view augmentation (Chen et al. 2020, appendix A), with torchvision.transforms.v2.

Each view: RandomResizedCrop (area ``crop_scale``..1, aspect 3/4..4/3), horizontal flip,
colour jitter of strength s with probability 0.8 (brightness, contrast, saturation 0.8 s,
hue 0.2 s), grayscale with probability 0.2, and for views of 96 px or more a Gaussian blur
(kernel about 10 % of the side, sigma 0.1..2) with probability 0.5. SimCLR leaves the blur
out on CIFAR: at 32 px it removes most of the signal. ``crop_scale`` 0.2 rather than 0.08
for small images (MoCo v2 / SimSiam CIFAR recipes): 8 % of a 32-px image is a 9-px patch.

The transforms run on PIL images (about 20x faster than on tensors on CPU for small
images) and end in float tensors in [0, 1]; normalisation happens inside the model.
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from hellopack.rng import cpu_seeded

BLUR_MIN_SIZE = 96


def view_transform(size: int, crop_scale: float = 0.2, jitter: float = 0.5,
                   blur: bool | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """One random view of a PIL image: float tensor [3, size, size] in [0, 1] (global torch RNG)."""
    steps: list[Callable] = [
        v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if jitter > 0:
        s = jitter
        steps.append(v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.5, 0.2 * s))], p=0.8))
    steps.append(v2.RandomGrayscale(p=0.2))
    use_blur = size >= BLUR_MIN_SIZE if blur is None else blur
    if use_blur:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, about 10 % of the side
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def two_views(tf: Callable[[Image.Image], torch.Tensor], image: Image.Image,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views of one image, a pure function of (image, seed); the caller's RNG is untouched."""
    with cpu_seeded(seed):
        return tf(image), tf(image)
