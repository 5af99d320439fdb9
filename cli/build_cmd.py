"""`hellopack build DATASET`: the whole HeLlO distillation into one archive."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from hellopack.build.config import BuildConfig as _D  # help text shows the dataclass's defaults

from .errors import friendly_errors
from .reporter import make_reporter, print_json

DATA = "Data"
TEACH = "Weak teachers"
PROJ = "Projector"
IMG = "Distilled images"
RUN = "Runtime and output"
REC = "Training recipe written into the archive"


@friendly_errors
def build(
    dataset: str = typer.Argument(..., help="Dataset recipe: imagenet, cifar10, cifar100, folder, wds, synthetic."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="ImageFolder root, shard folder/pattern/URL.", rich_help_panel=DATA),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Archive to write (default: DATASET-ipcN.hellopack).", rich_help_panel=RUN),
    config: Optional[Path] = typer.Option(None, "--config", help="build.toml with any of these settings; flags win.", rich_help_panel=RUN),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names file, one per line (wds recipe).", rich_help_panel=DATA),
    download: Optional[bool] = typer.Option(None, "--download", help="Download CIFAR with torchvision (needs internet).", rich_help_panel=DATA),
    allow_short: Optional[bool] = typer.Option(None, "--allow-short", help="Take what exists when a class has fewer images than needed.", rich_help_panel=DATA),
    max_bad_fraction: Optional[float] = typer.Option(None, "--max-bad-fraction", help="Fail when more images than this are unreadable [0.01].", rich_help_panel=DATA),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Stored image size [the dataset's].", rich_help_panel=IMG),
    ipc: Optional[int] = typer.Option(None, "--ipc", help="Images per class [10].", rich_help_panel=IMG),
    factor: Optional[int] = typer.Option(None, "--factor", help="Patches per side stitched into one image [2 for >=128 px, else 1].", rich_help_panel=IMG),
    n_real: Optional[int] = typer.Option(None, "--n-real", help="Real images scored per class [300].", rich_help_panel=IMG),
    m_crops: Optional[int] = typer.Option(None, "--m-crops", help="Random crops scored per real image [5].", rich_help_panel=IMG),
    observer: Optional[str] = typer.Option(None, "--observer", help=f"Who scores the crops: teacher (mean teacher logits, the paper's Eq. 6) or projector \\[{_D.observer}].", rich_help_panel=IMG),
    no_update: bool = typer.Option(False, "--no-update", help="Skip the image update stage.", rich_help_panel=IMG),
    update_steps: Optional[int] = typer.Option(None, "--update-steps", help="Image update steps [100].", rich_help_panel=IMG),
    update_lr: Optional[float] = typer.Option(None, "--update-lr", help="Image update learning rate [0.01].", rich_help_panel=IMG),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT or ARCH:WEIGHTS_NAME; repeatable.", rich_help_panel=TEACH),
    teachers_dir: Optional[Path] = typer.Option(None, "--teachers-dir", help="A trajectory written by `hellopack teach`.", rich_help_panel=TEACH),
    base: Optional[str] = typer.Option(None, "--base", help="open_clip model name [RN50].", rich_help_panel=PROJ),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="open_clip pretrained tag [openai]; 'none' for random init.", rich_help_panel=PROJ),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="Base weights file (.safetensors/.pt) instead of a download.", rich_help_panel=PROJ),
    templates: Optional[str] = typer.Option(None, "--templates", help="Prompt templates: openai, simple or a FILE [openai].", rich_help_panel=PROJ),
    rank_encoder: Optional[int] = typer.Option(None, "--rank-encoder", help="LoRA rank on every conv of the image tower [8].", rich_help_panel=PROJ),
    rank_head: Optional[int] = typer.Option(None, "--rank-head", help="LoRA rank on the head [64 up to 100 classes, else 128].", rich_help_panel=PROJ),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha [= rank].", rich_help_panel=PROJ),
    lora_dtype: Optional[str] = typer.Option(None, "--lora-dtype", help="fp16 or int8 (per-row scales) [fp16].", rich_help_panel=PROJ),
    fit_epochs: Optional[int] = typer.Option(None, "--fit-epochs", help="Projector fit epochs over the training set [10].", rich_help_panel=PROJ),
    fit_lr: Optional[float] = typer.Option(None, "--fit-lr", help="Projector fit learning rate [1e-3].", rich_help_panel=PROJ),
    fit_batch_size: Optional[int] = typer.Option(None, "--fit-batch-size", help="Projector fit batch size [128].", rich_help_panel=PROJ),
    refine_steps: Optional[int] = typer.Option(None, "--refine-steps", help="Refine the projector on the archive's own training views for N steps after selection; undone if it lowers agreement on unseen views [0: off].", rich_help_panel=PROJ),
    refine_lr: Optional[float] = typer.Option(None, "--refine-lr", help="Refine learning rate [--fit-lr].", rich_help_panel=PROJ),
    lam: Optional[float] = typer.Option(None, "--lambda", help="Weight of the CE term in the fit [0.1].", rich_help_panel=PROJ),
    train_epochs: Optional[int] = typer.Option(None, "--train-epochs", help="Default epochs for `train` [300].", rich_help_panel=REC),
    train_batch_size: Optional[int] = typer.Option(None, "--train-batch-size", help="Default batch size for `train` [RDED's: 10/50/100 for IPC 1/10/50, doubled for 100 and 1,000 classes].", rich_help_panel=REC),
    train_loss: Optional[str] = typer.Option(None, "--train-loss", help=f"Default loss for `train`: mse (+ 0.1 CE, the paper) or kl (RDED's KL, no CE) \\[{_D.train_loss}].", rich_help_panel=REC),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Stage results for resuming [OUT.work].", rich_help_panel=RUN),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed [0].", rich_help_panel=RUN),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N [auto].", rich_help_panel=RUN),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loading workers [0].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (implies --quiet).", rich_help_panel=RUN),
) -> None:
    """Distil a dataset into one archive: weak teachers -> projector -> selected, updated images.

    Rerunning the same command resumes from the work directory.

    Example: hellopack build imagenet --data-dir /data/imagenet --ipc 10 --teachers-dir traj/ --out in1k-ipc10.hellopack
    """
    from hellopack.build import BuildConfig
    from hellopack.build import build as run_build
    from hellopack.summary import summary_line

    overrides = {
        "recipe": dataset, "data_dir": data_dir, "classes_file": classes, "download": download,
        "allow_short": allow_short, "max_bad_fraction": max_bad_fraction, "image_size": image_size,
        "ipc": ipc, "factor": factor, "n_real": n_real, "m_crops": m_crops, "observer": observer,
        "update": False if no_update else None, "update_steps": update_steps, "update_lr": update_lr,
        "teachers": tuple(teacher) if teacher else None, "teachers_dir": teachers_dir, "base": base,
        "pretrained": pretrained, "clip_weights": clip_weights, "templates": templates,
        "rank_encoder": rank_encoder, "rank_head": rank_head, "alpha": alpha, "lora_dtype": lora_dtype,
        "fit_epochs": fit_epochs, "fit_lr": fit_lr, "fit_batch_size": fit_batch_size, "lam": lam,
        "refine_steps": refine_steps, "refine_lr": refine_lr,
        "train_epochs": train_epochs, "train_batch_size": train_batch_size, "train_loss": train_loss,
        "workdir": workdir,
        "seed": seed, "device": device, "workers": workers,
    }
    # A weights file replaces the download; "--pretrained none" means random init.
    no_pretrained = (pretrained or "").lower() == "none" or (clip_weights is not None and pretrained is None)
    if (pretrained or "").lower() == "none":
        overrides["pretrained"] = None
    if out is not None:
        overrides["out"] = out
    elif config is None:
        overrides["out"] = f"{dataset}-ipc{ipc or 10}.hellopack"
    cfg = BuildConfig.from_sources(config, {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    if no_pretrained:
        cfg = dataclasses.replace(cfg, pretrained=None)
    with make_reporter(quiet or as_json) as reporter:
        path = run_build(cfg, reporter)
    if as_json:
        from hellopack.archive import open_archive
        from hellopack.summary import summarize

        s = summarize(open_archive(path))
        s.pop("manifest", None)
        print_json(s)
    else:
        typer.echo(summary_line(path))
