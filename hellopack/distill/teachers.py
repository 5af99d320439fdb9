"""Weak teachers: resolve the specs, load them, check their class count, average their logits."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import re

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
    """``--teacher`` specs followed by the checkpoints of ``--teachers-dir`` (see ``dir_specs``)."""
    specs = list(teachers)
    if teachers_dir is not None:
        specs += dir_specs(teachers_dir)
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


# torchvision's train.py also writes checkpoint.pth, a copy of its latest model_{epoch}.pth.
_LATEST_COPY = "checkpoint.pth"
_DIR_SUFFIXES = (".pth", ".pt", ".safetensors")


def dir_specs(value: str | Path) -> list[str]:
    """Teacher specs of ``--teachers-dir``.

    ``DIR``: a `hellopack teach` trajectory (its ``trajectory.json`` names the architecture).
    ``ARCH:DIR``: every ``.pth``/``.pt``/``.safetensors`` file of a folder of training checkpoints
    (torchvision's ``model_{epoch}.pth``; its ``checkpoint.pth`` copy is skipped) in epoch order;
    ``ARCH:DIR#ema`` reads each file's EMA weights.
    """
    from hellopack.distill.teach import TRAJECTORY, load_trajectory
    from hellopack.models.teachers import EMA_SUFFIX, parse_teacher_spec

    text = str(value)
    folder = Path(text).expanduser()
    if folder.is_dir() or ":" not in text:
        if folder.is_dir() and not (folder / TRAJECTORY).is_file() and _checkpoint_files(folder):
            raise HellopackError(f"teachers folder '{folder}' has checkpoints but no {TRAJECTORY}; name their "
                                 f"architecture: --teachers-dir ARCH:{folder} (e.g. resnet18:{folder})")
        return load_trajectory(folder)
    arch, rest = parse_teacher_spec(text)  # checks the architecture name
    suffix = EMA_SUFFIX if rest.endswith(EMA_SUFFIX) else ""
    folder = Path(rest[:len(rest) - len(suffix)]).expanduser()
    if not folder.is_dir():
        raise HellopackError(f"teachers folder '{folder}' does not exist; check the --teachers-dir path")
    files = _checkpoint_files(folder)
    if not files:
        raise HellopackError(f"teachers folder '{folder}' holds no {'/'.join(_DIR_SUFFIXES)} checkpoints; "
                             f"pass the --output-dir of torchvision's train.py or a `hellopack teach` folder")
    return [f"{arch}:{f}{suffix}" for f in files]


def _checkpoint_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in _DIR_SUFFIXES and p.name != _LATEST_COPY]
    # model_2.pth before model_10.pth: numbers compare as numbers
    return sorted(files, key=lambda p: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                        for t in re.split(r"(\d+)", p.name)])
