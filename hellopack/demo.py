"""The offline embedded default: the whole HeLlO pipeline on synthetic data in about a minute on a CPU.

Synthetic shapes -> a ConvNet teacher trajectory trained on the spot -> `build` with the tiny
random-init open_clip base shipped in the package -> `train` a student from the archive ->
accuracy on held-out synthetic images. Nothing is downloaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hellopack.archive import label_storage, open_archive
from hellopack.distill import BuildConfig, build
from hellopack.distill.teach import TeachConfig, teach
from hellopack.data.synthetic import SyntheticConfig
from hellopack.progress import NULL, Reporter
from hellopack.train import TrainConfig, train

TINY_BASE = "hellopack-tiny-rn32"  # 32 px: no upsampling of the 32-px synthetic images


@dataclass(frozen=True)
class DemoConfig:
    out: str = "."
    seed: int = 0
    device: str = "cpu"
    ipc: int = 10
    teacher_arch: str = "convnet_w32"
    teacher_epochs: int = 4
    fit_epochs: int = 6
    fit_lr: float = 0.01  # a random-init base needs a larger LoRA step than CLIP's 1e-3
    student_epochs: int = 30
    student_arch: str = "convnet"


def run_demo(cfg: DemoConfig = DemoConfig(), reporter: Reporter = NULL) -> dict[str, Any]:
    """Run every stage; returns paths, timings, the student's accuracy and the label storage replaced."""
    out = Path(cfg.out)
    run = out / "demo-run"
    archive = out / "demo.hellopack"
    data = SyntheticConfig(seed=cfg.seed)  # the same default config `--val synthetic` reads
    timings: dict[str, float] = {}

    t = time.perf_counter()
    reporter.info(f"1/3 teacher trajectory: {cfg.teacher_arch}, {cfg.teacher_epochs} "
                  f"epoch{'s' if cfg.teacher_epochs != 1 else ''} on synthetic shapes")
    traj = teach(TeachConfig(recipe="synthetic", out=str(run / "teachers"), arch=cfg.teacher_arch,
                             epochs=cfg.teacher_epochs, keep_every=2, batch_size=64, synthetic=data, seed=cfg.seed, device=cfg.device), reporter)
    timings["teach_s"] = time.perf_counter() - t

    t = time.perf_counter()
    reporter.info(f"2/3 build: tiny random-init CLIP base '{TINY_BASE}', IPC {cfg.ipc}")
    build(BuildConfig(recipe="synthetic", out=str(archive), workdir=str(run / "work"), synthetic=data, ipc=cfg.ipc,
                      teachers_dir=str(run / "teachers"), base=TINY_BASE, pretrained=None, templates="simple",
                      fit_epochs=cfg.fit_epochs, fit_lr=cfg.fit_lr, fit_batch_size=64, n_real=50, m_crops=3,
                      train_epochs=cfg.student_epochs, seed=cfg.seed, device=cfg.device), reporter)
    timings["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    reporter.info(f"3/3 train: {cfg.student_arch} student, {cfg.student_epochs} "
                  f"epoch{'s' if cfg.student_epochs != 1 else ''}, labels from the projector")
    result = train(TrainConfig(archive=str(archive), arch=cfg.student_arch, out=str(run / "student"), val="synthetic",
                               epochs=cfg.student_epochs, eval_every=cfg.student_epochs, seed=cfg.seed,
                               device=cfg.device), reporter)
    timings["train_s"] = time.perf_counter() - t

    manifest = open_archive(archive).manifest
    storage = label_storage(manifest)
    return {
        "archive": str(archive),
        "run": str(run),
        "arch": cfg.student_arch,
        "teacher_top1": traj["checkpoints"][-1]["val_top1"],
        "fidelity": manifest.get("fidelity"),
        "student_top1": result["top1"] / 100.0,
        "val_images": result["images_evaluated"],
        "student": result,
        "classes": data.num_classes,
        "storage": storage,
        "timings": timings,
    }
