"""`hellopack eval rank ARCHIVE --data-dir SOURCE --arch ARCH`: DD-Ranking's scores for an archive."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hellopack.archive import ArchiveError
from hellopack.errors import HellopackError
from hellopack.rank.config import RankConfig as _R  # help text shows the dataclasses' defaults
from hellopack.train.config import TrainConfig as _T

from .errors import friendly_errors
from .recipe_options import recipe_options, train_options
from .reporter import make_reporter, print_json

RK = "Ranking"
REC = "Recipe of every row (defaults come from the archive; `build` writes what is shown)"
LAB = "Labels"
RUN = "Runtime and output"


@friendly_errors
@recipe_options(train_options(REC))
def rank(
    archive: str = typer.Argument(..., help="Archive path or http(s) URL (optionally ending in #sha256=HEX)."),
    arch: str = typer.Option(..., "--arch", help="Student: any torchvision classifier, convnet, resnet18_cifar, ..."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="The dataset the archive was built from (training split): the random subsets and the full-data run read it.", rich_help_panel=RK),
    data_recipe: Optional[str] = typer.Option(None, "--data-recipe", help="Recipe that reads --data-dir \\[the archive's dataset recipe].", rich_help_panel=RK),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data: ImageFolder, shards, or RECIPE:PATH \\[none: the archive's own images, not a test accuracy]."),
    val_recipe: Optional[str] = typer.Option(None, "--val-recipe", help="Force the recipe used to read --val \\[inferred from --val]."),
    real_acc: Optional[float] = typer.Option(None, "--real-acc", help="acc(full real data, hard labels) as a fraction, e.g. a cached one as DD-Ranking does \\[none: train it on --data-dir].", rich_help_panel=RK),
    real_epochs: Optional[int] = typer.Option(None, "--real-epochs", help="Epochs of the full-data run (fewer: a shortened run, said in the output) \\[the recipe's].", rich_help_panel=RK),
    real_images_per_class: Optional[int] = typer.Option(None, "--real-images-per-class", help="Train the full-data run on N random real images per class only (a shortened run) \\[every image].", rich_help_panel=RK),
    ars: bool = typer.Option(_R.ars, "--ars/--no-ars", help="Also train without augmentation, for ARS.", rich_help_panel=RK),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder, one run folder per row \\[STEM-ARCH-rank in the working directory, STEM: the archive's file name without suffix]."),
    recipe_flags: dict = None,  # the recipe options (cli/recipe_options.py)
    labels: str = typer.Option(_T.labels, "--labels", help="The method's labels: projector, or teacher (needs --teacher).", rich_help_panel=LAB),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT for --labels teacher; repeatable.", rich_help_panel=LAB),
    teachers_dir: Optional[str] = typer.Option(None, "--teachers-dir", help="A `hellopack teach` trajectory, or ARCH:DIR: every checkpoint in it is a teacher for --labels teacher.", rich_help_panel=LAB),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Base weights file instead of a download \\[none: the archive's base by open_clip name and tag].", rich_help_panel=LAB),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="Use a base whose fingerprint differs.", rich_help_panel=LAB),
    seeds: int = typer.Option(_T.seeds, "--seeds", help="Evaluation runs: seed i of every row is one run; the random subset is redrawn per seed.", rich_help_panel=RUN),
    seed: int = typer.Option(_T.seed, "--seed", help="First seed (--seeds N runs seed, seed + 1, ...).", rich_help_panel=RUN),
    val_images: Optional[int] = typer.Option(None, "--val-images", help="Evaluate on the first N --val images only \\[all].", rich_help_panel=RUN),
    eval_every: int = typer.Option(_T.eval_every, "--eval-every", help="Evaluate every K epochs (and at the end).", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Continue every row from its last checkpoint.", rich_help_panel=RUN),
    workers: int = typer.Option(_T.workers, "--workers", help="Data loading workers.", rich_help_panel=RUN),
    device: str = typer.Option(_T.device, "--device", help="auto, cpu, cuda, cuda:N.", rich_help_panel=RUN),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where URL archives are cached \\[$HELLOPACK_CACHE, else ~/.cache/hellopack].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print rank.json on stdout.", rich_help_panel=RUN),
) -> None:
    """DD-Ranking's scores: the archive against a random real subset (IOR) and hard labels (HLR), LRS and ARS,
    each row trained with `train`'s student and recipe; writes rank.json.

    Example: hellopack eval rank c10-ipc10.hellopack --data-dir cifar10/ --val cifar10:cifar10/ --arch convnet --seeds 3
    """
    from hellopack.rank import RankConfig
    from hellopack.rank import rank as run_rank
    from hellopack.train import TrainConfig

    tcfg = TrainConfig(
        archive=archive, arch=arch, out=out, val=val, val_recipe=val_recipe, labels=labels,
        teacher=tuple(teacher) if teacher else None, teachers_dir=teachers_dir, data_dir=data_dir,
        data_recipe=data_recipe, val_images=val_images, seeds=seeds, seed=seed, eval_every=eval_every,
        workers=workers, device=device, clip_weights=clip_weights, allow_base_mismatch=allow_base_mismatch,
        resume=resume, cache_dir=cache_dir, **recipe_flags,
    )
    cfg = RankConfig(train=tcfg, real_acc=real_acc, real_epochs=real_epochs,
                     real_images_per_class=real_images_per_class, ars=ars)
    try:
        with make_reporter(quiet or as_json) as reporter:
            result = run_rank(cfg, reporter)
    except ArchiveError as e:
        raise HellopackError(f"{archive}: {e}") from None
    if as_json:
        print_json(result)
        return
    render(result, Console())


def _pct(row: dict | None) -> str:
    return "" if row is None else f"{100 * row['mean']:.2f}"


def _score(s: dict | None, percent: bool = False) -> str:
    if s is None:
        return "not run (--no-ars)"
    k = 100.0 if percent else 1.0
    return f"{k * s['mean']:.{2 if percent else 4}f} +- {k * s['std']:.{2 if percent else 4}f}"


def render(result: dict, console: Console) -> None:
    """Top-1 per row (mean over seeds, percent), then HLR and IOR (points) and LRS and ARS (0..1)."""
    acc, sc, lab = result["accuracy"], result["scores"], result.get("labels", "")
    t = Table(title=f"{result.get('arch', '')}: DD-Ranking scores over {len(result.get('seeds', []))} seed(s), "
                    f"top-1 % (mean over seeds)", title_justify="left")
    t.add_column("images")
    t.add_column("hard labels", justify="right")
    t.add_column(f"{lab} labels", justify="right")
    t.add_column(f"{lab}, no augmentation", justify="right")
    t.add_row("distilled (archive)", _pct(acc.get("distilled_hard")), _pct(acc.get("distilled_own")),
              _pct(acc.get("distilled_own_noaug")))
    t.add_row("random real subset", "", _pct(acc.get("random_own")), _pct(acc.get("random_own_noaug")))
    t.add_row("full real data", _pct(acc.get("real_hard")), "", "")
    t.add_section()
    t.add_row("HLR, points", _score(sc.get("hlr"), percent=True), "", "")
    t.add_row("IOR, points", "", _score(sc.get("ior"), percent=True), "")
    t.add_row("LRS", "", _score(sc.get("lrs")), "")
    t.add_row("ARS", "", "", _score(sc.get("ars")))
    console.print(t)
    w = result.get("weights", {})
    console.print(f"HLR = acc(real, hard) - acc(distilled, hard); IOR = acc(distilled, {lab}) - acc(random, {lab}); "
                  f"LRS = (e^a - e^-1) / (e - e^-1), a = w IOR - (1 - w) HLR; ARS the same with "
                  f"b = w (distilled - random) + (1 - w) (the same without augmentation)")
    console.print(f"DD-Ranking 0.2.0's formulas on fractions; mean +- population std over seeds; "
                  f"w = {w.get('lrs')} (LRS), {w.get('ars')} (ARS)")
    console.print(f"acc(real data): {escape(result['real'])}; evaluated on {escape(str(result.get('evaluated_on')))}")
    console.print(f"results in {escape(result['out'])}/rank.json; one run folder per row")
