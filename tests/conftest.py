"""Shared fixtures: the real CIFAR-10 shards (skip when ../shared is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HELLOPACK_SHARED", REPO.parent / "shared"))
CIFAR10 = SHARED / "data" / "cifar10"


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    if not (CIFAR10 / "train-000000.tar").is_file():
        pytest.skip(f"CIFAR-10 shards not found at {CIFAR10} (needs ../shared beside the repo)")
    return CIFAR10
