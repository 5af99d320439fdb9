"""Refine the projector on the views `train` will label: the distilled images under the student's augmentation.

The fit (hellopack.distill.fit) matches the teachers over the whole training set. A student
never sees that set: it sees random crops, flips and CutMix/MixUp of the few archive
images. Refining continues the LoRA training on exactly those views, with the same loss
(MSE to the mean teacher logits + lam * CE to the mixed hard labels), so the stored
factors spend their capacity where labels are read. It is a short stage (hundreds of
steps on at most ``batch_size`` images each) and changes only the LoRA factors.

Views come from ``hellopack.train.augment.Augmenter`` with the recipe written into the
archive, each step seeded from (seed, step): the stage is deterministic, and a killed
refine simply reruns. Agreement is measured before and after on views the refine never
trained on (another seed), so the report shows what changed on unseen views. A refine that
lowers that agreement, or whose loss stops being finite (a learning rate too high for the
base), is undone: the fitted factors are restored and the result says ``kept="fit"``, so
the option can never leave an archive worse on the views its student reads than without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hellopack.device import autocast
from hellopack.progress import Reporter
from hellopack.schedule import COSINE, lr_factor
from hellopack.train.augment import Augmenter, AugmentConfig, step_generator
from hellopack.train.core import TrainStep, run_steps

HELD_OUT_SEED_OFFSET = 1_000_003  # views for the before/after agreement: never the training views


@dataclass(frozen=True)
class RefineParams:
    steps: int
    lr: float
    weight_decay: float
    batch_size: int
    lam: float
    seed: int
    eval_batches: int = 8  # held-out view batches for the before/after agreement


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE against (CutMix/MixUp-mixed) one-hot targets."""
    return torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()


def _batch(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of step ``step``: all images when they fit in one batch, else a seeded sample."""
    n = len(images)
    if n <= size:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed * 7_919 + step)
    return torch.randperm(n, generator=gen)[:size]


@torch.no_grad()
def view_agreement(projector: nn.Module, teachers: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   augment: Augmenter, params: RefineParams, device: torch.device) -> float:
    """Top-1 agreement of projector and teacher mean on held-out augmented views."""
    seed = params.seed + HELD_OUT_SEED_OFFSET
    agree = total = 0
    for step in range(params.eval_batches):
        idx = _batch(images, labels, params.batch_size, seed, step)
        x, _ = augment(images[idx], labels[idx], step_generator(seed, step))
        x = x.to(device)
        with autocast(device):
            t, p = teachers(x).float(), projector(x).float()
        agree += int((t.argmax(1) == p.argmax(1)).sum())
        total += len(x)
    return agree / max(1, total)


def refine_projector(projector: nn.Module, teachers: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     augment_cfg: AugmentConfig, params: RefineParams, device: torch.device,
                     reporter: Reporter) -> dict[str, Any]:
    """Train the LoRA factors of ``projector`` in place on augmented views of ``images`` (uint8 [N,3,S,S]).

    Returns {"steps", "final_loss", "views_agreement_before", "views_agreement_after", "kept"}: ``steps`` is
    how many ran (fewer when the loss stopped being finite), ``views_agreement_after`` is the refined
    factors' agreement (None when their loss was not finite), and ``kept`` is "refined", or "fit" when those factors were worse and the fitted
    ones were restored.
    """
    augment = Augmenter(augment_cfg)
    before = view_agreement(projector, teachers, images, labels, augment, params, device)
    train_params = list(projector.trainable_parameters())
    fitted = [p.detach().clone() for p in train_params]  # restored if the refine makes things worse
    for p in train_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(train_params, lr=params.lr, weight_decay=params.weight_decay)
    projector.train()

    def views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = _batch(images, labels, params.batch_size, params.seed, step)
        x, hard = augment(images[idx], labels[idx], step_generator(params.seed, step))
        return x.to(device), hard.to(device)

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, hard = batch
        with autocast(device):
            with torch.no_grad():
                target = teachers(x).float()
            logits = projector(x).float()
        return F.mse_loss(logits, target) + params.lam * soft_cross_entropy(logits, hard)

    losses: list[float] = []

    def diverged(step: int, value: float) -> None:  # no later step can be trusted: stop here
        losses.append(value)

    train_step = TrainStep(opt, loss_fn, lr=lambda step: params.lr * lr_factor(COSINE, step, params.steps),
                           diverged=diverged)  # cosine to zero, like the fit
    with reporter.stage("refine projector on the archive's views", total=params.steps, unit="step") as bar:
        def on_step(step: int, value: float) -> None:
            losses.append(value)
            bar.advance(1, loss=round(value, 4))

        done = run_steps(train_step, ((step, views(step)) for step in range(params.steps)), on_step)
    last = losses[-1] if losses else float("nan")
    projector.eval()
    for p in train_params:
        p.requires_grad_(False)
    finite = math.isfinite(last)
    after = view_agreement(projector, teachers, images, labels, augment, params, device) if finite else None
    kept = "refined" if after is not None and after >= before else "fit"
    if kept == "fit":
        with torch.no_grad():
            for p, saved in zip(train_params, fitted):
                p.copy_(saved)
    return {"steps": done, "final_loss": last if finite else None, "views_agreement_before": round(before, 6),
            "views_agreement_after": None if after is None else round(after, 6), "kept": kept}


__all__ = ["RefineParams", "refine_projector", "view_agreement", "soft_cross_entropy"]
