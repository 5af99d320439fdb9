"""`hellopack pretrain-base DATASET`: a base with a prior from unlabeled images (SimCLR)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .defaults import offline_bases, source_defaults
from .errors import friendly_errors
from .reporter import make_reporter, print_json

DATA, SSL, PROBE, RUN = "Data", "Pretraining", "Linear probe", "Run"

# hellopack.pretrain imports torch on import: the defaults are read from the source (see cli/defaults.py).
_P = source_defaults("hellopack.pretrain.config", "PretrainConfig")


@friendly_errors
def pretrain_base(
    dataset: str = typer.Argument(..., help="Dataset recipe: cifar10, cifar100, imagenet, folder, wds, synthetic."),
    out: Path = typer.Option(..., "--out", "-o", help="Base weights to write (.safetensors); FILE.sha256 beside it.", rich_help_panel=RUN),
    config: str = typer.Option(_P.config, "--config", help=f"open_clip model config (random init), e.g. RN50, ViT-B-32, or an offline one shipped with hellopack: {', '.join(offline_bases())}.", rich_help_panel=SSL),
    epochs: int = typer.Option(_P.epochs, "--epochs", help="Pretraining epochs.", rich_help_panel=SSL),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="ImageFolder root, shard folder/pattern/URL.", rich_help_panel=DATA),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names file (wds recipe; only the probe uses classes).", rich_help_panel=DATA),
    download: bool = typer.Option(False, "--download", help="Download CIFAR with torchvision (needs internet).", rich_help_panel=DATA),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Use only the first N training images \\[all].", rich_help_panel=DATA),
    max_bad_fraction: float = typer.Option(_P.max_bad_fraction, "--max-bad-fraction", help="Fail when more images than this are unreadable.", rich_help_panel=DATA),
    batch_size: int = typer.Option(_P.batch_size, "--batch-size", help="Images per step and process (2 views each).", rich_help_panel=SSL),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate \\[1e-3 x global batch / 256].", rich_help_panel=SSL),
    weight_decay: float = typer.Option(_P.weight_decay, "--weight-decay", help="AdamW weight decay (not on biases and norms).", rich_help_panel=SSL),
    warmup: float = typer.Option(_P.warmup, "--warmup", help="Fraction of steps with a linear warmup (then cosine).", rich_help_panel=SSL),
    temperature: float = typer.Option(_P.temperature, "--temperature", help="NT-Xent temperature.", rich_help_panel=SSL),
    proj_dim: int = typer.Option(_P.proj_dim, "--proj-dim", help="Projection head output size (head is not saved).", rich_help_panel=SSL),
    proj_hidden: int = typer.Option(_P.proj_hidden, "--proj-hidden", help="Projection head hidden size.", rich_help_panel=SSL),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Augmented view size \\[the dataset's].", rich_help_panel=SSL),
    crop_scale: float = typer.Option(_P.crop_scale, "--crop-scale", help="Smallest random-resized-crop area.", rich_help_panel=SSL),
    jitter: float = typer.Option(_P.jitter, "--jitter", help="Colour-jitter strength (0 = off).", rich_help_panel=SSL),
    blur: Optional[bool] = typer.Option(None, "--blur/--no-blur", help="Gaussian blur \\[on for views of 96 px and more].", rich_help_panel=SSL),
    probe: int = typer.Option(_P.probe_train, "--probe", help="After pretraining, linear-probe on N labelled training images (0 = off).", rich_help_panel=PROBE),
    probe_test: int = typer.Option(_P.probe_test, "--probe-test", help="Test-split images the probe is scored on.", rich_help_panel=PROBE),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Checkpoints \\[OUT without .safetensors, + .work].", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Continue from the work folder's last checkpoint.", rich_help_panel=RUN),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT.", rich_help_panel=RUN),
    seed: int = typer.Option(_P.seed, "--seed", help="Seed.", rich_help_panel=RUN),
    device: str = typer.Option(_P.device, "--device", help="auto, cpu, cuda, cuda:N.", rich_help_panel=RUN),
    workers: int = typer.Option(_P.workers, "--workers", help="Data loading worker processes.", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (implies --quiet).", rich_help_panel=RUN),
) -> None:
    """Pretrain an open_clip image tower on images only (SimCLR), for `build --clip-weights`.

    Reads no labels (only --probe does, after the base is written).

    Checkpoints every epoch into the work folder; --resume continues exactly; runs under torchrun for DDP.

    Writes the full open_clip state dict (pretrained image tower, seeded text tower) and its fingerprint in OUT.sha256.

    Example: hellopack pretrain-base cifar10 --data-dir ../shared/data/cifar10 --config hellopack-tiny-rn --epochs 50 --out base.safetensors
    """
    from hellopack.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        recipe=dataset, out=str(out), data_dir=data_dir, config=config, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup=warmup, temperature=temperature, proj_hidden=proj_hidden,
        proj_dim=proj_dim, image_size=image_size, max_images=max_images, crop_scale=crop_scale, jitter=jitter,
        blur=blur, work_dir=str(work_dir) if work_dir else None, resume=resume, force=force, probe_train=probe,
        probe_test=probe_test, classes_file=str(classes) if classes else None, download=download,
        max_bad_fraction=max_bad_fraction, seed=seed, device=device, workers=workers,
    )
    worker = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 draws and prints
    with make_reporter(quiet or as_json or worker) as reporter:
        result = pretrain(cfg, reporter)
    if worker:
        return
    if as_json:
        print_json(result)
        return
    mb = (result["bytes"] or 0) / 1e6
    typer.echo(f"wrote {result['out']} ({mb:.1f} MB): {result['config']} image tower, {result['epochs']} "
               f"epoch{'s' if result['epochs'] != 1 else ''} of {result['objective']} on {result['images']:,} images "
               f"in {result['seconds']:.0f} s")
    typer.echo(f"fingerprint {result['fingerprint']} (also in {result['sha256_file']})")
    if result.get("probe"):
        p = result["probe"]
        typer.echo(f"linear probe top-1 {p['top1']:.2%} ({p['train_images']:,} train / {p['test_images']:,} test images)")
    typer.echo(f"use it with: hellopack build DATASET --base {result['config']} --clip-weights {result['out']} ...")
