"""The training core every loop shares: one optimizer step, and the loop over steps.

nanoGPT's shape, once: ``for step, batch in batches: loss = loss_fn(batch); zero_grad;
backward; optimizer.step(); scheduler.step()``. What differs between `train`, the build's
fit and refine, `teach` and `pretrain-base` is handed in: the loss (model + labeler or
target), the learning rate (a ``LambdaLR`` stepped after each step, or ``lr(step)`` set
before it, both from hellopack.schedule), a gradient hook (the fit's all-reduce) and what a
non-finite loss means (an error, or the end of a refine). Batches, progress, evaluation and
checkpoints stay with the caller, which gets each step's loss through ``on_step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch


@dataclass(frozen=True)
class TrainStep:
    """One optimizer step; ``step(batch, index)`` returns the loss (a float)."""

    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Any], torch.Tensor]  # batch -> scalar loss: forward, labels or target, loss
    scheduler: Any = None  # stepped after each optimizer step (a LambdaLR)
    lr: Callable[[int], float] | None = None  # or: every group's lr for step ``index``, set before it
    sync_grads: Callable[[], None] | None = None  # after backward, before the update (all-reduce)
    # A non-finite loss: None trains on (the loss is only reported); otherwise it is called with
    # (index, loss) before any update, and the step is skipped when it returns (it may raise).
    diverged: Callable[[int, float], None] | None = None

    def __call__(self, batch: Any, index: int) -> float:
        if self.lr is not None:
            lr = self.lr(index)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        loss = self.loss_fn(batch)
        value = loss.item()
        if self.diverged is not None and not math.isfinite(value):
            self.diverged(index, value)
            return value
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.sync_grads is not None:
            self.sync_grads()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return value


def run_steps(step: TrainStep, batches: Iterable[tuple[int, Any]],
              on_step: Callable[[int, float], None] | None = None) -> int:
    """Train on ``(index, batch)`` pairs; returns how many steps updated the model.

    Stops early only when ``step.diverged`` returned on a non-finite loss (that step is not counted).
    """
    done = 0
    for index, batch in batches:
        value = step(batch, index)
        if step.diverged is not None and not math.isfinite(value):
            break
        done += 1
        if on_step is not None:
            on_step(index, value)
    return done
