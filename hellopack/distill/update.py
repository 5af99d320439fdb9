"""Image update: make each stored low-resolution patch keep what the projector sees.

For a full-resolution source crop c and its stored patch p (c downsampled by ``factor``),
minimise ``||E_I(c) - E_I(up(p))||^2`` over the pixels of p (E_I: the projector's frozen,
L2-normalised image features; up: bilinear back to the crop size), with Adam, clamping
p to [0, 1] after every step, then quantise to uint8 (paper Eq. 7, after LIC).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Features = Callable[[torch.Tensor], torch.Tensor]


def downsample(crops01: torch.Tensor, factor: int) -> torch.Tensor:
    """[N,3,S,S] -> [N,3,S/f,S/f]; antialiased so the stored patch is a fair low-res view."""
    if factor == 1:
        return crops01
    size = crops01.shape[-1] // factor
    return F.interpolate(crops01, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def upsample(patches01: torch.Tensor, size: int) -> torch.Tensor:
    if patches01.shape[-1] == size:
        return patches01
    return F.interpolate(patches01, size=(size, size), mode="bilinear", align_corners=False)


def quantize(x01: torch.Tensor) -> torch.Tensor:
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8)


def initial_patches(crops_u8: torch.Tensor, factor: int) -> torch.Tensor:
    """The stored patches without the update: downsampled crops, quantised to uint8."""
    return quantize(downsample(crops_u8.float() / 255, factor))


def feature_loss(features: Features, targets: torch.Tensor, patches01: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over patches of the per-patch feature MSE (a sum, so batching does not change a patch's gradient)."""
    pred = features(upsample(patches01, size)).float()
    return ((pred - targets) ** 2).mean(dim=1).sum()


def update_patches(features: Features, crops_u8: torch.Tensor, factor: int, steps: int, lr: float,
                   device: torch.device | None = None,
                   on_step: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Optimise one batch of patches; returns uint8 [N,3,S/f,S/f].

    ``features`` must be frozen (its parameters get no gradients) and deterministic.
    ``on_step(i, loss)`` sees the objective before step ``i``; i == steps is the final value.
    """
    device = device or crops_u8.device
    size = crops_u8.shape[-1]
    start = initial_patches(crops_u8, factor)
    if factor == 1 or steps == 0:
        return start  # a full-resolution patch already equals its crop: nothing to recover
    crops01 = crops_u8.to(device).float() / 255
    with torch.no_grad():
        targets = features(crops01).float()
    p = (start.to(device).float() / 255).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    for i in range(steps):
        loss = feature_loss(features, targets, p, size)
        if on_step is not None:
            on_step(i, float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.clamp_(0, 1)
    if on_step is not None:
        with torch.no_grad():
            on_step(steps, float(feature_loss(features, targets, p, size)))
    return quantize(p.detach()).cpu()
