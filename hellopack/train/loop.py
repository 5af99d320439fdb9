"""`hellopack train`: train a student on an archive's images with labels generated for every augmented batch.

Read top to bottom: open the archive, resolve the recipe, load the images into
memory, rebuild the labeler, then for each seed run the epoch loop
(augment -> label -> loss -> step), evaluating every few epochs and
checkpointing every epoch. Every batch is a pure function of (seed, step,
rank), and the global RNG (dropout) is saved in the checkpoint, so a resumed
run continues bit-exactly on CPU.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import Any, Iterator

import torch

from hellopack import dist
from hellopack.errors import HellopackError
from hellopack.fsutil import FolderLock
from hellopack.progress import NULL, Reporter
from hellopack.train import checkpoint as ckpt
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.dataset import ArchiveDataset
from hellopack.train.evaluate import Evaluator, ValView, archive_evaluator, val_evaluator
from hellopack.train.fetch import resolve_archive
from hellopack.train.images import load_archive_images, steps_images, steps_per_epoch  # noqa: F401 (re-exported)
from hellopack.train.labelers import TeacherSet, build_labeler
from hellopack.train.run import Placement, Run, RunData, _write_json, manifest_sha256, run_identity  # noqa: F401
from hellopack.train.runs import default_run_name, input_size_note


def train(cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train ``cfg.seeds`` students; return result.json's content (a mean/std summary for several seeds)."""
    with dist.session(cfg.device) as (device, info):
        return _train(cfg, reporter if info.is_main else NULL, device, info)


def train_student(cfg: TrainConfig, recipe: Recipe, data: RunData, out: Path, where: Placement) -> dict[str, Any]:
    """Train one student (seed ``cfg.seed``) on already prepared pieces into ``out``; result.json's content.

    For callers that train on a part of an archive (``hellopack eval continual``): ``data.labels``
    are 0..num_classes-1 (default: the manifest's class count), ``data.labeler`` and ``data.evaluator``
    must speak the same classes, and ``data.identity_extra`` joins the checkpoint identity so a
    resume refuses a checkpoint made for another part. Resume rules are train's.
    """
    return Run(cfg, recipe, data, where).one_seed(cfg.seed, out)


def _train(cfg: TrainConfig, reporter: Reporter, device: torch.device, info: dist.DistInfo) -> dict[str, Any]:
    archive = open_run_archive(cfg, reporter, info)
    manifest = archive.manifest
    recipe = cfg.resolve(manifest)
    classes = manifest.get("classes") or []
    num_classes = len(classes)
    check_arch(cfg.arch, num_classes, recipe)
    note = input_size_note(cfg.arch, recipe.image_size)
    if note:
        reporter.warn(note)
    _check_batch_size(int((manifest.get("images") or {}).get("count", 0)), recipe.batch_size, cfg.drop_last,
                      info.world_size)
    out_root = Path(cfg.out) if cfg.out else Path.cwd() / default_run_name(Path(archive.path).stem, cfg.arch,
                                                                             recipe.labels)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    outs = [out_root if len(seeds) == 1 else out_root / f"seed-{seed}" for seed in seeds]
    check_run_folder(out_root)
    with run_folder_lock(out_root, info.is_main):
        if not cfg.resume:  # fail before minutes of loading, not after
            for out in outs:
                if ckpt.exists(out / "checkpoints"):
                    raise HellopackError(f"'{out}' already holds a training run; pass --resume to continue it "
                                         "or choose another --out")
        return _train_locked(cfg, reporter, device, info, archive, recipe, outs, out_root)


def _train_locked(cfg: TrainConfig, reporter: Reporter, device: torch.device, info: dist.DistInfo, archive: Any,
                  recipe: Recipe, outs: list[Path], out_root: Path) -> dict[str, Any]:
    manifest = archive.manifest
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    num_classes = len(manifest["classes"])
    eval_bs = cfg.eval_batch_size or recipe.batch_size
    evaluator: Evaluator | None = None
    if cfg.val is not None:  # opened first: a wrong --val fails before minutes of loading
        view = ValView(recipe.image_size, eval_bs, cfg.workers, resize=recipe.val_resize, max_images=cfg.val_images)
        evaluator = val_evaluator(cfg.val, cfg.val_recipe, manifest, view, device, info)
    teachers = TeacherSet(recipe.teachers, num_classes, recipe.image_size, recipe.mean, recipe.std)
    labeler = build_labeler(recipe.labels, archive=archive, teachers=teachers, device=device,
                            clip_weights=cfg.clip_weights, allow_base_mismatch=cfg.allow_base_mismatch,
                            warn=reporter.warn)
    # the images `hellopack.open(...).dataset()` serves: decoded once, checked against the manifest
    images, labels = _dataset(archive, recipe.image_size, num_classes, reporter)
    _check_batch_size(len(images), recipe.batch_size, cfg.drop_last, info.world_size)
    if evaluator is None:
        evaluator = archive_evaluator(images, labels, num_classes, eval_bs, device, info.rank, info.world_size)
        reporter.info("no --val given: accuracy is measured on the archive's own images (not a test accuracy)")

    run = Run(cfg, recipe, RunData(manifest, str(archive.path), images, labels, labeler, evaluator),
              Placement(device, info, reporter))
    results = [run.one_seed(seed, out) for seed, out in zip(seeds, outs)]
    if len(seeds) == 1:
        return results[0]
    summary = summarize(results, cfg, recipe)
    if info.is_main:
        _write_json(out_root / "result.json", summary)
    return summary


# ---- setup -------------------------------------------------------------------------------------

@contextlib.contextmanager
def run_folder_lock(out: Path, is_main: bool = True) -> Iterator[None]:
    """One train per --out (the main process holds ``<out>/.lock``): a second one would train into the
    same folder and delete the first's checkpoint temporaries. A run that fails before writing
    anything leaves no folder behind (the lock file alone is removed with the folder it created)."""
    if not is_main:
        yield
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HellopackError(f"--out '{out}' cannot be created ({e.strerror or e}); choose another --out") from None
    lock = FolderLock(out, f"run folder '{out}' is in use by another train{{pid}}; wait for it to finish, "
                           "or pass another --out")
    lock.acquire()  # held by another train: its folder and files are left alone
    try:
        yield
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [FolderLock.NAME]:  # nothing of this run to keep
            with contextlib.suppress(OSError):
                (out / FolderLock.NAME).unlink()
                out.rmdir()
        raise
    finally:
        lock.release()


def open_run_archive(cfg: TrainConfig, reporter: Reporter, info: dist.DistInfo) -> Any:
    from hellopack.archive import open_archive

    # one download per machine: local rank 0 fetches, the others then hit the cache
    # (a failure on rank 0 still reaches the barrier, so no process waits forever)
    path, error = None, None
    if info.local_rank == 0:
        try:
            path = resolve_archive(cfg.archive, cfg.cache_dir, reporter)
        except HellopackError as e:
            error = e
    dist.barrier()
    if error is not None:
        raise error
    if path is None:
        path = resolve_archive(cfg.archive, cfg.cache_dir, NULL)
    archive = open_archive(path)
    # The checks `inspect --verify` runs on the small members, through the same accessors, before any
    # work: train refuses what verify refuses, whatever --labels reads later (images: load_archive_images).
    archive.read_prompts()
    archive.read_lora()
    return archive


def _dataset(archive: Any, size: int, num_classes: int, reporter: Reporter) -> tuple[torch.Tensor, torch.Tensor]:
    data = ArchiveDataset.from_archive(archive, size, num_classes, reporter)
    return data.images, data.labels


def check_arch(arch: str, num_classes: int, recipe: Recipe) -> None:
    """Unknown architectures fail now, not after the images are loaded (built on the meta device: no memory)."""
    from hellopack.models.students import build_student

    with torch.device("meta"):
        build_student(arch, num_classes, recipe.image_size, recipe.mean, recipe.std)


def _check_batch_size(n_images: int, batch_size: int, drop_last: bool, world: int) -> None:
    if n_images and drop_last and batch_size > n_images:
        raise HellopackError(f"--batch-size {batch_size} is larger than the archive's {n_images} images, so "
                             f"drop-last would drop every batch; use --batch-size {n_images} or smaller")
    if n_images and not drop_last and world > 1 and 0 < n_images % batch_size < world:
        raise HellopackError(f"the last batch of each epoch has {n_images % batch_size} images for {world} "
                             "processes; keep drop-last on or choose a batch size that leaves at least one "
                             "image per process")
    if batch_size < world:
        raise HellopackError(f"--batch-size {batch_size} is smaller than the {world} processes; "
                             f"use a batch size of at least {world}")


def summarize(results: list[dict[str, Any]], cfg: TrainConfig, recipe: Recipe) -> dict[str, Any]:
    """Mean and sample standard deviation (n-1) over seeds; ``top1``/``top5`` are the means, as for one seed."""
    out: dict[str, Any] = {}
    for key in ("top1", "top5"):
        values = [r[key] for r in results]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key}_per_seed"] = values
    return {**out, "std_kind": "sample standard deviation (n-1) over seeds",
            "seeds": [r["seed"] for r in results], "evaluated_on": results[0]["evaluated_on"],
            "headline": "mean over seeds of each seed's final-epoch accuracy", "arch": cfg.arch,
            "labels": recipe.labels, "recipe": recipe.to_json(), "config": cfg.to_json(), "runs": results}


# ---- small helpers -----------------------------------------------------------------------------

def check_run_folder(out: Path) -> None:
    """An --out that cannot become a folder fails now, not after minutes of loading; nothing is created."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent  # the nearest existing ancestor is where the folder would be created
    if probe == out and not out.is_dir():
        raise HellopackError(f"--out '{out}' is a file; name a folder for the run")
    if not probe.is_dir():
        raise HellopackError(f"--out '{out}' cannot be created: '{probe}' is a file; choose another --out")
    if not os.access(probe, os.W_OK):
        raise HellopackError(f"--out '{out}': folder '{probe}' is not writable; choose another --out")


__all__ = ["train", "train_student", "RunData", "Placement", "open_run_archive", "check_arch", "check_run_folder",
           "summarize", "load_archive_images", "steps_images", "steps_per_epoch", "manifest_sha256", "run_identity"]
