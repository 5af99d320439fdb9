"""Linear-probe accuracy of a base: how much class information its frozen features hold.

The features are exactly what the projector sees: ``normalize(visual(resize+normalise(x)))``
with the tower in eval mode. A multinomial logistic regression (standardised features,
L2 penalty ``1e-4``, full-batch L-BFGS, deterministic) is fitted on the first
``train_images`` labelled training images and scored on the first ``test_images`` of the
held-out split. This is the one part of ``pretrain-base`` that reads labels, and it runs
only after the base has been written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hellopack.data.types import ImageSource
from hellopack.device import autocast
from hellopack.errors import HellopackError
from hellopack.models.base import BaseModel
from hellopack.models.common import ResizeNormalize
from hellopack.progress import NULL, Reporter

L2 = 1e-4
LBFGS_STEPS = 100


@torch.no_grad()
def features(base: BaseModel, src: ImageSource, limit: int, batch_size: int = 256, device: torch.device | None = None,
             reporter: Reporter = NULL, name: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised image features [N, D] float32 on CPU, labels [N]) of the first ``limit`` images."""
    from hellopack.data import make_loader

    device = device or torch.device("cpu")
    prep = ResizeNormalize(base.image_size, base.mean, base.std).to(device)
    visual = base.model.visual.to(device).eval()
    total = limit if src.num_samples is None else min(limit, src.num_samples)
    feats, labels = [], []
    seen = 0
    with reporter.stage(name, total=total, unit="img") as stage:
        for x, y in make_loader(src, src.image_size, batch_size, train=False, seed=0):
            take = min(len(x), total - seen)
            with autocast(device):
                f = visual(prep(x[:take].to(device)))
            feats.append(F.normalize(f.float(), dim=-1).cpu())
            labels.append(y[:take])
            seen += take
            stage.advance(take)
            if seen >= total:
                break
    if not feats:
        raise HellopackError(f"no images for the linear probe in '{src.where}'; check the data location")
    return torch.cat(feats), torch.cat(labels)


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int) -> nn.Linear:
    """Multinomial logistic regression on standardised features (deterministic on CPU)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x = (train_x - mean) / std
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=LBFGS_STEPS, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), train_y) + L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # Fold the standardisation into the layer so callers pass raw features.
    with torch.no_grad():
        w = head.weight / std
        head.bias.sub_((w * mean).sum(1))
        head.weight.copy_(w)
    return head


def linear_probe(base: BaseModel, train_src: ImageSource, test_src: ImageSource, train_images: int,
                 test_images: int, batch_size: int = 256, device: torch.device | None = None,
                 reporter: Reporter = NULL) -> dict[str, Any]:
    """Top-1 of a linear classifier on frozen features: {"top1", "train_images", "test_images", "split"}."""
    tx, ty = features(base, train_src, train_images, batch_size, device, reporter, "probe: train features")
    vx, vy = features(base, test_src, test_images, batch_size, device, reporter, "probe: test features")
    head = fit_linear(tx, ty, train_src.num_classes)
    with torch.no_grad():
        top1 = (head(vx).argmax(1) == vy).float().mean().item()
    return {"top1": top1, "train_images": len(tx), "test_images": len(vx), "classes": train_src.num_classes,
            "method": f"logistic regression, L-BFGS {LBFGS_STEPS} steps, L2 {L2}, standardised features"}
