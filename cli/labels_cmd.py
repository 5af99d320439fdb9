"""`hellopack labels record|inspect`: stored soft labels (FKD's top-k per view, LPLD's pruning) as a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hellopack.summary import human_bytes, ratio_text
from hellopack.train.config import TrainConfig as _T

from .defaults import source_defaults
from .errors import friendly_errors
from .recipe_options import recipe_options, train_options
from .reporter import make_reporter, print_json

# hellopack.labels.record imports torch: its defaults are read from the source (cli/defaults.py)
_R = source_defaults("hellopack.labels.record", "RecordConfig")
REC = "Recipe: the run whose views are labelled (defaults come from the archive; train must use the same)"
LAB = "Labels"
RUN = "Runtime and output"

labels_app = typer.Typer(help="Stored soft labels (FKD / LPLD) recorded over train's exact views.", no_args_is_help=True)


@friendly_errors
@recipe_options(train_options(REC, {"epochs": "Epochs of views to label (train must use the same)"}))
def record(
    archive: str = typer.Argument(..., help="Archive path or http(s) URL (optionally ending in #sha256=HEX)."),
    top_k: int = typer.Option(..., "--top-k", help="Keep the K most likely classes of every view (K = class count: all)."),
    out: Path = typer.Option(..., "--out", "-o", help="The label file to write."),
    keep: float = typer.Option(_R.keep, "--keep", help="Keep the labels of this random fraction of the steps (LPLD); "
                               "train draws the pruned steps' batches from the kept ones."),
    recipe_flags: dict = None,  # the recipe options (cli/recipe_options.py)
    labels: str = typer.Option(_T.labels, "--labels", help="projector or teacher (needs --teacher).", rich_help_panel=LAB),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="ARCH:CHECKPOINT for --labels teacher; repeatable.", rich_help_panel=LAB),
    teachers_dir: Optional[str] = typer.Option(None, "--teachers-dir", help="A `hellopack teach` trajectory: every checkpoint is a teacher.", rich_help_panel=LAB),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Base weights file instead of a download \\[none: the archive's base by open_clip name and tag].", rich_help_panel=LAB),
    allow_base_mismatch: bool = typer.Option(False, "--allow-base-mismatch", help="Use a base whose fingerprint differs.", rich_help_panel=LAB),
    images: str = typer.Option(_T.images, "--images", help="The images train will use: archive, or random (IPC real images per class from --data-dir, drawn by --seed).", rich_help_panel=LAB),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="--images random: the dataset the archive was built from.", rich_help_panel=LAB),
    data_recipe: Optional[str] = typer.Option(None, "--data-recipe", help="Recipe that reads --data-dir \\[the archive's dataset recipe].", rich_help_panel=LAB),
    images_per_class: Optional[int] = typer.Option(None, "--images-per-class", help="--images random: images per class \\[the archive's IPC].", rich_help_panel=LAB),
    seed: int = typer.Option(_T.seed, "--seed", help="The seed train will use.", rich_help_panel=RUN),
    device: str = typer.Option(_T.device, "--device", help="auto, cpu, cuda, cuda:N.", rich_help_panel=RUN),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where URL archives are cached \\[$HELLOPACK_CACHE, else ~/.cache/hellopack].", rich_help_panel=RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print the file's summary as JSON on stdout.", rich_help_panel=RUN),
) -> None:
    """Label the exact augmented views `train --seed S` will draw and store them (top-K fp16 per view).

    Example: hellopack labels record c10.hellopack --top-k 10 --keep 0.1 --out c10.hplabels, then
    hellopack train c10.hellopack --arch convnet --labels stored:c10.hplabels
    """
    from hellopack.labels.format import describe
    from hellopack.labels.record import RecordConfig
    from hellopack.labels.record import record as run_record

    # the student is not part of the views: arch only satisfies TrainConfig (its lr is not used)
    tc = _T(archive=archive, arch="convnet", labels=labels, teacher=tuple(teacher) if teacher else None,
            teachers_dir=teachers_dir, images=images, data_dir=data_dir, data_recipe=data_recipe,
            images_per_class=images_per_class, seed=seed, device=device, clip_weights=clip_weights,
            allow_base_mismatch=allow_base_mismatch, cache_dir=cache_dir, **recipe_flags)
    with make_reporter(quiet or as_json) as reporter:
        run_record(RecordConfig(tc, top_k=top_k, out=str(out), keep=keep), reporter)
    _show(describe(out), as_json)


@friendly_errors
def inspect(
    file: Path = typer.Argument(..., help="A file written by `hellopack labels record`."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON on stdout."),
) -> None:
    """Views, K, kept fraction and bytes of a stored-label file, beside the archive's label payload."""
    from hellopack.labels.format import describe

    from hellopack.errors import HellopackError

    if not file.is_file():
        raise HellopackError(f"stored labels '{file}' do not exist; check the path")
    _show(describe(file), as_json)


def _show(d: dict, as_json: bool) -> None:
    if as_json:
        print_json(d)
        return
    console = Console()
    t = Table(title=escape(d["path"]), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("labelled by", d["source"])
    t.add_row("views kept", f"{d['views']:,} of {d['views_total']:,} ({d['kept_fraction']:.1%}; "
                            f"{d['steps']:,} of {d['steps_total']:,} steps, {d['epochs']} epochs)")
    t.add_row("top-K", f"{d['top_k']} of {d['classes']} classes")
    t.add_row("labels (fp16 log-probabilities, u16 classes, fp16 lse)", human_bytes(d["label_bytes"]))
    t.add_row("augmentation records", human_bytes(d["augmentation_bytes"]))
    t.add_row("file", f"{d['file_bytes']:,} B ({human_bytes(d['file_bytes'])})")
    t.add_row("the archive's label payload (LoRA + prompts)", human_bytes(d["archive_label_payload_bytes"]))
    t.add_row("ratio", ratio_text(d["ratio_to_archive_payload"]) if d["ratio_to_archive_payload"] else "")
    console.print(t)
    console.print(f"stored labels: {d['views']:,} views, K {d['top_k']}, kept {d['kept_fraction']:.3f}, "
                  f"{d['file_bytes']:,} bytes; archive label payload {d['archive_label_payload_bytes']:,} bytes")
