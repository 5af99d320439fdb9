"""`hellopack eval continual`: class-incremental evaluation of an archive, GDumb style.

Read top to bottom: open the archive (as `train` does), cut its classes into
steps, load the images and --val once, then for every step and label source
train a fresh student (train's own loop, checkpoints and resume) on the archive
images of all classes seen so far, with labels restricted to those classes
(see ``restrict.py``), and evaluate it on the val images of those classes.
continual.json and the plot are rewritten after every run, so a killed run
still shows what it finished; ``--resume`` skips finished runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hellopack import dist
from hellopack.continual.config import ContinualConfig
from hellopack.continual.plot import plot_accuracy
from hellopack.continual.restrict import SeenClassLabeler, seen_evaluator, select_seen
from hellopack.continual.split import read_order, seeded_order, split_steps
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import NULL, Reporter
from hellopack.train import checkpoint as ckpt
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.evaluate import Evaluator, ValView, archive_evaluator, val_evaluator
from hellopack.train.labelers import Labeler, TeacherSet, build_labeler
from hellopack.train.loop import (Placement, RunData, check_arch, load_archive_images, manifest_sha256,
                                  open_run_archive, run_identity, train_student)

RESULT = "continual.json"
PLOT = "continual.png"


def continual(cfg: ContinualConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Run every step for every label source; return continual.json's content."""
    cfg.validate()
    with dist.session(cfg.train.device) as (device, info):
        return _Continual(cfg, reporter if info.is_main else NULL, device, info).run()


def class_steps(cfg: ContinualConfig, classes: list[dict]) -> tuple[list[int], list[list[int]]]:
    """(the full class order, the new classes of each step)."""
    order = read_order(cfg.order, classes) if cfg.order else seeded_order(len(classes), cfg.train.seed)
    return order, split_steps(order, cfg.steps)


class _Continual:
    def __init__(self, cfg: ContinualConfig, reporter: Reporter, device: torch.device, info: dist.DistInfo) -> None:
        self.cfg, self.reporter, self.device, self.info = cfg, reporter, device, info
        self.archive = open_run_archive(cfg.train, reporter, info)
        self.manifest = self.archive.manifest
        self.classes = list(self.manifest.get("classes") or [])
        self.num_classes = len(self.classes)
        self.order, self.groups = class_steps(cfg, self.classes)
        self.recipes = {src: self._train_cfg(src).resolve(self.manifest) for src in cfg.labels}
        check_arch(cfg.train.arch, self.num_classes, next(iter(self.recipes.values())))
        stem = Path(str(self.archive.path)).stem
        self.out = Path(cfg.train.out) if cfg.train.out else Path.cwd() / f"{stem}-{cfg.train.arch}-continual{cfg.steps}"
        self.labelers: dict[str, Labeler] = {}

    # -- plan ------------------------------------------------------------------------------------

    def _train_cfg(self, src: str) -> TrainConfig:
        t = self.cfg.train
        return replace(t, labels=src, teacher=t.teacher if src == "teacher" else None, seeds=1)

    def run_dir(self, src: str, step: int) -> Path:
        return self.out / src / f"step-{step:0{len(str(self.cfg.steps))}d}"

    def seen(self, step: int) -> list[int]:
        return [c for g in self.groups[:step] for c in g]

    def _check_fresh(self) -> None:
        """Without --resume, refuse an --out that already holds runs (before minutes of loading)."""
        if self.cfg.train.resume:
            return
        for src in self.cfg.labels:
            for step in range(1, self.cfg.steps + 1):
                if ckpt.exists(self.run_dir(src, step) / "checkpoints"):
                    raise HellopackError(f"'{self.out}' already holds a continual run; pass --resume to continue "
                                         "it or choose another --out")

    # -- run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, reporter = self.cfg, self.reporter
        self._check_fresh()
        t = cfg.train
        eval_bs = t.eval_batch_size or max(r.batch_size for r in self.recipes.values())
        size = next(iter(self.recipes.values())).image_size
        val: Evaluator | None = None
        if t.val is not None:  # opened first: a wrong --val fails before the images are loaded
            view = ValView(size, eval_bs, t.workers, resize=next(iter(self.recipes.values())).val_resize,
                           max_images=t.val_images)
            val = val_evaluator(t.val, t.val_recipe, self.manifest, view, self.device, self.info)
        self.images, self.labels = load_archive_images(self.archive, size, self.num_classes, reporter)
        if val is None:
            reporter.info("no --val given: accuracy is measured on the archive's own images (not a test accuracy)")
        runs: dict[str, list[dict]] = {src: [] for src in cfg.labels}
        for step in range(1, cfg.steps + 1):
            for src in cfg.labels:
                runs[src].append(self._one(src, step, val, eval_bs))
                summary = self._summary(runs, val, complete=step == cfg.steps and src == cfg.labels[-1])
                self._write(summary)
        return summary

    def _one(self, src: str, step: int, val: Evaluator | None, eval_bs: int) -> dict[str, Any]:
        cfg, reporter = self.cfg, self.reporter
        seen = self.seen(step)
        k = len(seen)
        images, labels = select_seen(self.images, self.labels, seen, self.num_classes)
        base = self.recipes[src]
        batch_size = min(base.batch_size, len(images))  # step 1 may hold fewer images than one batch
        if batch_size < self.info.world_size:
            raise HellopackError(f"step {step} has {len(images)} images for {self.info.world_size} processes; "
                                 "use fewer processes or fewer --steps")
        recipe = replace(base, batch_size=batch_size)
        tcfg = replace(self._train_cfg(src), batch_size=batch_size, out=str(self.run_dir(src, step)),
                       eval_every=cfg.eval_every or recipe.epochs)
        # joins the checkpoint identity: a resume with another order or --steps is refused, naming the split
        extra = {"class split": {"step": step, "steps": cfg.steps, "classes": seen}}
        out = self.run_dir(src, step)
        tag = f"step {step}/{cfg.steps} ({src} labels, {k} classes, {len(images)} images)"
        t0 = time.perf_counter()
        result = self._finished(tcfg, recipe, out, extra)
        skipped = result is not None
        if skipped:
            reporter.info(f"{tag}: finished earlier, skipped")
        else:
            reporter.info(f"{tag}: training a new {cfg.train.arch}")
            evaluator = (seen_evaluator(val, seen, self.num_classes) if val is not None else
                         archive_evaluator(images, labels, k, eval_bs, self.device, self.info.rank,
                                           self.info.world_size))
            labeler = SeenClassLabeler(self._labeler(src), seen)
            data = RunData(self.manifest, str(self.archive.path), images, labels, labeler, evaluator,
                           num_classes=k, identity_extra=extra)
            result = train_student(tcfg, recipe, data, out, Placement(self.device, self.info, reporter))
        reporter.info(f"{tag}: top-1 {result['top1']:.2f}%")
        timing = result.get("timing") or {}
        return {
            "step": step,
            "classes_seen": k,
            "class_indices": seen,
            "class_names": [self.classes[c].get("name") for c in seen],
            "new_classes": self.groups[step - 1],
            "top1": result["top1"],
            "top5": result["top5"],
            "top5_k": min(5, k),
            "images_trained": len(images),
            "images_evaluated": result.get("images_evaluated"),
            "epochs": result.get("epoch"),
            "batch_size": batch_size,
            "images_seen": timing.get("images_seen"),
            "train_seconds": timing.get("train_seconds"),
            "wall_seconds": None if skipped else time.perf_counter() - t0,
            "stopped_early": bool(result.get("stopped_early")),
            "skipped_on_resume": skipped,
            "out": str(out),
        }

    def _finished(self, tcfg: TrainConfig, recipe: Recipe, out: Path, extra: dict) -> dict[str, Any] | None:
        """result.json of a run that already trained every epoch with this exact identity, else None.

        A checkpoint with another identity is left to train_student, which refuses it with a clear message.
        """
        if not (self.cfg.train.resume and ckpt.exists(out / "checkpoints") and (out / "result.json").is_file()):
            return None
        meta = ckpt.load(out / "checkpoints").meta
        want = run_identity(tcfg, recipe, manifest_sha256(self.manifest), tcfg.seed, extra)
        if any(meta.get(key) != value for key, value in want.items()) or meta.get("epoch") != recipe.epochs:
            return None
        result = json.loads((out / "result.json").read_text())
        return None if result.get("stopped_early") else result

    def _labeler(self, src: str) -> Labeler:
        """Built on first use: a fully resumed run never rebuilds the projector."""
        if src not in self.labelers:
            r, t = self.recipes[src], self.cfg.train
            teachers = TeacherSet(r.teachers, self.num_classes, r.image_size, r.mean, r.std)
            self.labelers[src] = build_labeler(src, archive=self.archive, teachers=teachers,
                                               device=self.device, clip_weights=t.clip_weights,
                                               allow_base_mismatch=t.allow_base_mismatch, warn=self.reporter.warn)
        return self.labelers[src]

    # -- outputs ---------------------------------------------------------------------------------

    def _summary(self, runs: dict[str, list[dict]], val: Evaluator | None, complete: bool) -> dict[str, Any]:
        cfg = self.cfg
        plot, backend = self._plot(runs)
        dataset = (self.manifest.get("dataset") or {}).get("name")
        return {
            "headline": ("final-epoch top-1 of each step's student, trained from scratch on the archive images of "
                         "the classes seen so far, on the validation images of those classes"),
            "protocol": "GDumb (class-incremental; a fresh student per step, memory = the archive's images)",
            "archive": {"path": str(self.archive.path), "dataset": dataset, "classes": self.num_classes,
                        "images": len(self.images)},
            "arch": cfg.train.arch,
            "seed": cfg.train.seed,
            "steps": cfg.steps,
            "order": self.order,
            "order_from": f"file {cfg.order}" if cfg.order else f"permutation seeded by --seed {cfg.train.seed}",
            "groups": self.groups,
            "labels": list(cfg.labels),
            "evaluated_on": val.description if val is not None else "archive images (not a test accuracy)",
            "recipes": {src: r.to_json() for src, r in self.recipes.items()},
            "config": cfg.to_json(),
            "runs": runs,
            "plot": plot,
            "plot_backend": backend,
            "complete": complete,
            "out": str(self.out),
        }

    def _plot(self, runs: dict[str, list[dict]]) -> tuple[str | None, str | None]:
        """(file name relative to --out, backend used); redrawn after every run."""
        if not self.info.is_main:
            return None, None
        dataset = (self.manifest.get("dataset") or {}).get("name") or Path(str(self.archive.path)).stem
        title = f"{dataset}: {self.cfg.train.arch}, {self.cfg.steps}-step class-incremental (GDumb)"
        self.out.mkdir(parents=True, exist_ok=True)
        return PLOT, plot_accuracy(runs, self.out / PLOT, title=title, backend=self.cfg.plot)

    def _write(self, summary: dict[str, Any]) -> None:
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / RESULT, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
