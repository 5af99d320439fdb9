"""Fast unit tests of the train pieces: recipe resolution, augmentation, losses, checkpoints, class matching."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import math

import pytest
import torch
import torch.nn.functional as F

from hellopack.errors import HellopackError
from hellopack.train import TrainConfig
from hellopack.train import checkpoint as ckpt
from hellopack.train.augment import AugmentConfig, Augmenter, shuffle_patches, step_generator
from hellopack.train.evaluate import match_classes, open_val_source, parse_val_spec
from hellopack.train.losses import student_loss

MANIFEST = {
    "images": {"size": 32, "factor": 2, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]},
    "recipe": {"epochs": 300, "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "schedule": "cosine",
               "batch_size": 100, "loss": "mse", "beta": 0.1, "temperature": 20.0, "mix": "cutmix",
               "patch_shuffle": True},
}


# ---- recipe ----------------------------------------------------------------------------

def test_recipe_comes_from_the_manifest_and_flags_override_it() -> None:
    r = TrainConfig(archive="a", arch="convnet").resolve(MANIFEST)
    assert (r.epochs, r.optimizer, r.lr, r.weight_decay, r.schedule, r.batch_size) == (300, "adamw", 0.001, 0.01, "cosine", 100)
    assert (r.loss, r.beta, r.temperature, r.mix, r.patch_shuffle) == ("mse", 0.1, 20.0, "cutmix", True)
    assert (r.image_size, r.factor, r.mean, r.std) == (32, 2, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert r.crop_scale == (0.5, 1.0)  # small images keep half their area
    big = {**MANIFEST, "images": {**MANIFEST["images"], "size": 224}}
    assert TrainConfig(archive="a", arch="convnet").resolve(big).crop_scale == (0.08, 1.0)
    assert TrainConfig(archive="a", arch="convnet", crop_scale=(0.2, 0.9)).resolve(big).crop_scale == (0.2, 0.9)
    r = TrainConfig(archive="a", arch="convnet", epochs=5, lr=0.1, optimizer="sgd", loss="kl", mix="none",
                    patch_shuffle=False, batch_size=7).resolve(MANIFEST)
    assert (r.epochs, r.lr, r.optimizer, r.loss, r.mix, r.patch_shuffle, r.batch_size) == (5, 0.1, "sgd", "kl", "none", False, 7)


def test_recipe_rejects_bad_values_naming_the_flag() -> None:
    with pytest.raises(HellopackError, match=r"^--optimizer 'adam' is not one of adamw, sgd$"):
        TrainConfig(archive="a", arch="x", optimizer="adam").resolve(MANIFEST)
    with pytest.raises(HellopackError, match=r"^--labels teacher needs --teacher ARCH:CHECKPOINT or --teachers-dir DIR$"):
        TrainConfig(archive="a", arch="x", labels="teacher").resolve(MANIFEST)
    with pytest.raises(HellopackError, match=r"^--epochs must be positive, got 0$"):
        TrainConfig(archive="a", arch="x", epochs=0).resolve(MANIFEST)


# ---- augmentation ------------------------------------------------------------------------

def test_patch_shuffle_permutes_whole_patches_within_each_image() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8)
    y = shuffle_patches(x, 2, step_generator(0, 0))
    for b in range(2):
        def patches(t):
            return sorted(tuple(t[b, :, i:i + 4, j:j + 4].flatten().tolist()) for i in (0, 4) for j in (0, 4))
        assert patches(y) == patches(x)  # same four patches, each intact
    assert not torch.equal(x, y)
    assert torch.equal(shuffle_patches(x, 1, step_generator(0, 0)), x)


def test_augmentation_is_a_function_of_the_generator_and_leaves_global_rng_alone() -> None:
    aug = Augmenter(AugmentConfig(size=16, num_classes=3, factor=2, mix="cutmix"))
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    state = torch.get_rng_state()
    x1, t1 = aug(images, labels, step_generator(3, 7))
    x2, t2 = aug(images, labels, step_generator(3, 7))
    x3, _ = aug(images, labels, step_generator(3, 8))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(x1, x2) and torch.equal(t1, t2) and not torch.equal(x1, x3)
    assert x1.shape == (6, 3, 16, 16) and x1.dtype == torch.float32 and 0 <= x1.min() and x1.max() <= 1
    assert torch.allclose(t1.sum(1), torch.ones(6))  # mixed one-hot rows


def test_no_mix_gives_one_hot_targets() -> None:
    aug = Augmenter(AugmentConfig(size=8, num_classes=3, mix="none"))
    _, t = aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([2, 0]), step_generator(0, 0))
    assert t.tolist() == [[0, 0, 1], [1, 0, 0]]


# ---- losses ----------------------------------------------------------------------------

def test_losses() -> None:
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[0.0, 2.0, 5.0]])
    hard = torch.tensor([[0.0, 0.0, 1.0]])
    ce = F.cross_entropy(s, hard)
    assert student_loss(s, None, hard).item() == pytest.approx(ce.item())
    assert student_loss(s, t, hard, loss="mse", beta=0.1).item() == pytest.approx(5 / 3 + 0.1 * ce.item(), rel=1e-6)
    assert student_loss(t, t, hard, loss="kl", beta=0.0).item() == pytest.approx(0.0, abs=1e-6)
    # RDED's KL by hand: sum_c p_c (log p_c - log q_c), p = softmax(t / T), q = softmax(s / T), T = 4, batch of 1
    def softmax(v: list[float]) -> list[float]:
        e = [math.exp(x / 4) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax([0.0, 2.0, 5.0]), softmax([1.0, 2.0, 3.0])
    kl = sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    assert kl == pytest.approx(0.04822, abs=1e-5)
    assert student_loss(s, t, hard, loss="kl", beta=0.0, temperature=4).item() == pytest.approx(kl, rel=1e-5)  # no T^2
    assert student_loss(s, t, hard, loss="kl", beta=0.5, temperature=4).item() == pytest.approx(kl + 0.5 * ce.item(), rel=1e-5)
    # hellopack 0.1's kl, kept for its archives: T^2 * KL + beta * CE
    assert student_loss(s, t, hard, loss="kl-t2", beta=0.5, temperature=4).item() == pytest.approx(16 * kl + 0.5 * ce.item(), rel=1e-5)


# ---- checkpoints -------------------------------------------------------------------------

def test_checkpoint_round_trips_model_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    for _ in range(3):
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        sched.step()
    rng = {"rank0.cpu": torch.get_rng_state()}
    ckpt.save(tmp_path, model, opt, sched, rng, {"epoch": 3, "step": 3})
    c = ckpt.load(tmp_path)
    assert c.meta == {"epoch": 3, "step": 3}
    assert torch.equal(c.rng["rank0.cpu"], rng["rank0.cpu"])
    m2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.1)
    s2 = torch.optim.lr_scheduler.LambdaLR(o2, lambda s: 1 / (1 + s))
    m2.load_state_dict(c.model)
    o2.load_state_dict(c.optimizer)
    s2.load_state_dict(c.scheduler)
    for (k, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    for pid, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            assert torch.equal(v, o2.state_dict()["state"][pid][key])
    assert s2.get_last_lr() == sched.get_last_lr() and s2.last_epoch == 3
    assert (tmp_path / "last.json").is_file()
    assert not list(tmp_path.glob("*.tmp"))


# ---- validation classes --------------------------------------------------------------------

@dataclass(frozen=True)
class C:
    index: int
    name: str
    source_id: str


ARCH = [{"index": 0, "name": "cat", "source_id": "n01"}, {"index": 1, "name": "dog", "source_id": "n02"},
        {"index": 2, "name": "fox", "source_id": "n03"}]


def test_val_classes_are_matched_by_id_and_reordered() -> None:
    remap = match_classes(ARCH, [C(0, "Dog", "n02"), C(1, "Fox", "n03"), C(2, "Cat", "n01")], "v")
    assert remap.tolist() == [1, 2, 0]
    assert match_classes(ARCH, [C(0, "cat", ""), C(1, "dog", ""), C(2, "fox", "")], "v").tolist() == [0, 1, 2]


def test_val_class_mismatch_names_the_difference() -> None:
    with pytest.raises(HellopackError) as e:
        match_classes(ARCH, [C(0, "cat", "n01"), C(1, "dog", "n02"), C(2, "owl", "n09")], "/data/val")
    assert str(e.value) == ("--val '/data/val' has 3 classes, the archive has 3; only in the archive: n03; "
                            "only in --val: n09; pass the validation data of the archive's dataset")


def test_val_spec_parsing(tmp_path: Path) -> None:
    recipes = ["cifar10", "synthetic", "imagefolder"]
    assert parse_val_spec(str(tmp_path), None, recipes) == (None, str(tmp_path))
    assert parse_val_spec("cifar10:/x/y", None, recipes) == ("cifar10", "/x/y")
    assert parse_val_spec("synthetic", None, recipes) == ("synthetic", None)
    assert parse_val_spec("/x", "imagefolder", recipes) == ("imagefolder", "/x")
    with pytest.raises(HellopackError, match=r"^--val '/nope/val' is neither an existing path nor a dataset recipe"):
        parse_val_spec("/nope/val", None, recipes)


def test_val_data_errors_name_the_val_flag(tmp_path: Path) -> None:
    """The data layer's fixes name --data-dir (build, teach); the same errors under train say --val."""
    (tmp_path / "folder" / "train" / "a").mkdir(parents=True)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "train-000000.tar").write_bytes(b"")
    cases = [
        (str(tmp_path / "folder"), "folder", f"no 'val' folder under '{tmp_path / 'folder'}' (found: train); "
                                             f"add a 'val' folder or point --val at the class folders"),
        (str(tmp_path / "shards"), "wds", f"no 'val' shards in '{tmp_path / 'shards'}' (found: train-*); "
                                          f"add val-*.tar shards or point --val at a folder that holds them"),
        (f"cifar10:{tmp_path / 'nope'}", None, f"data dir '{tmp_path / 'nope'}' does not exist; check --val"),
        ("imagenet", None, "recipe 'imagenet' needs a data location; pass --val imagenet:PATH"),
    ]
    for spec, recipe, message in cases:
        with pytest.raises(HellopackError) as e:
            open_val_source(spec, None, {"dataset": {"recipe": recipe}})
        assert str(e.value) == message


def test_images_per_step_count_the_short_last_batch() -> None:
    from hellopack.train.loop import steps_images, steps_per_epoch

    assert steps_per_epoch(10, 4, drop_last=True) == 2 and steps_per_epoch(10, 4, drop_last=False) == 3
    assert [steps_images(10, 4, False, s) for s in range(5)] == [0, 4, 8, 10, 14]
    assert [steps_images(10, 4, True, s) for s in range(4)] == [0, 4, 8, 12]
