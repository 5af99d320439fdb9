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


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # One intra-op thread for the whole suite: reproducible floats, and no busy-waiting OpenMP
    # threads fighting the gloo/torchrun subprocesses some tests start on a 2-core machine.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
