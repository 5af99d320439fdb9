"""hellopack: distilled images plus low-rank label generators in one archive (HeLlO).

The Python API (``hellopack.open(path_or_url)`` -> ``Pack``: dataset, augmenter, labeler, train_loss) loads
on first use: ``import hellopack`` stays cheap and imports no torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["open", "Pack", "Recipe", "ArchiveDataset", "Augmenter", "ProjectorLabeler", "TrainLoss"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562); plain imports, no dynamic module names."""
    if name in ("open", "Pack"):
        from hellopack import api as module
    elif name == "Recipe":
        from hellopack.train import config as module
    elif name == "ArchiveDataset":
        from hellopack.train import dataset as module
    elif name == "Augmenter":
        from hellopack.train import augment as module
    elif name == "ProjectorLabeler":
        from hellopack.train import labelers as module
    elif name == "TrainLoss":
        from hellopack.train import losses as module
    else:
        raise AttributeError(f"module 'hellopack' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names plus the lazily loaded public ones."""
    return sorted(set(globals()) | set(__all__))
