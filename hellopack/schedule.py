"""Every training loop's learning-rate multiplier, in one place.

``lr_factor(kind, step, total, ...)`` is the factor for optimizer step ``step`` (0-based) of
``total`` planned steps; the loops multiply their base lr by it (directly, or through a
``LambdaLR``). The expressions are written exactly as the loops used to compute them, so
the learning rates (and the archives the fit writes) stay bit-identical.
"""

from __future__ import annotations

import math

HALF_COSINE = "half-cosine"  # RDED's, per epoch: 1 at the first epoch, just above 0.5 at the last
COSINE = "cosine"  # per step, from 1 down to 0 over the run
CONSTANT = "constant"
WARMUP_COSINE = "warmup-cosine"  # linear warmup over ``warmup`` steps, then a per-step cosine to 0

KINDS = (HALF_COSINE, COSINE, CONSTANT, WARMUP_COSINE)


def lr_factor(kind: str, step: int, total: int, *, epochs: int = 1, warmup: int = 0) -> float:
    """The lr multiplier at step ``step`` of ``total`` (``epochs`` for half-cosine, ``warmup`` for warmup-cosine)."""
    if kind == HALF_COSINE:
        spe = total // epochs  # total is epochs x steps per epoch
        epoch = min(step // max(1, spe), epochs)
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2))
    if kind == COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
    if kind == WARMUP_COSINE:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if kind == CONSTANT:
        return 1.0
    raise ValueError(f"unknown schedule {kind!r}; one of {', '.join(KINDS)}")


def lambda_lr(optimizer, kind: str, total: int, *, epochs: int = 1, warmup: int = 0):  # noqa: ANN001, ANN201
    """A ``LambdaLR`` stepping ``lr_factor`` once per optimizer step (torch imported here: configs import us)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(kind, step, total, epochs=epochs, warmup=warmup))
