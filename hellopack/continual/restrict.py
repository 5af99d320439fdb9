"""Restrict labels, targets and evaluation to the classes seen so far (GDumb's class mask).

The student of a step has one output per seen class, in the order the classes
arrived (column k = archive class ``seen[k]``); unseen classes have no output at
all, so nothing can push probability towards them. The labelers still speak
all C archive classes; their logits are cut down to the seen columns here.

How each loss sees the restriction (``hellopack.train.losses.student_loss``):

- ``kl``: the target is softmax(projector logits / T) over the seen columns only,
  i.e. the projector's distribution renormalised over the seen classes; an unseen
  class gets exactly zero probability (:func:`seen_probabilities` spells it out).
- ``mse``: compares the student's logits with the projector's logits of the seen
  classes only; unseen logits are dropped, never compared. (MSE on logits has no
  normaliser of its own: matching the seen logits is matching the renormalised
  distribution softmax(seen logits).)
- CE (the ``beta`` term, and all of ``--labels hard``): hard labels are remapped
  to 0..K-1; CutMix/MixUp mix only this step's images, so mixed targets stay on
  seen classes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from hellopack.train.evaluate import Evaluator
from hellopack.train.labelers import Labeler


def class_remap(seen: Sequence[int], num_classes: int) -> torch.Tensor:
    """Archive class -> student column (0..K-1), or -1 for classes not seen yet."""
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[torch.as_tensor(list(seen), dtype=torch.long)] = torch.arange(len(seen))
    return remap


def restrict_logits(logits: torch.Tensor, seen: Sequence[int]) -> torch.Tensor:
    """[B, C] archive-class logits -> [B, K] logits of the seen classes, in ``seen`` order."""
    return logits.index_select(1, torch.as_tensor(list(seen), dtype=torch.long, device=logits.device))


def seen_probabilities(logits: torch.Tensor, seen: Sequence[int], temperature: float = 1.0) -> torch.Tensor:
    """[B, C] probabilities: softmax over the seen classes only, exactly 0 for every other class."""
    idx = torch.as_tensor(list(seen), dtype=torch.long, device=logits.device)
    probs = torch.zeros_like(logits, dtype=torch.float32)
    probs[:, idx] = torch.softmax(logits.float().index_select(1, idx) / temperature, dim=1)
    return probs


class SeenClassLabeler:
    """Wraps a labeler (projector, teachers, hard) so it labels only the seen classes."""

    def __init__(self, inner: Labeler, seen: Sequence[int]) -> None:
        self.inner = inner
        self.seen = list(seen)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor | None:
        logits = self.inner(x01)
        return None if logits is None else restrict_logits(logits, self.seen)


def select_seen(images: torch.Tensor, labels: torch.Tensor, seen: Sequence[int],
                num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The archive images of the seen classes, with labels remapped to student columns (archive order kept)."""
    remap = class_remap(seen, num_classes)
    keep = remap[labels] >= 0
    return images[keep], remap[labels[keep]]


def seen_evaluator(evaluator: Evaluator, seen: Sequence[int], num_classes: int) -> Evaluator:
    """Evaluate on the images of the seen classes only; top-1 is over the seen classes' outputs."""
    remap = class_remap(seen, num_classes)

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in evaluator.batches():
            mapped = remap[y]
            keep = mapped >= 0
            if keep.any():
                yield x[keep], mapped[keep]

    description = f"{evaluator.description}, the {len(seen)} classes seen so far"
    return Evaluator(description, batches, len(seen), evaluator.device)
