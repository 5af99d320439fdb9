"""The student's loss: soft labels (MSE or temperature KL) plus beta * CE on the (mixed) hard labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def student_loss(logits: torch.Tensor, soft: torch.Tensor | None, hard: torch.Tensor, *,
                 loss: str = "mse", beta: float = 0.1, temperature: float = 20.0) -> torch.Tensor:
    """``logits`` [B,C] from the student; ``soft`` [B,C] labeler logits or None; ``hard`` [B,C] target probabilities.

    - soft is None (``--labels hard``): CE only.
    - ``mse``: MSE(student, labeler) + beta * CE  (HeLlO, Algorithm 1).
    - ``kl``: RDED exactly (validation/main.py): ``KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T))``,
      no T^2; plus beta * CE, where beta is 0 unless asked for.
    - ``kl-t2``: T^2 * that KL + beta * CE (hellopack 0.1's ``kl``; T^2 keeps gradients T-independent).
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, hard)
    if soft is None:
        return ce
    soft = soft.float()
    if loss == "mse":
        distill = F.mse_loss(logits, soft)
    elif loss in ("kl", "kl-t2"):
        t = temperature
        distill = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(soft / t, dim=1), reduction="batchmean")
        if loss == "kl-t2":
            distill = distill * (t * t)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return distill + beta * ce if beta else distill
