"""`hellopack build DATASET`: the whole HeLlO distillation into one archive."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from hellopack.distill.config import AUTO_QUALITY, AUTO_SMALL_MAX_SIZE, HEAD_RANK_CLASSES, HEAD_RANKS, IMAGE_FORMATS, LORA_DTYPES
from hellopack.distill.config import BuildConfig as _D  # help text shows the dataclass's defaults

from .defaults import offline_bases
from .errors import friendly_errors
from .recipe_options import build_options, recipe_options
from .reporter import make_reporter, print_json

DATA = "Data"
TEACH = "Weak teachers"
PROJ = "Projector"
IMG = "Distilled images"
RUN = "Runtime and output"
REC = "Training recipe written into the archive"


@friendly_errors
@recipe_options(build_options(REC))
def build(
    dataset: str = typer.Argument(..., help="Dataset recipe: imagenet, cifar10, cifar100, folder, wds, synthetic."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="ImageFolder root, shard folder/pattern/URL.", rich_help_panel=DATA),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Archive to write \\[DATASET-ipcIPC.hellopack, or the --config file's out].", rich_help_panel=RUN),
    config: Optional[Path] = typer.Option(None, "--config", help="build.toml with any of these settings; flags win.", rich_help_panel=RUN),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names file, one per line (wds recipe).", rich_help_panel=DATA),
    download: Optional[bool] = typer.Option(None, "--download", help="Download CIFAR with torchvision (needs internet).", rich_help_panel=DATA),
    allow_short: Optional[bool] = typer.Option(None, "--allow-short", help="Take what exists when a class has fewer images than needed.", rich_help_panel=DATA),
    dataset_name: Optional[str] = typer.Option(None, "--dataset-name", help="The dataset's name in the archive \\[the source's, e.g. cifar10].", rich_help_panel=DATA),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Fit the projector on the first N training images only (quick runs) \\[all].", rich_help_panel=DATA),
    fidelity_images: Optional[int] = typer.Option(None, "--fidelity-images", help="Measure fidelity on at most N held-out images \\[all].", rich_help_panel=DATA),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help=f"Share of the training images held out for fidelity when the dataset has no test split \\[{_D.val_fraction}].", rich_help_panel=DATA),
    max_bad_fraction: Optional[float] = typer.Option(None, "--max-bad-fraction", help=f"Fail when more images than this are unreadable \\[{_D.max_bad_fraction}].", rich_help_panel=DATA),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Stored image size \\[the dataset's].", rich_help_panel=IMG),
    image_format: Optional[str] = typer.Option(None, "--image-format", help=f"How the archive stores images: {', '.join(IMAGE_FORMATS)} (auto: lossless WebP up to {AUTO_SMALL_MAX_SIZE} px, else WebP) \\[{_D.image_format}].", rich_help_panel=IMG),
    image_quality: Optional[int] = typer.Option(None, "--image-quality", help=f"WebP / JPEG quality 1..100 \\[{AUTO_QUALITY[0]} up to {AUTO_SMALL_MAX_SIZE} px, else {AUTO_QUALITY[1]}; lossless ignores it].", rich_help_panel=IMG),
    ipc: Optional[int] = typer.Option(None, "--ipc", help=f"Images per class \\[{_D.ipc}].", rich_help_panel=IMG),
    factor: Optional[int] = typer.Option(None, "--factor", help="Patches per side stitched into one image \\[2 for >=128 px, else 1].", rich_help_panel=IMG),
    n_real: Optional[int] = typer.Option(None, "--n-real", help=f"Real images scored per class \\[{_D.n_real}].", rich_help_panel=IMG),
    m_crops: Optional[int] = typer.Option(None, "--m-crops", help=f"Random crops scored per real image \\[{_D.m_crops}].", rich_help_panel=IMG),
    observer: Optional[str] = typer.Option(None, "--observer", help=f"Who scores the crops: teacher (mean teacher logits, the paper's Eq. 6) or projector \\[{_D.observer}].", rich_help_panel=IMG),
    no_update: bool = typer.Option(False, "--no-update", help="Skip the image update stage.", rich_help_panel=IMG),
    update_steps: Optional[int] = typer.Option(None, "--update-steps", help=f"Image update steps \\[{_D.update_steps}].", rich_help_panel=IMG),
    update_lr: Optional[float] = typer.Option(None, "--update-lr", help=f"Image update learning rate \\[{_D.update_lr}].", rich_help_panel=IMG),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT (a state dict, or a checkpoint of torchvision's train.py: FILE#ema reads its EMA weights) or ARCH:WEIGHTS_NAME; repeatable.", rich_help_panel=TEACH),
    teachers_dir: Optional[Path] = typer.Option(None, "--teachers-dir", help="A trajectory written by `hellopack teach`, or ARCH:DIR for a folder of training checkpoints (torchvision's model_*.pth; ARCH:DIR#ema for their EMA weights).", rich_help_panel=TEACH),
    teacher_cache: Optional[Path] = typer.Option(None, "--teacher-cache", help="Folder of the teachers' logits by batch content, shared by builds with the same teachers, data, seed and batch sizes (a rank sweep) so they compute each batch once; changes no output byte \\[off].", rich_help_panel=TEACH),
    base: Optional[str] = typer.Option(None, "--base", help=f"open_clip model name, or an offline base shipped with hellopack (random init, for tests and the demo): {', '.join(offline_bases())} \\[{_D.base}].", rich_help_panel=PROJ),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help=f"open_clip pretrained tag; 'none' for random init \\[{_D.pretrained}; none with --clip-weights].", rich_help_panel=PROJ),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="Base weights file (.safetensors/.pt) instead of a download.", rich_help_panel=PROJ),
    templates: Optional[str] = typer.Option(None, "--templates", help=f"Prompt templates: openai, simple or a FILE \\[{_D.templates}].", rich_help_panel=PROJ),
    rank_encoder: Optional[int] = typer.Option(None, "--rank-encoder", help=f"LoRA rank on every image-tower target (each conv; a ViT's blocks too) \\[{_D.rank_encoder}].", rich_help_panel=PROJ),
    rank_head: Optional[int] = typer.Option(None, "--rank-head", help=f"LoRA rank on the head \\[{HEAD_RANKS[0]} up to {HEAD_RANK_CLASSES} classes, else {HEAD_RANKS[1]}; at most the class count and the base's embed_dim].", rich_help_panel=PROJ),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha \\[= rank].", rich_help_panel=PROJ),
    lora_dtype: Optional[str] = typer.Option(None, "--lora-dtype", help=f"{' or '.join(LORA_DTYPES)} (int8 with per-row scales) \\[{_D.lora_dtype}].", rich_help_panel=PROJ),
    fit_epochs: Optional[int] = typer.Option(None, "--fit-epochs", help=f"Projector fit epochs over the training set \\[{_D.fit_epochs}].", rich_help_panel=PROJ),
    fit_lr: Optional[float] = typer.Option(None, "--fit-lr", help=f"Projector fit learning rate \\[{_D.fit_lr}].", rich_help_panel=PROJ),
    fit_batch_size: Optional[int] = typer.Option(None, "--fit-batch-size", help=f"Projector fit batch size \\[{_D.fit_batch_size}].", rich_help_panel=PROJ),
    refine_steps: Optional[int] = typer.Option(None, "--refine-steps", help=f"Refine the projector on the archive's own training views for N steps after selection; undone if it lowers agreement on unseen views \\[{_D.refine_steps}: off].", rich_help_panel=PROJ),
    refine_lr: Optional[float] = typer.Option(None, "--refine-lr", help="Refine learning rate \\[--fit-lr].", rich_help_panel=PROJ),
    lam: Optional[float] = typer.Option(None, "--lambda", help=f"Weight of the CE term in the fit \\[{_D.lam}].", rich_help_panel=PROJ),
    recipe_flags: dict = None,  # --train-*: the recipe options (cli/recipe_options.py)
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Stage results for resuming \\[OUT without its suffix, + .work].", rich_help_panel=RUN),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Seed \\[{_D.seed}].", rich_help_panel=RUN),
    device: Optional[str] = typer.Option(None, "--device", help=f"auto, cpu, cuda, cuda:N \\[{_D.device}].", rich_help_panel=RUN),
    workers: Optional[int] = typer.Option(None, "--workers", help=f"Data loading workers \\[{_D.workers}].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (implies --quiet).", rich_help_panel=RUN),
) -> None:
    """Distil a dataset into one archive: weak teachers -> projector -> selected, updated images.

    Rerunning the same command resumes from the work directory.

    Example: hellopack build imagenet --data-dir /data/imagenet --ipc 10 --teachers-dir traj/ --out in1k-ipc10.hellopack
    """
    from hellopack.distill import BuildConfig
    from hellopack.distill import build as run_build
    from hellopack.summary import summary_line

    overrides = {
        "recipe": dataset, "data_dir": data_dir, "classes_file": classes, "download": download,
        "dataset_name": dataset_name, "max_images": max_images, "fidelity_images": fidelity_images,
        "val_fraction": val_fraction,
        "allow_short": allow_short, "max_bad_fraction": max_bad_fraction, "image_size": image_size,
        "image_format": image_format, "image_quality": image_quality,
        "ipc": ipc, "factor": factor, "n_real": n_real, "m_crops": m_crops, "observer": observer,
        "update": False if no_update else None, "update_steps": update_steps, "update_lr": update_lr,
        "teachers": tuple(teacher) if teacher else None, "teachers_dir": teachers_dir,
        "teacher_cache": teacher_cache, "base": base,
        "pretrained": pretrained, "clip_weights": clip_weights, "templates": templates,
        "rank_encoder": rank_encoder, "rank_head": rank_head, "alpha": alpha, "lora_dtype": lora_dtype,
        "fit_epochs": fit_epochs, "fit_lr": fit_lr, "fit_batch_size": fit_batch_size, "lam": lam,
        "refine_steps": refine_steps, "refine_lr": refine_lr,
        **recipe_flags, "workdir": workdir,
        "seed": seed, "device": device, "workers": workers,
    }
    # A weights file replaces the download; "--pretrained none" means random init.
    no_pretrained = (pretrained or "").lower() == "none" or (clip_weights is not None and pretrained is None)
    if (pretrained or "").lower() == "none":
        overrides["pretrained"] = None
    if out is not None:
        overrides["out"] = out
    elif config is None:
        overrides["out"] = f"{dataset}-ipc{ipc or _D.ipc}.hellopack"
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
