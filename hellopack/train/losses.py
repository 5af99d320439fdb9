"""The student's loss: soft labels (MSE or temperature KL) plus beta * CE on the (mixed) hard labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def student_loss(logits: torch.Tensor, soft: torch.Tensor | None, hard: torch.Tensor, *,
                 loss: str = "mse", beta: float = 0.1, temperature: float = 20.0) -> torch.Tensor:
    """``logits`` [B,C] from the student; ``soft`` [B,C] labeler logits or None; ``hard`` [B,C] target probabilities.

    - soft is None (``--labels hard``): CE only.
    - ``mse``: MSE(student, labeler) + beta * CE  (HeLlO, Algorithm 1).
    - ``kl``:  T^2 * KL(softmax(t/T) || softmax(s/T)) + beta * CE  (RDED's protocol; T^2 keeps gradients T-independent).
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, hard)
    if soft is None:
        return ce
    soft = soft.float()
    if loss == "mse":
        distill = F.mse_loss(logits, soft)
    elif loss == "kl":
        t = temperature
        distill = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(soft / t, dim=1),
                           reduction="batchmean", log_target=True) * (t * t)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return distill + beta * ce
