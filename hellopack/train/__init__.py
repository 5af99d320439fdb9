"""Train a student on an archive with labels regenerated for every augmented batch (`hellopack train`).

Heavy modules load on first use: configuration (``TrainConfig``, ``Recipe``) imports no torch.
"""

from __future__ import annotations

from typing import Any

from hellopack.progress import NULL, Reporter
from hellopack.train.config import Recipe, TrainConfig


def train(cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train ``cfg.seeds`` students; returns result.json's content (see hellopack.train.loop)."""
    from hellopack.train.loop import train as _train

    return _train(cfg, reporter)


__all__ = ["Recipe", "TrainConfig", "train"]
