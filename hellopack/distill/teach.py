"""`hellopack teach`: train one classifier and keep every k-th epoch as a weak teacher.

Standard recipe: SGD (momentum 0.9, Nesterov), learning rate 0.1 x batch/256 with a
cosine schedule, weight decay 5e-4, the training augmentation of ``make_loader`` (random
crop and flip). ResNets get the CIFAR stem (3x3 conv, no max-pool) for inputs up to 64 px.
Each kept checkpoint is a safetensors state dict; ``trajectory.json`` lists them with their
top-1 on held-out images (the test split when the recipe has one, else a fixed holdout).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hellopack.device import autocast, memory_format, resolve_device
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import NULL, Reporter
from hellopack.train.core import TrainStep, run_steps

TRAJECTORY = "trajectory.json"
CIFAR_STEM = ("resnet18", "resnet34", "resnet50")


@dataclass(frozen=True)
class TeachConfig:
    recipe: str
    out: str
    data_dir: str | None = None
    arch: str = "resnet18"
    epochs: int = 30
    keep_every: int = 3
    batch_size: int = 128
    lr: float | None = None  # default: 0.1 * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    image_size: int | None = None
    classes_file: str | None = None
    download: bool = False
    synthetic: Any = None
    max_bad_fraction: float = 0.01
    val_fraction: float = 0.02
    max_images: int | None = None  # train on the first N training images only (quick runs)
    seed: int = 0
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        for name, ok in (("epochs", self.epochs >= 1), ("keep_every", self.keep_every >= 1),
                         ("batch_size", self.batch_size >= 1), ("lr", self.lr is None or self.lr > 0),
                         ("weight_decay", self.weight_decay >= 0), ("workers", self.workers >= 0),
                         ("val_fraction", 0 < self.val_fraction < 1),
                         ("max_images", self.max_images is None or self.max_images >= 1)):
            if not ok:
                raise HellopackError(f"--{name.replace('_', '-')} has an invalid value "
                                     f"{getattr(self, name)!r}; see `hellopack teach --help`")

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 256

    def kept_epochs(self) -> list[int]:
        kept = [e for e in range(1, self.epochs + 1) if e % self.keep_every == 0]
        return kept if kept and kept[-1] == self.epochs else kept + [self.epochs]


def resolve_arch(arch: str, image_size: int) -> str:
    """ImageNet ResNets downsample 32 px to 1 px; small inputs get the CIFAR-stem variant."""
    return f"{arch}_cifar" if arch in CIFAR_STEM and image_size <= 64 else arch


def teach(cfg: TeachConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train the trajectory into ``cfg.out``; returns the content of ``trajectory.json``."""
    from hellopack.distill.splits import open_splits
    from hellopack.data import make_loader
    from hellopack.models.students import build_student
    from hellopack.models.teachers import save_state_dict

    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    splits = open_splits(cfg.recipe, cfg.data_dir, classes_file=cfg.classes_file, download=cfg.download,
                         max_bad_fraction=cfg.max_bad_fraction, synthetic=cfg.synthetic,
                         val_fraction=cfg.val_fraction, max_images=cfg.max_images)
    src = splits.train
    size = cfg.image_size or src.image_size
    arch = resolve_arch(cfg.arch, size)
    if arch != cfg.arch:
        reporter.info(f"teach: {size}-px images, using {arch} (CIFAR stem) for --arch {cfg.arch}")
    num_classes = len(src.classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_student(arch, num_classes, size, src.mean, src.std)
    mf = memory_format(device)
    model = model.to(device=device, memory_format=mf)
    # only now, with the data and the model checked: bad input must not leave an empty --out behind
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HellopackError(f"cannot create teacher folder '{out}': {e.strerror}; choose a writable --out") from None

    loader = make_loader(src, size, cfg.batch_size, train=True, seed=cfg.seed, num_workers=cfg.workers)
    n_train = splits.train_count()
    steps_per_epoch = loader.num_batches or max(1, math.ceil((n_train or cfg.batch_size) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=cfg.resolved_lr(), momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    kept = set(cfg.kept_epochs())
    trajectory: dict[str, Any] = {
        "arch": arch, "num_classes": num_classes, "image_size": size, "mean": list(src.mean), "std": list(src.std),
        "classes": [c.name for c in src.classes], "dataset": {"recipe": cfg.recipe, "name": src.name},
        "eval": splits.eval_kind, "checkpoints": [],
    }

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = batch[0].to(device).contiguous(memory_format=mf)
        y = batch[1].to(device)
        with autocast(device):
            return F.cross_entropy(model(x).float(), y)

    train_step = TrainStep(opt, loss_fn, scheduler=_Capped(sched, total))
    step = 0
    with reporter.stage(f"teach {arch}", total=total, unit="step") as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            loader.set_epoch(epoch)
            step += run_steps(train_step, enumerate(loader, start=step),
                              lambda _, value: bar.advance(1, loss=value, epoch=epoch))
            if epoch in kept:
                top1 = evaluate(model, splits, size, cfg, device)
                name = f"{arch}-epoch{epoch:03d}.safetensors"
                save_state_dict(model, out / name, metadata={"arch": arch, "epoch": str(epoch)})
                trajectory["checkpoints"].append({"epoch": epoch, "file": name, "val_top1": round(top1, 6)})
                # Rewritten after every kept checkpoint: a stopped run still leaves a usable trajectory.
                atomic_write_bytes(out / TRAJECTORY, json.dumps(trajectory, indent=1).encode("utf-8"))
                reporter.info(f"teach: epoch {epoch} kept, held-out top-1 {top1:.2%}")
    return trajectory


class _Capped:
    """The cosine stops at ``total`` steps: an epoch with more batches than planned keeps the last lr."""

    def __init__(self, scheduler: Any, total: int) -> None:
        self.scheduler, self.total = scheduler, total

    def step(self) -> None:
        if self.scheduler.last_epoch < self.total:
            self.scheduler.step()


@torch.no_grad()
def evaluate(model: torch.nn.Module, splits: Any, size: int, cfg: TeachConfig, device: torch.device) -> float:
    from hellopack.data import make_loader

    model.eval()
    correct = seen = 0
    for x, y in make_loader(splits.eval, size, cfg.batch_size, train=False, seed=cfg.seed, num_workers=cfg.workers):
        with autocast(device):
            pred = model(x.to(device).contiguous(memory_format=memory_format(device))).argmax(1)
        correct += int((pred.cpu() == y).sum())
        seen += len(y)
    return correct / seen if seen else 0.0


def load_trajectory(folder: str | Path) -> list[str]:
    """``ARCH:PATH`` teacher specs for every checkpoint listed in ``folder/trajectory.json``."""
    folder = Path(folder)
    path = folder / TRAJECTORY
    if not folder.is_dir():
        raise HellopackError(f"teachers folder '{folder}' does not exist; train one with `hellopack teach`")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        arch = str(obj["arch"])
        files = [str(c["file"]) for c in obj["checkpoints"]]
    except FileNotFoundError:
        raise HellopackError(f"'{folder}' has no {TRAJECTORY}; pass a folder written by `hellopack teach` "
                             f"or use --teacher ARCH:CHECKPOINT") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise HellopackError(f"'{path}' is not a valid trajectory file; rerun `hellopack teach`") from None
    if not files:
        raise HellopackError(f"'{path}' lists no checkpoints; rerun `hellopack teach` with more epochs")
    specs = []
    for name in files:
        ckpt = folder / name
        if not ckpt.is_file():
            raise HellopackError(f"teacher checkpoint '{ckpt}' listed in {TRAJECTORY} is missing; rerun `hellopack teach`")
        specs.append(f"{arch}:{ckpt}")
    return specs
