"""Labels, losses and evaluation restricted to the classes seen so far."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hellopack.archive import open_archive
from hellopack.continual.restrict import (SeenClassLabeler, class_remap, restrict_logits, seen_evaluator,
                                          seen_probabilities, select_seen)
from hellopack.train.evaluate import Evaluator
from hellopack.train.labelers import ProjectorLabeler, projector_from_archive
from hellopack.train.losses import student_loss
from test_train_kit import demo_archive, synthetic  # noqa: F401

SEEN = [3, 0]  # arrival order: class 3 first, then class 0


def test_probabilities_over_seen_classes_sum_to_one_and_unseen_get_exactly_zero() -> None:
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 4
    for t in (1.0, 20.0):
        p = seen_probabilities(logits, SEEN, temperature=t)
        assert p.shape == (6, 5)
        assert torch.allclose(p.sum(1), torch.ones(6))
        assert torch.all(p[:, [1, 2, 4]] == 0)
        assert torch.all(p[:, SEEN] > 0)
        # renormalised: the full softmax's seen part, divided by its mass
        full = torch.softmax(logits / t, 1)[:, SEEN]
        assert torch.allclose(p[:, SEEN], full / full.sum(1, keepdim=True), atol=1e-6)


def test_projector_labels_are_the_seen_columns_in_arrival_order(demo_archive: Path) -> None:  # noqa: F811
    proj = ProjectorLabeler(projector_from_archive(open_archive(demo_archive)), torch.device("cpu"))
    x = torch.from_numpy(np.stack([a for a, _ in synthetic(2, 16, 5)])).permute(0, 3, 1, 2).float() / 255
    full = proj(x)
    got = SeenClassLabeler(proj, SEEN)(x)
    assert got.shape == (8, 2)
    assert torch.equal(got, full[:, SEEN])
    assert torch.allclose(torch.softmax(got, 1).sum(1), torch.ones(8))
    assert SeenClassLabeler(lambda x01: None, SEEN)(x) is None  # --labels hard stays CE only


def test_unseen_projector_logits_never_reach_the_loss() -> None:
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 2, generator=g, requires_grad=True)  # one output per seen class
    proj = torch.randn(4, 5, generator=g) * 3
    hard = F.one_hot(torch.tensor([0, 1, 1, 0]), 2).float()
    changed = proj.clone()
    changed[:, [1, 2, 4]] += 100.0  # the projector shouts about classes not seen yet
    for kind in ("mse", "kl"):
        a = student_loss(student, restrict_logits(proj, SEEN), hard, loss=kind, beta=0.1, temperature=20.0)
        b = student_loss(student, restrict_logits(changed, SEEN), hard, loss=kind, beta=0.1, temperature=20.0)
        assert torch.equal(a, b), kind
    # mse compares the seen logits only
    mse = student_loss(student, restrict_logits(proj, SEEN), hard, loss="mse", beta=0.0)
    assert torch.allclose(mse, ((student - proj[:, SEEN]) ** 2).mean())
    # kl's target is exactly the renormalised distribution over the seen classes
    t = 20.0
    target = seen_probabilities(proj, SEEN, temperature=t)[:, SEEN]
    want = (target * (target.log() - torch.log_softmax(student / t, 1))).sum(1).mean()  # RDED: no T^2
    kl = student_loss(student, restrict_logits(proj, SEEN), hard, loss="kl", beta=0.0, temperature=t)
    assert torch.allclose(kl, want, rtol=1e-5)


def test_training_images_and_labels_of_seen_classes_are_remapped() -> None:
    images = torch.arange(7).view(7, 1, 1, 1).expand(7, 3, 2, 2).to(torch.uint8)
    labels = torch.tensor([0, 1, 3, 3, 2, 0, 4])
    x, y = select_seen(images, labels, SEEN, 5)
    assert x[:, 0, 0, 0].tolist() == [0, 2, 3, 5]  # archive order kept
    assert y.tolist() == [1, 0, 0, 1]  # class 3 -> column 0, class 0 -> column 1
    assert class_remap(SEEN, 5).tolist() == [1, -1, -1, 0, -1]


def test_evaluation_counts_only_seen_classes_and_ranks_only_their_outputs() -> None:
    labels = torch.tensor([0, 1, 2, 3, 3, 4, 0, 0])
    x = torch.zeros(8, 3, 2, 2)

    def batches():
        yield x[:5], labels[:5]
        yield x[5:], labels[5:]

    base = Evaluator("val: fake", batches, 5, torch.device("cpu"))

    class Fixed(torch.nn.Module):  # always says column 1 (= archive class 0)
        def forward(self, x01: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 1.0]).expand(len(x01), 2)

    res = seen_evaluator(base, SEEN, 5)(Fixed())
    assert res.images == 5  # three images of class 0, two of class 3
    assert res.top1 == 60.0 and res.top5 == 100.0  # top-5 over the 2 seen classes
    assert res.evaluated_on == "val: fake, the 2 classes seen so far"
