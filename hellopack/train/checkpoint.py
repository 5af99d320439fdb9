"""Resumable training checkpoints: ``checkpoints/last.safetensors`` + ``last.json`` (see hellopack.statefile).

Besides the model, optimizer and scheduler, a training checkpoint keeps every
process's RNG states (uint8 tensors) so ``--resume`` continues bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hellopack import statefile

NAME = "last"


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    meta: dict[str, Any]  # epoch, step, run identity, timing


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    statefile.save(folder, NAME, model, optimizer, scheduler, meta, extra=rng)


def exists(folder: Path) -> bool:
    return statefile.exists(folder, NAME)


def load(folder: Path) -> Checkpoint:
    s = statefile.load(folder, NAME)
    return Checkpoint(model=s.model, optimizer=s.optimizer, scheduler=s.scheduler, rng=s.extra, meta=s.meta)
