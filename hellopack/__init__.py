"""hellopack: distilled images plus low-rank label generators in one archive (HeLlO).

The Python API (``hellopack.open(path_or_url)`` -> ``Pack``: dataset, augmenter, labeler, train_loss) loads
on first use: ``import hellopack`` stays cheap and imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "open": "hellopack.api",
    "Pack": "hellopack.api",
    "Recipe": "hellopack.train.config",
    "ArchiveDataset": "hellopack.train.dataset",
    "Augmenter": "hellopack.train.augment",
    "ProjectorLabeler": "hellopack.train.labelers",
    "TrainLoss": "hellopack.train.losses",
}

__all__ = ["open", "Pack", "Recipe", "ArchiveDataset", "Augmenter", "ProjectorLabeler", "TrainLoss"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hellopack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names plus the lazily loaded public ones."""
    return sorted(set(globals()) | set(__all__))
