"""Recipe names, CIFAR without a download, and the class lists that ship with the package."""

from __future__ import annotations

import pytest

from hellopack.data import RECIPES, open_source
from hellopack.data.cifar import CIFAR100_CLASSES
from hellopack.errors import HellopackError


def test_recipe_names():
    assert RECIPES.names() == ["cifar10", "cifar100", "folder", "imagenet", "synthetic", "wds"]
    with pytest.raises(HellopackError) as e:
        open_source("cifar1")
    assert str(e.value) == "unknown dataset recipe 'cifar1'; did you mean: cifar10, cifar100?"
    with pytest.raises(HellopackError, match="unknown split 'dev'; use one of train, val, test"):
        open_source("synthetic", split="dev")


def test_cifar_not_downloaded_says_how_to_get_it(tmp_path):
    with pytest.raises(HellopackError) as e:
        open_source("cifar10", tmp_path)
    assert str(e.value) == (
        f"CIFAR-10 not found in '{tmp_path}'; pass --download to fetch it (needs internet) or point "
        f"--data-dir at a folder of WebDataset shards (train-*.tar, test-*.tar)")
    with pytest.raises(HellopackError) as e:
        open_source("cifar100", tmp_path / "nope")
    assert str(e.value) == (f"data dir '{tmp_path / 'nope'}' does not exist; pass --download to fetch CIFAR-100 "
                            "or check --data-dir")


def test_cifar100_names_and_classes_file_count(tmp_path):
    assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    (tmp_path / "train-0.tar").write_bytes(b"")  # a shard folder: the CIFAR names apply
    src = open_source("cifar100", tmp_path)
    assert src.classes[1].name == "aquarium fish" and src.classes[1].source_id == "aquarium_fish"
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(HellopackError, match="CIFAR-100 has 100 classes but the classes file names 2"):
        open_source("cifar100", tmp_path)
