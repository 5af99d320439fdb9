"""The pretraining work folder's checkpoint: ``WORK/checkpoint.safetensors`` + ``checkpoint.json``.

Stored through hellopack.statefile (no pickle, atomic). Batches and augmentations are
pure functions of (seed, epoch, position) and nothing else draws from a global RNG,
so (weights, optimizer, scheduler, epoch) is the whole state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hellopack import statefile
from hellopack.statefile import TrainingState as State

NAME = "checkpoint"

__all__ = ["State", "exists", "load", "save"]


def exists(folder: Path) -> bool:
    return statefile.exists(folder, NAME)


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         meta: dict[str, Any]) -> None:
    statefile.save(folder, NAME, model, optimizer, scheduler, meta)


def load(folder: Path) -> State:
    return statefile.load(folder, NAME)
