"""`hellopack eval continual ARCHIVE --steps 5 --arch ARCH`: class-incremental (GDumb) evaluation of an archive."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from hellopack.train.config import TrainConfig as _T  # help text shows the dataclasses' defaults

from .defaults import source_defaults
from .errors import friendly_errors
from .recipe_options import recipe_options, train_options
from .reporter import make_reporter, print_json

# hellopack.continual imports torch on import: its defaults are read from the source (see cli/defaults.py).
_C = source_defaults("hellopack.continual.config", "ContinualConfig")

CL = "Continual learning"
REC = "Recipe (defaults come from the archive; `build` writes what is shown)"
LAB = "Labels"
RUN = "Runtime and output"


@friendly_errors
@recipe_options(train_options(REC, {"epochs": "Epochs of every step's student",
                                     "batch_size": "Batch size, capped at a step's image count"}))
def continual(
    archive: str = typer.Argument(..., help="Archive path or http(s) URL (optionally ending in #sha256=HEX)."),
    arch: str = typer.Option(..., "--arch", help="Student: any torchvision classifier, convnet, resnet18_cifar, ..."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data: ImageFolder, shards, or RECIPE:PATH \\[none: the archive's own images, not a test accuracy]."),
    val_recipe: Optional[str] = typer.Option(None, "--val-recipe", help="Force the recipe used to read --val \\[inferred from --val]."),
    steps: int = typer.Option(_C.steps, "--steps", help="Cut the classes into this many steps (e.g. 5 or 10).", rich_help_panel=CL),
    order: Optional[str] = typer.Option(None, "--order", help="File: one class index or name per line, every class once "
                                        "\\[a permutation seeded by --seed].", rich_help_panel=CL),
    labels: str = typer.Option(",".join(_C.labels), "--labels", help="Label sources, comma-separated: projector, hard, teacher.",
                               rich_help_panel=CL),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder \\[STEM-ARCH-continualSTEPS in the working directory, STEM: the archive's file name without suffix]."),
    recipe_flags: dict = None,  # the recipe options (cli/recipe_options.py)
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT for the teacher label source; repeatable.", rich_help_panel=LAB),
    teachers_dir: Optional[str] = typer.Option(None, "--teachers-dir", help="A `hellopack teach` trajectory, or ARCH:DIR for a folder of training checkpoints (torchvision's model_*.pth): every checkpoint in it is a teacher for the teacher label source.", rich_help_panel=LAB),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Base weights file instead of a download \\[none: the archive's base by open_clip name and tag].", rich_help_panel=LAB),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="Use a base whose fingerprint differs.", rich_help_panel=LAB),
    seed: int = typer.Option(_T.seed, "--seed", help="Seeds the class order (without --order) and every student.", rich_help_panel=RUN),
    val_images: Optional[int] = typer.Option(None, "--val-images", help="Evaluate on the first N --val images only \\[all].", rich_help_panel=RUN),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every K epochs \\[only each step's last epoch].", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Skip finished steps, continue the interrupted one.", rich_help_panel=RUN),
    workers: int = typer.Option(_T.workers, "--workers", help="Data loading workers.", rich_help_panel=RUN),
    device: str = typer.Option(_T.device, "--device", help="auto, cpu, cuda, cuda:N.", rich_help_panel=RUN),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where URL archives are cached \\[$HELLOPACK_CACHE, else ~/.cache/hellopack].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print continual.json on stdout.", rich_help_panel=RUN),
) -> None:
    """Class-incremental (GDumb) evaluation: at each step a fresh student learns all classes seen so far
    from the archive's images, labels restricted to those classes; writes continual.json and a plot.

    Example: hellopack eval continual in100-ipc10.hellopack --steps 5 --arch resnet18 --val /data/in100/val --labels projector,hard
    """
    from hellopack.continual import ContinualConfig, parse_labels
    from hellopack.continual import continual as run_continual
    from hellopack.train import TrainConfig

    tcfg = TrainConfig(
        archive=archive, arch=arch, out=out, val=val, val_recipe=val_recipe,
        teacher=tuple(teacher) if teacher else None, teachers_dir=teachers_dir, val_images=val_images,
        seed=seed, workers=workers, device=device, clip_weights=clip_weights,
        allow_base_mismatch=allow_base_mismatch, resume=resume, cache_dir=cache_dir, **recipe_flags,
    )
    cfg = ContinualConfig(train=tcfg, steps=steps, order=order, labels=parse_labels(labels), eval_every=eval_every)
    with make_reporter(quiet or as_json) as reporter:
        result = run_continual(cfg, reporter)
    if as_json:
        print_json(result)
        return
    render(result, Console())


def render(result: dict, console: Console) -> None:
    """One row per step, one top-1/top-5 column pair per label source."""
    runs: dict = result.get("runs") or {}
    sources = list(runs)
    archive = (result.get("archive") or {}).get("dataset") or (result.get("archive") or {}).get("path", "")
    t = Table(title=f"{result.get('arch', '')} on {archive}: {result.get('steps')}-step class-incremental (GDumb), "
                    f"top-1 / top-5 %", title_justify="left")
    t.add_column("step", justify="right")
    t.add_column("classes", justify="right")
    t.add_column("images", justify="right")
    for src in sources:
        t.add_column(f"{src} top-1", justify="right")
        t.add_column(f"{src} top-5", justify="right")
    first = runs[sources[0]] if sources else []
    for i, row in enumerate(first):
        cells = [str(row["step"]), str(row["classes_seen"]), str(row["images_trained"])]
        for src in sources:
            r = runs[src][i] if i < len(runs[src]) else None
            cells += [f"{r['top1']:.2f}", f"{r['top5']:.2f}"] if r else ["", ""]
        t.add_row(*cells)
    console.print(t)
    console.print(f"evaluated on {result.get('evaluated_on', '')}; top-5 is top-min(5, classes seen)")
    out = result.get("out", "")
    plot = f" and {out}/{result['plot']}" if result.get("plot") else ""
    console.print(f"results in {out}/continual.json{plot}; one run folder per step and label source")
