"""Dataset recipes by name, and the one entry point :func:`open_source`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from hellopack.data.cifar import open_cifar
from hellopack.data.folder import open_folder
from hellopack.data.imagenet import open_imagenet
from hellopack.data.synthetic import SyntheticConfig, SyntheticSource
from hellopack.data.types import ImageSource
from hellopack.data.wds import open_wds
from hellopack.errors import DataPathError, HellopackError
from hellopack.registry import Registry

SPLITS = ("train", "val", "test")

Recipe = Callable[..., ImageSource]
RECIPES: Registry[Recipe] = Registry("dataset recipe")


def _needs_path(recipe: str, path: Any) -> None:
    if path is None:
        raise DataPathError(f"recipe '{recipe}' needs a data location", "pass {flag}")


@RECIPES.register("imagenet")
def _imagenet(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    _needs_path("imagenet", path)
    return open_imagenet(path, split=split, classes_file=classes_file, max_bad_fraction=max_bad_fraction)


@RECIPES.register("folder")
def _folder(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    _needs_path("folder", path)
    return open_folder(path, split=split, classes_file=classes_file, max_bad_fraction=max_bad_fraction)


@RECIPES.register("wds")
def _wds(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    _needs_path("wds", path)
    return open_wds(path, split=split, classes_file=classes_file, max_bad_fraction=max_bad_fraction)


@RECIPES.register("cifar10")
def _cifar10(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    return open_cifar("cifar10", path, split=split, classes_file=classes_file, download=download,
                      max_bad_fraction=max_bad_fraction)


@RECIPES.register("cifar100")
def _cifar100(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    return open_cifar("cifar100", path, split=split, classes_file=classes_file, download=download,
                      max_bad_fraction=max_bad_fraction)


@RECIPES.register("synthetic")
def _synthetic(path, *, split, classes_file, download, max_bad_fraction, synthetic) -> ImageSource:
    return SyntheticSource(synthetic_config(synthetic), split=split, max_bad_fraction=max_bad_fraction)


def synthetic_config(value: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
    """A SyntheticConfig from itself, a mapping of its fields (TOML) or None (defaults)."""
    if value is None:
        return SyntheticConfig()
    if isinstance(value, SyntheticConfig):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise HellopackError(f"unknown synthetic setting '{unknown[0]}'; valid: {', '.join(sorted(known))}")
        return SyntheticConfig(**value)
    raise HellopackError(f"synthetic settings must be a table of {SyntheticConfig.__name__} fields")


def open_source(recipe: str, path: str | os.PathLike | None = None, *, split: str = "train",
                classes_file: str | os.PathLike | None = None, download: bool = False,
                max_bad_fraction: float = 0.01,
                synthetic: SyntheticConfig | Mapping[str, Any] | None = None) -> ImageSource:
    """Open a dataset by recipe name (imagenet, cifar10, cifar100, folder, wds, synthetic)."""
    factory = RECIPES.get(recipe)
    if split not in SPLITS:
        raise HellopackError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise HellopackError(f"max bad fraction {max_bad_fraction} is not in [0, 1]; pass e.g. 0.01")
    return factory(path, split=split, classes_file=classes_file, download=download,
                   max_bad_fraction=max_bad_fraction, synthetic=synthetic)


def check_class_counts(src: ImageSource, needed: int, allow_short: bool = False) -> list[int] | None:
    """Per-class counts, raising when a class has fewer than ``needed`` (unless ``allow_short``).

    Returns None when the source cannot count without decoding (remote shards).
    """
    counts = src.count_per_class()
    if counts is None or allow_short:
        return counts
    short = [(c, n) for c, n in zip(src.classes, counts) if n < needed]
    if short:
        c, n = min(short, key=lambda cn: cn[1])
        more = f" ({len(short)} classes are short)" if len(short) > 1 else ""
        raise HellopackError(f"class '{c.source_id}' ({c.name}) has {n} images but {needed} are needed{more}; "
                             f"add images, ask for fewer, or pass --allow-short to use what exists")
    return counts
