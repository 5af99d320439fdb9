"""`hellopack eval continual ARCHIVE --steps 5 --arch ARCH`: class-incremental (GDumb) evaluation of an archive."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import friendly_errors
from .reporter import make_reporter, print_json

CL = "Continual learning"
REC = "Recipe (defaults come from the archive)"
LAB = "Labels"
RUN = "Runtime and output"


@friendly_errors
def continual(
    archive: str = typer.Argument(..., help="Archive path or http(s) URL (optionally ending in #sha256=HEX)."),
    arch: str = typer.Option(..., "--arch", help="Student: any torchvision classifier, convnet, resnet18_cifar, ..."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data: ImageFolder, shards, or RECIPE:PATH."),
    val_recipe: Optional[str] = typer.Option(None, "--val-recipe", help="Force the recipe used to read --val."),
    steps: int = typer.Option(5, "--steps", help="Cut the classes into this many steps (e.g. 5 or 10).", rich_help_panel=CL),
    order: Optional[str] = typer.Option(None, "--order", help="File: one class index or name per line, every class once "
                                        "(default: a permutation seeded by --seed).", rich_help_panel=CL),
    labels: str = typer.Option("projector", "--labels", help="Label sources, comma-separated: projector, hard, teacher.",
                               rich_help_panel=CL),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder (default: ARCHIVE-ARCH-continualSTEPS)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of every step's student.", rich_help_panel=REC),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Capped at a step's image count.", rich_help_panel=REC),
    lr: Optional[float] = typer.Option(None, "--lr", rich_help_panel=REC),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", rich_help_panel=REC),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw or sgd.", rich_help_panel=REC),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine or constant.", rich_help_panel=REC),
    loss: Optional[str] = typer.Option(None, "--loss", help="mse (+ beta CE) or kl (with --temperature).", rich_help_panel=REC),
    beta: Optional[float] = typer.Option(None, "--beta", help="Weight of the hard-label CE term.", rich_help_panel=REC),
    temperature: Optional[float] = typer.Option(None, "--temperature", rich_help_panel=REC),
    mix: Optional[str] = typer.Option(None, "--mix", help="cutmix, mixup or none.", rich_help_panel=REC),
    patch_shuffle: Optional[bool] = typer.Option(None, "--patch-shuffle/--no-patch-shuffle", rich_help_panel=REC),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT for the teacher label source; repeatable.", rich_help_panel=LAB),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Base weights file instead of a download.", rich_help_panel=LAB),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="Use a base whose fingerprint differs.", rich_help_panel=LAB),
    seed: int = typer.Option(0, "--seed", help="Seeds the class order (without --order) and every student.", rich_help_panel=RUN),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every K epochs (default: only each step's last).", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Skip finished steps, continue the interrupted one.", rich_help_panel=RUN),
    workers: int = typer.Option(0, "--workers", rich_help_panel=RUN),
    device: str = typer.Option("auto", "--device", rich_help_panel=RUN),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where URL archives are cached.", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=RUN),
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
        archive=archive, arch=arch, out=out, val=val, val_recipe=val_recipe, epochs=epochs, optimizer=optimizer,
        lr=lr, weight_decay=weight_decay, schedule=schedule, batch_size=batch_size, loss=loss, beta=beta,
        temperature=temperature, mix=mix, patch_shuffle=patch_shuffle, teacher=tuple(teacher) if teacher else None,
        seed=seed, workers=workers, device=device, clip_weights=clip_weights,
        allow_base_mismatch=allow_base_mismatch, resume=resume, cache_dir=cache_dir,
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
