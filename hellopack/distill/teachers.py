"""Weak teachers: resolve the specs, load them, check their class count, average their logits."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from hellopack.errors import HellopackError


class TeacherEnsemble(nn.Module):
    """The fit target Y' = mean of the teachers' logits (paper Eq. 5). Frozen, eval mode."""

    def __init__(self, teachers: Sequence[nn.Module]) -> None:
        super().__init__()
        if not teachers:
            raise HellopackError("no teachers; pass --teacher ARCH:CHECKPOINT or --teachers-dir DIR")
        self.members = nn.ModuleList(teachers)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "TeacherEnsemble":
        return super().train(False)  # teachers never leave eval mode (BatchNorm statistics fixed)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for t in self.members:  # one at a time: memory of one teacher's activations
            out = t(x).float()
            total = out if total is None else total + out
        assert total is not None
        return total / len(self.members)


def resolve_specs(teachers: Sequence[str], teachers_dir: str | Path | None) -> list[str]:
    """``--teacher`` specs followed by the checkpoints of ``--teachers-dir`` (a `hellopack teach` output)."""
    specs = list(teachers)
    if teachers_dir is not None:
        from hellopack.distill.teach import load_trajectory

        specs += load_trajectory(teachers_dir)
    if not specs:
        raise HellopackError("no weak teachers given; pass --teacher ARCH:CHECKPOINT (repeatable) or "
                             "--teachers-dir DIR (train one with `hellopack teach`)")
    return specs


def load_ensemble(specs: Sequence[str], num_classes: int, image_size: int, mean: Sequence[float],
                  std: Sequence[float], device: torch.device,
                  memory_format: torch.memory_format = torch.contiguous_format) -> TeacherEnsemble:
    """Load every teacher and check that it predicts exactly ``num_classes`` classes."""
    from hellopack.models.teachers import load_teacher

    models = []
    for spec in specs:
        model = load_teacher(spec, num_classes, image_size, tuple(mean), tuple(std))
        model = model.to(device=device, memory_format=memory_format).eval()
        check_classes(model, spec, num_classes, image_size, device)
        models.append(model)
    return TeacherEnsemble(models)


@torch.no_grad()
def check_classes(model: nn.Module, spec: str, num_classes: int, image_size: int, device: torch.device) -> None:
    # One forward on a blank image: catches heads the loader could not check (e.g. pretrained names).
    out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    if out.ndim != 2 or out.shape[1] != num_classes:
        got = out.shape[1] if out.ndim == 2 else list(out.shape)
        raise HellopackError(f"teacher '{spec}' predicts {got} classes but the dataset has {num_classes}; "
                             f"pass teachers trained on this dataset")
