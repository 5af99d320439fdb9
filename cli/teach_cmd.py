"""`hellopack teach DATASET`: a weak-teacher trajectory for small data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .defaults import source_defaults
from .errors import friendly_errors
from .reporter import make_reporter, print_json

# hellopack.distill.teach imports torch: its defaults are read from the source (see cli/defaults.py).
_T = source_defaults("hellopack.distill.teach", "TeachConfig")


@friendly_errors
def teach(
    dataset: str = typer.Argument(..., help="Dataset recipe: cifar10, cifar100, imagenet, folder, wds, synthetic."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the checkpoints and trajectory.json."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset location (see `build --help`)."),
    arch: str = typer.Option(_T.arch, "--arch", help="Teacher architecture (ResNets get a CIFAR stem on <= 64 px)."),
    epochs: int = typer.Option(_T.epochs, "--epochs", help="Training epochs."),
    keep_every: int = typer.Option(_T.keep_every, "--keep-every", help="Keep every K-th epoch's checkpoint (and the last)."),
    batch_size: int = typer.Option(_T.batch_size, "--batch-size", help="Batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate \\[0.1 x batch size / 256]."),
    weight_decay: float = typer.Option(_T.weight_decay, "--weight-decay", help="SGD weight decay."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Training image size \\[the dataset's]."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names file (wds recipe)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Train on the first N training images only (quick runs) \\[all]."),
    download: bool = typer.Option(False, "--download", help="Download CIFAR with torchvision (needs internet)."),
    seed: int = typer.Option(_T.seed, "--seed", help="Seed."),
    device: str = typer.Option(_T.device, "--device", help="auto, cpu, cuda, cuda:N."),
    workers: int = typer.Option(_T.workers, "--workers", help="Data loading workers."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print trajectory.json on stdout."),
) -> None:
    """Train a teacher trajectory (SGD, cosine, crop and flip), keeping every K-th checkpoint.

    Example: hellopack teach cifar10 --data-dir ../shared/data/cifar10 --arch convnet --epochs 20 --keep-every 5 --out traj/
    """
    from hellopack.distill.teach import TeachConfig
    from hellopack.distill.teach import teach as run_teach

    cfg = TeachConfig(
        recipe=dataset, out=str(out), data_dir=data_dir, arch=arch, epochs=epochs, keep_every=keep_every,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, image_size=image_size,
        classes_file=str(classes) if classes else None, download=download, max_images=max_images, seed=seed, device=device, workers=workers,
    )
    with make_reporter(quiet or as_json) as reporter:
        traj = run_teach(cfg, reporter)
    if as_json:
        print_json(traj)
        return
    for c in traj["checkpoints"]:
        typer.echo(f"epoch {c['epoch']:>4}  held-out top-1 {c['val_top1']:.2%}  {Path(out) / c['file']}")
    typer.echo(f"use it with: hellopack build {dataset} --teachers-dir {out} ...")
