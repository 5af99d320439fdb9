"""`hellopack train ARCHIVE --arch ARCH`: a student trained with labels regenerated on the fly."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hellopack.archive import ArchiveError
from hellopack.errors import HellopackError
from hellopack.train.config import TrainConfig as _T  # help text shows the dataclass's defaults

from .errors import friendly_errors
from .recipe_options import recipe_options, train_options
from .reporter import make_reporter, print_json

REC = "Recipe (defaults come from the archive; `build` writes what is shown)"
LAB = "Labels"
IMG = "Images"
RUN = "Runtime and output"


@friendly_errors
@recipe_options(train_options(REC))
def train(
    archive: str = typer.Argument(..., help="Archive path or http(s) URL (optionally ending in #sha256=HEX)."),
    arch: str = typer.Option(..., "--arch", help="Student: any torchvision classifier, convnet, resnet18_cifar, ..."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data: ImageFolder, shards, or RECIPE:PATH \\[none: the archive's own images, not a test accuracy]."),
    val_recipe: Optional[str] = typer.Option(None, "--val-recipe", help="Force the recipe used to read --val \\[inferred from --val]."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run folder \\[STEM-ARCH in the working directory, STEM: the archive's file name without suffix]."),
    recipe_flags: dict = None,  # the recipe options (cli/recipe_options.py)
    labels: str = typer.Option(_T.labels, "--labels", help="projector, teacher (needs --teacher) or hard.", rich_help_panel=LAB),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT for --labels teacher; repeatable.", rich_help_panel=LAB),
    teachers_dir: Optional[str] = typer.Option(None, "--teachers-dir", help="A `hellopack teach` trajectory, or ARCH:DIR for a folder of training checkpoints (torchvision's model_*.pth): every checkpoint in it is a teacher for --labels teacher.", rich_help_panel=LAB),
    images: str = typer.Option(_T.images, "--images", help="What the student trains on: archive (its distilled images), random (IPC real images per class from --data-dir, drawn anew per seed: DD-Ranking's random baseline) or full (every real image).", rich_help_panel=IMG),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="--images random/full: the dataset the archive was built from (its training split).", rich_help_panel=IMG),
    data_recipe: Optional[str] = typer.Option(None, "--data-recipe", help="Recipe that reads --data-dir \\[the archive's dataset recipe].", rich_help_panel=IMG),
    images_per_class: Optional[int] = typer.Option(None, "--images-per-class", help="--images random: images per class \\[the archive's IPC].", rich_help_panel=IMG),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Base weights file instead of a download \\[none: the archive's base by open_clip name and tag].", rich_help_panel=LAB),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="Use a base whose fingerprint differs.", rich_help_panel=LAB),
    seeds: int = typer.Option(_T.seeds, "--seeds", help="Train this many seeds; report mean and std.", rich_help_panel=RUN),
    seed: int = typer.Option(_T.seed, "--seed", help="Seed (--seeds N runs seed, seed + 1, ...).", rich_help_panel=RUN),
    val_images: Optional[int] = typer.Option(None, "--val-images", help="Evaluate on the first N --val images only \\[all].", rich_help_panel=RUN),
    eval_every: int = typer.Option(_T.eval_every, "--eval-every", help="Evaluate every K epochs (and at the end).", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint.", rich_help_panel=RUN),
    workers: int = typer.Option(_T.workers, "--workers", help="Data loading workers.", rich_help_panel=RUN),
    device: str = typer.Option(_T.device, "--device", help="auto, cpu, cuda, cuda:N.", rich_help_panel=RUN),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the student.", rich_help_panel=RUN),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where URL archives are cached \\[$HELLOPACK_CACHE, else ~/.cache/hellopack].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout.", rich_help_panel=RUN),
) -> None:
    """Train a student from an archive; the projector labels every augmented batch.

    Example: hellopack train in1k-ipc10.hellopack --arch swin_v2_t --val /data/imagenet/val
    """
    from hellopack.train import TrainConfig
    from hellopack.train import train as run_train

    cfg = TrainConfig(
        archive=archive, arch=arch, out=out, val=val, val_recipe=val_recipe, labels=labels,
        teacher=tuple(teacher) if teacher else None, teachers_dir=teachers_dir, images=images, data_dir=data_dir,
        data_recipe=data_recipe, images_per_class=images_per_class, val_images=val_images, seeds=seeds,
        seed=seed, eval_every=eval_every, workers=workers, device=device, compile=compile, clip_weights=clip_weights,
        allow_base_mismatch=allow_base_mismatch, resume=resume, cache_dir=cache_dir, **recipe_flags,
    )
    try:
        with make_reporter(quiet or as_json) as reporter:
            result = run_train(cfg, reporter)
    except ArchiveError as e:  # name the archive, as `inspect` does (it may be unsupported, not damaged)
        raise HellopackError(f"{archive}: {e}") from None
    if as_json:
        print_json(result)
        return
    _render(result)


def _render(result: dict) -> None:
    """Final-epoch accuracy per seed (percent, as in result.json), then the mean and std over seeds."""
    console = Console()
    runs = result.get("runs", [result])
    images = (result.get("config") or {}).get("images", "archive")
    title = f"{result.get('arch', '')}, labels: {result.get('labels', '')}"
    t = Table(title=title if images == "archive" else f"{title}, images: {images}", title_justify="left")
    for col in ("seed", "top-1 %", "top-5 %", "images/s", "evaluated on"):
        t.add_column(col)
    for r in runs:
        ips = (r.get("timing") or {}).get("images_per_second")
        t.add_row(str(r.get("seed", "")), f"{r['top1']:.2f}", f"{r['top5']:.2f}",
                  f"{ips:,.0f}" if isinstance(ips, (int, float)) else "", escape(str(r.get("evaluated_on", ""))))
    console.print(t)
    line = f"final-epoch top-1 {result['top1']:.2f} %"
    if len(runs) > 1:
        line += f" +- {result.get('top1_std', 0.0):.2f} (mean and sample std over {len(runs)} seeds)"
    console.print(line)
    outs = sorted({str(r.get("out")) for r in runs if r.get("out")})
    if outs:
        console.print("metrics.jsonl, result.json and checkpoints in " + ", ".join(escape(o) for o in outs))
