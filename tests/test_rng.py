"""hellopack.rng: per-sample seeding draws what torch.manual_seed would, restores the caller's
generator, and never touches the accelerators' generators (issue 18's profile: torch.manual_seed
per sample cost about 1 ms each on a CPU machine, and on a GPU it would reseed CUDA every sample)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from hellopack.data.loader import make_loader
from hellopack.data import SyntheticConfig, open_source
from hellopack.distill.select import CropSpec, make_crops
from hellopack.pretrain.augment import two_views, view_transform
from hellopack.rng import cpu_seeded
from hellopack.train.augment import AugmentConfig, Augmenter


def test_cpu_seeded_draws_as_manual_seed_and_restores_the_callers_state() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with cpu_seeded(2**62 + 5):
        ours = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(2**62 + 5)
    assert torch.equal(ours, torch.rand(5))  # bit for bit


@pytest.fixture
def no_accelerator_seeding(monkeypatch):
    calls = []
    for mod in (torch.cuda, torch.xpu, torch.mtia):
        monkeypatch.setattr(mod, "manual_seed_all", lambda seed, m=mod.__name__: calls.append(m), raising=False)
    return calls


def test_per_sample_augmentations_leave_the_accelerator_generators_alone(no_accelerator_seeding) -> None:
    src = open_source("synthetic", synthetic=SyntheticConfig(num_classes=2, per_class=4, image_size=16))
    for _ in make_loader(src, 16, 4, train=True, seed=0):
        pass
    two_views(view_transform(16), Image.new("RGB", (16, 16)), seed=3)
    make_crops(Image.new("RGB", (32, 32)), "k", CropSpec(m_crops=2, size=16, scale=(0.5, 1.0), seed=0))
    aug = Augmenter(AugmentConfig(size=16, num_classes=2))
    aug.mix(aug.views(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.Generator().manual_seed(0)),
            torch.tensor([0, 1, 0, 1]), torch.Generator().manual_seed(1))
    assert no_accelerator_seeding == []
