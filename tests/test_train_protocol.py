"""RDED's evaluation protocol, pinned by what the student's training does (not by config values).

Each test reads behaviour: the crop areas the augmenter produces, the learning rate the
optimizer steps with, which parameters weight decay moves, the patch arrangements the
shuffle yields, the batch sizes and learning rates a new archive resolves to, the resize
the validation loader applies. RDED file references are in hellopack.train.protocol.
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn

from hellopack.data.loader import eval_transform
from hellopack.train import TrainConfig
from hellopack.train import protocol as proto
from hellopack.train.augment import AugmentConfig, Augmenter, shuffle_strips, step_generator
from test_train_kit import cached_archive, demo_val  # noqa: F401

# a recipe as `build` writes it now (BuildConfig.train_recipe), for a 96-px, factor-2, 10-class IPC-10 archive
# (above 64 px, where the old rule would crop (0.08, 1))
RDED_MANIFEST = {
    "images": {"size": 96, "factor": 2, "mean": [0.5] * 3, "std": [0.25] * 3},
    "recipe": {"protocol": "rded", "epochs": 300, "optimizer": "adamw", "lr": 0.001, "lr_by_arch": True,
               "weight_decay": 0.01, "decay": "weights", "schedule": "half-cosine", "batch_size": 50,
               "loss": "mse", "beta": 0.1, "temperature": 20.0, "mix": "cutmix", "mix_alpha": 1.0,
               "crop_scale": [0.5, 1.0], "patch_shuffle": True, "val_resize": 104},
}


def _crop_areas(cfg: AugmentConfig, draws: int) -> list[float]:
    """Area fraction of each random crop, read from an image whose pixels encode their own coordinates."""
    s = cfg.size
    ys, xs = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    img = torch.stack([xs, ys, torch.zeros_like(xs)]).to(torch.uint8) * (255 // (s - 1))
    aug = Augmenter(cfg)
    areas = []
    for step in range(draws):
        x, _ = aug(img[None], torch.zeros(1, dtype=torch.long), step_generator(0, step))
        span_x = (x[0, 0].amax() - x[0, 0].amin()).item() * 255 / (255 // (s - 1)) + 1
        span_y = (x[0, 1].amax() - x[0, 1].amin()).item() * 255 / (255 // (s - 1)) + 1
        areas.append(span_x * span_y / (s * s))
    return areas


def test_new_archives_crop_at_least_one_over_factor_of_the_image() -> None:
    r = TrainConfig(archive="a", arch="convnet").resolve(RDED_MANIFEST)
    cfg = AugmentConfig(size=r.image_size, num_classes=10, crop_scale=r.crop_scale, flip=False, factor=2,
                        patch_shuffle=False, mix="none")
    areas = _crop_areas(cfg, 200)
    assert min(areas) >= 0.5 - 0.06  # RandomResizedCrop(scale=(1/2, 1)); a pixel of slack on each side
    assert min(areas) < 0.6 and max(areas) > 0.95
    legacy = _crop_areas(AugmentConfig(size=64, num_classes=10, crop_scale=(0.08, 1.0), flip=False, mix="none"), 200)
    assert min(legacy) < 0.2  # what a 0.08 lower bound does: the test tells the two apart


def test_lr_follows_rdeds_per_epoch_half_cosine() -> None:
    model = nn.Linear(3, 2)
    opt = proto.make_optimizer(model, "adamw", 1e-3, 0.01, "weights")
    epochs, spe = 300, 3
    sched = proto.make_scheduler(opt, "half-cosine", spe, epochs)
    seen = []
    for _ in range(epochs * spe):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    first, middle, last = seen[0], seen[150 * spe], seen[299 * spe]
    assert first == pytest.approx(1e-3, rel=1e-12)
    assert middle == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-12)  # 0.8536e-3
    assert last == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 299 / 600)), rel=1e-12)  # 0.5026e-3
    assert seen[spe - 1] == first and seen[spe] < first  # stepped once per epoch, not per step
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"] == 0.5e-3  # both groups; after the last epoch: half


def test_legacy_cosine_still_ends_at_zero() -> None:
    opt = proto.make_optimizer(nn.Linear(3, 2), "adamw", 1e-3, 0.01, "all")
    sched = proto.make_scheduler(opt, "cosine", 2, 5)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


def _moved_by_decay(decay: str) -> set[str]:
    """Names of the parameters one AdamW step with zero gradients changes: only decay moves them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # no zero parameter (BatchNorm's bias starts at 0, which decay leaves at 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = proto.make_optimizer(model, "adamw", 0.1, 0.5, decay)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_weight_decay_reaches_weight_matrices_only() -> None:
    assert _moved_by_decay("weights") == {"0.weight", "3.weight"}  # not biases, not BatchNorm's weight
    assert _moved_by_decay("all") == {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}


def test_patch_shuffle_permutes_column_strips_then_row_strips() -> None:
    # 2 x 2 patches A B / C D: RDED's ShufflePatches reaches 4 arrangements (columns x rows), never e.g. B A / C D
    x = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], dtype=torch.uint8).view(1, 1, 4, 4)
    seen = set()
    for step in range(64):
        y = shuffle_strips(x, 2, step_generator(1, step))
        seen.add(tuple(y[0, 0, ::2, ::2].flatten().tolist()))
    assert seen == {(0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0)}


def test_new_archives_use_strips_and_old_ones_keep_any_patch_permutation() -> None:
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    strips, patches = set(), set()
    for step in range(64):
        for shuffle, seen in (("strips", strips), ("patches", patches)):
            aug = Augmenter(AugmentConfig(size=4, num_classes=2, crop_scale=(1.0, 1.0), flip=False, factor=2,
                                          mix="none", shuffle=shuffle))
            y, _ = aug(x, torch.zeros(1, dtype=torch.long), step_generator(0, step))
            seen.add(tuple((y[0, 0, ::2, ::2] * 255).round().int().flatten().tolist()))
    assert len(strips) == 4 and len(patches) > 4


@pytest.mark.parametrize("arch,lr", [("swin_v2_t", 1e-4), ("vit_b_16", 1e-4), ("vgg11", 5e-4),
                                     ("efficientnet_b0", 2e-3), ("mobilenet_v2", 2.5e-3), ("resnet18", 1e-3),
                                     ("convnet", 1e-3), ("resnet18_cifar", 1e-3), ("shufflenet_v2_x0_5", 1e-3)])
def test_new_archives_train_each_student_at_rdeds_lr(arch: str, lr: float) -> None:
    r = TrainConfig(archive="a", arch=arch).resolve(RDED_MANIFEST)
    assert r.lr == lr
    assert TrainConfig(archive="a", arch=arch, lr=0.3).resolve(RDED_MANIFEST).lr == 0.3
    if arch == "shufflenet_v2_x0_5":
        assert r.lr_source == "the archive's lr (shufflenet_v2_x0_5 is not in RDED's table)"


def test_kl_means_rdeds_kl_without_ce_unless_beta_is_given() -> None:
    r = TrainConfig(archive="a", arch="convnet", loss="kl").resolve(RDED_MANIFEST)
    assert (r.loss, r.beta, r.temperature) == ("kl", 0.0, 20.0)
    assert TrainConfig(archive="a", arch="convnet", loss="kl", beta=0.2).resolve(RDED_MANIFEST).beta == 0.2
    mixup = TrainConfig(archive="a", arch="convnet", loss="kl", mix="mixup").resolve(RDED_MANIFEST)
    assert (mixup.temperature, mixup.mix_alpha) == (4.0, 0.8)  # RDED's argument.py for MixUp


def test_old_archives_keep_training_as_they_did() -> None:
    old = {"images": {"size": 32, "factor": 1, "mean": [0.5] * 3, "std": [0.25] * 3},
           "recipe": {k: v for k, v in RDED_MANIFEST["recipe"].items()
                      if k not in ("protocol", "lr_by_arch", "decay", "mix_alpha", "crop_scale", "val_resize")}}
    old["recipe"].update(schedule="cosine", loss="kl")
    r = TrainConfig(archive="a", arch="swin_v2_t").resolve(old)
    assert (r.protocol, r.lr, r.decay, r.crop_scale, r.val_resize) == ("hellopack-0.1", 0.001, "all", (0.5, 1.0), None)
    assert (r.loss, r.beta, r.schedule) == ("kl-t2", 0.1, "cosine")


def test_val_images_are_resized_to_size_times_8_over_7_then_centre_cropped() -> None:
    assert [proto.val_resize(s) for s in (224, 128, 64, 32)] == [256, 144, 72, 32]
    assert TrainConfig(archive="a", arch="convnet").resolve(RDED_MANIFEST).val_resize == 104
    # a 144 x 96 image whose columns count 0..143: resize the short side 96 -> 72 (x 0.75), keep the centre 64
    cols = torch.arange(144, dtype=torch.float32).repeat(96, 1)
    img = Image.fromarray(cols.round().to(torch.uint8).numpy()).convert("RGB")
    out = eval_transform(64, 0.875, resize_to=72)(img)
    assert out.shape == (3, 64, 64)
    # resized width 108: the kept columns are 22..85, i.e. source columns about 29.5..114.5
    assert out[0, 32, 0].item() * 255 == pytest.approx(29.8, abs=1.0)
    assert out[0, 32, -1].item() * 255 == pytest.approx(114.2, abs=1.0)
    default = eval_transform(64, 0.875)(img)  # the source's rule, floor(64 / 0.875) = 73: another crop
    assert not torch.allclose(out, default)


def test_a_train_run_uses_the_recipes_val_resize_lr_schedule_and_decay(tmp_path_factory, monkeypatch, tmp_path,
                                                                         demo_val) -> None:
    """Through `train` itself: what the val loader, the optimizer and the scheduler actually receive."""
    import hellopack.data as data
    from hellopack.train import train

    recipe = {"protocol": "rded", "lr_by_arch": True, "decay": "weights", "schedule": "half-cosine",
              "crop_scale": [0.5, 1.0], "mix_alpha": 1.0, "val_resize": 18, "epochs": 4, "batch_size": 8}
    archive = cached_archive(tmp_path_factory, ipc=4, recipe=recipe, factor=2)
    import hellopack.train.augment as augment

    shuffles: list[str] = []
    for name in ("shuffle_strips", "shuffle_patches"):
        real = getattr(augment, name)
        monkeypatch.setattr(augment, name, lambda x, f, g, _r=real, _n=name: shuffles.append(_n) or _r(x, f, g))
    resizes: list = []
    real_loader = data.make_loader

    def spy_loader(*a, **kw):
        resizes.append(kw.get("eval_resize"))
        return real_loader(*a, **kw)

    monkeypatch.setattr(data, "make_loader", spy_loader)
    lrs: list[list[float]] = []
    real_opt = proto.make_optimizer

    def spy_opt(model, *a, **kw):
        opt = real_opt(model, *a, **kw)
        opt.register_step_pre_hook(lambda o, _a, _k: lrs.append([g["lr"] for g in o.param_groups]))
        opt.groups_seen = [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
        spy_opt.opt = opt
        return opt

    monkeypatch.setattr(proto, "make_optimizer", spy_opt)
    cfg = TrainConfig(archive=str(archive), arch="resnet18_cifar", out=str(tmp_path / "run"), device="cpu",
                      val=str(demo_val))
    res = train(cfg)
    # 16 images at batch 8: 2 steps per epoch; RDED's lr for resnet18_cifar (1e-3), halved over 4 epochs per epoch
    f = [0.5 * (1 + math.cos(math.pi * e / 4 / 2)) for e in range(4)]
    assert [row[0] for row in lrs] == pytest.approx([1e-3 * f[e] for e in range(4) for _ in range(2)], rel=1e-12)
    assert all(row[0] == row[1] for row in lrs)
    decayed, not_decayed = spy_opt.opt.groups_seen
    assert decayed[1] == 0.01 and not_decayed[1] == 0.0 and not_decayed[0] > 0  # BN and biases: no decay
    assert res["recipe"]["lr_source"] == "RDED's AdamW lr for resnet18_cifar"
    assert resizes and set(resizes) == {18}  # the val loader resizes to the recipe's val_resize
    assert shuffles and set(shuffles) == {"shuffle_strips"}  # RDED's ShufflePatches, not any permutation


def test_every_protocol_setting_has_a_train_flag_that_wins() -> None:
    r = TrainConfig(archive="a", arch="swin_v2_t", crop_scale=(0.08, 1.0), schedule="cosine", decay="all",
                    batch_size=7, lr=0.01, mix_alpha=0.5, val_resize=100, patch_shuffle=False,
                    epochs=3).resolve(RDED_MANIFEST)
    assert (r.crop_scale, r.schedule, r.decay, r.batch_size, r.lr, r.mix_alpha, r.val_resize, r.patch_shuffle,
            r.epochs) == ((0.08, 1.0), "cosine", "all", 7, 0.01, 0.5, 100, False, 3)
    with pytest.raises(Exception, match=r"^--val-resize 50 is smaller than the 96-px crop; use at least 96"):
        TrainConfig(archive="a", arch="convnet", val_resize=50).resolve(RDED_MANIFEST)
