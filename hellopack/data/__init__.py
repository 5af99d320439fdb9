"""Data sources (ImageFolder, WebDataset, CIFAR, ImageNet, synthetic) and loaders.

``open_source(recipe, path, ...)`` returns an :class:`ImageSource`: a deterministic,
streaming sequence of RGB :class:`Sample` objects with class info and normalisation
statistics. ``make_loader`` turns a source into batches of float tensors in [0, 1].
"""

from hellopack.data.convert import IMAGE_EXTENSIONS, BadImage, open_rgb, to_rgb
from hellopack.data.draw import random_subset
from hellopack.data.loader import Loader, Shard, make_loader
from hellopack.data.recipes import RECIPES, check_class_counts, open_source, synthetic_config
from hellopack.data.synthetic import SyntheticConfig, SyntheticSource
from hellopack.data.types import ClassInfo, ImageSource, Sample, SkipReport

__all__ = [
    "BadImage", "ClassInfo", "IMAGE_EXTENSIONS", "ImageSource", "Loader", "RECIPES", "Sample", "SkipReport",
    "SyntheticConfig", "SyntheticSource", "check_class_counts", "make_loader", "Shard", "open_rgb", "open_source", "random_subset",
    "synthetic_config", "to_rgb",
]
