"""Train a student on an archive with labels regenerated for every augmented batch (`hellopack train`)."""

from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.loop import train

__all__ = ["Recipe", "TrainConfig", "train"]
