"""The student's loss: soft labels (MSE or temperature KL) plus beta * CE on the (mixed) hard labels.

``TrainLoss`` is the recipe's loss as one callable (`hellopack train` and ``hellopack.open(...).train_loss()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TrainLoss:
    """The archive's loss as one call: ``loss_fn(student_logits, soft, targets)`` -> scalar tensor.

    ``soft``: the labeler's logits [B,C] (None: hard labels, CE only); ``targets``: the augmenter's (mixed)
    target probabilities [B,C]. ``loss``, ``beta`` and ``temperature`` are the recipe's (see ``student_loss``).
    """

    loss: str = "mse"
    beta: float = 0.1
    temperature: float = 20.0

    @classmethod
    def from_recipe(cls, recipe: Any) -> "TrainLoss":
        """The loss of a resolved train recipe (``hellopack.train.config.Recipe``)."""
        return cls(loss=recipe.loss, beta=recipe.beta, temperature=recipe.temperature)

    def __call__(self, logits: torch.Tensor, soft: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """MSE (or KL) of ``logits`` to ``soft`` plus ``beta`` x CE to ``targets``; CE alone when ``soft`` is None."""
        return student_loss(logits, soft, targets, loss=self.loss, beta=self.beta, temperature=self.temperature)
