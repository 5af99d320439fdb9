"""RDED's student-evaluation protocol, the one HeLlO's published numbers come from.

Every rule cites the RDED file it follows (public repository LINs-lab/RDED, commit 31f9117):

- ``argument.py``: batch size by IPC and class count, the AdamW learning rate by student,
  the KL temperature and mix strength by mix type;
- ``validation/main.py``: ``ShufflePatches(factor)`` then ``RandomResizedCrop(size,
  scale=(1/factor, 1))`` and a flip; AdamW (0.9, 0.999); ``LambdaLR`` stepped once per epoch
  with ``0.5 * (1 + cos(pi * epoch / epochs / 2))`` (ends at half the lr); validation
  ``Resize(size // 7 * 8)`` then ``CenterCrop(size)``; ``KLDivLoss(batchmean)`` at T, no T^2;
- ``validation/utils.py``: ``get_parameters`` (weight decay only on parameters named
  ``weight`` with more than one dimension); its ``ShufflePatches`` (column strips, then row
  strips) is ``hellopack.train.augment.shuffle_strips``, beside the other batch augmentations.

``LEGACY`` names what archives written before hellopack 0.2 carried (no ``protocol`` key in
their recipe): those keep training as they did (per-step cosine to 0, decay on every
parameter, crops (0.08, 1) above 64 px and (0.5, 1) at or below, T^2-scaled KL plus CE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hellopack.schedule import COSINE, CONSTANT, HALF_COSINE, lambda_lr
from hellopack.schedule import lr_factor as schedule_lr_factor

if TYPE_CHECKING:  # configuration imports this module: keep torch out of its import time
    import torch
    from torch import nn

PROTOCOL = "rded"
LEGACY = "hellopack-0.1"

# argument.py, "adamw learning rate" (RDED's conv3..conv6 and resnet18_modified are our convnet* and
# resnet*_cifar); an architecture RDED does not list trains at the recipe's lr.
RDED_LR: dict[str, float] = {
    "vgg11": 5e-4, "convnet": 1e-3, "convnet_w32": 1e-3, "convnet_w64": 1e-3, "resnet18": 1e-3,
    "resnet18_cifar": 1e-3, "efficientnet_b0": 2e-3, "mobilenet_v2": 2.5e-3, "alexnet": 1e-4,
    "resnet50": 1e-3, "resnet101": 1e-3, "vit_b_16": 1e-4, "swin_v2_t": 1e-4,
}
DEFAULT_LR = 1e-3

# argument.py: temperature 4 for MixUp, 20 for CutMix; Beta(0.8, 0.8) for MixUp, Beta(1, 1) for CutMix.
TEMPERATURE = {"cutmix": 20.0, "mixup": 4.0, "none": 20.0}
MIX_ALPHA = {"cutmix": 1.0, "mixup": 0.8, "none": 1.0}

LEGACY_SMALL_IMAGE_MAX = 64
LEGACY_SMALL_CROP_SCALE = (0.5, 1.0)


def lr_for(arch: str, fallback: float = DEFAULT_LR) -> float:
    """RDED's AdamW learning rate for a student (``fallback`` for architectures it does not list)."""
    return RDED_LR.get(arch, fallback)


def batch_size(ipc: int, num_classes: int) -> int:
    """argument.py: IPC 1/10/50 -> 10/50/100, doubled for 100 and 1,000 classes, capped at IPC x classes.

    RDED leaves other IPCs undefined (batch 0); here they take the rule of the largest listed IPC below them.
    """
    bs = 100 if ipc >= 50 else 50 if ipc >= 10 else 10
    if num_classes in (100, 1000):
        bs *= 2
    return max(1, min(bs, ipc * num_classes))


def crop_scale(factor: int) -> tuple[float, float]:
    """validation/main.py: ``RandomResizedCrop(scale=(1 / factor, max_scale_crops=1))``."""
    return (1.0 / factor, 1.0)


def legacy_crop_scale(size: int) -> tuple[float, float]:
    return LEGACY_SMALL_CROP_SCALE if size <= LEGACY_SMALL_IMAGE_MAX else (0.08, 1.0)


def val_resize(size: int) -> int:
    """validation/main.py: ``Resize(input_size // 7 * 8)`` before ``CenterCrop(input_size)`` (256 for 224).

    Below 7 px RDED's rule gives 0; such images are only centre-cropped (resize to their own size)."""
    return max(size, size // 7 * 8)


def lr_factor(schedule: str, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The lr multiplier for optimizer step ``step`` (0-based; ``scheduler.step()`` runs after each step).

    - ``half-cosine`` (RDED, per epoch): ``0.5 * (1 + cos(pi * epoch / epochs / 2))``, 1 at the first
      epoch, just above 0.5 at the last;
    - ``cosine`` (hellopack 0.1, per step): from 1 down to 0 over the whole run;
    - ``constant``.
    """
    return schedule_lr_factor(schedule if schedule in (HALF_COSINE, COSINE) else CONSTANT, step,
                              epochs * steps_per_epoch, epochs=epochs)


def param_groups(model: nn.Module, weight_decay: float, decay: str) -> list[dict[str, Any]]:
    """``decay="weights"``: RDED's ``get_parameters`` (decay on ``*weight*`` tensors of 2+ dims only);
    ``"all"``: every parameter (hellopack 0.1)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay == "all":
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    with_decay = [p for n, p in params if "weight" in n and p.dim() > 1]
    ids = {id(p) for p in with_decay}
    return [{"params": with_decay, "weight_decay": weight_decay},
            {"params": [p for _, p in params if id(p) not in ids], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float, decay: str,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    import torch

    groups = param_groups(model, weight_decay, decay)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps_per_epoch: int,
                   epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return lambda_lr(optimizer, schedule if schedule in (HALF_COSINE, COSINE) else CONSTANT,
                     epochs * steps_per_epoch, epochs=epochs)
