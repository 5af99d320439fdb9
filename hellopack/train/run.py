"""One seed of `hellopack train`: build the student, resume, run the epochs, evaluate, checkpoint.

The steps go through hellopack.train.core (label the augmented batch, loss, optimizer and
scheduler step); this module adds what a run of them needs around it: the seeds, the
checkpoint identity and resume, the evaluation rows of metrics.jsonl and result.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hellopack import device as devices
from hellopack import dist
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import Reporter
from hellopack.train import checkpoint as ckpt
from hellopack.train import protocol as proto
from hellopack.train.augment import AugmentConfig, Augmenter
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.core import TrainStep, run_steps
from hellopack.train.evaluate import Evaluator, reduce_sum
from hellopack.train.images import StepBatches, steps_images
from hellopack.train.labelers import Labeler
from hellopack.train.losses import TrainLoss


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def run_identity(cfg: TrainConfig, recipe: Recipe, manifest_sha: str, seed: int,
                 identity_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (stored in its meta)."""
    settings = {k: v for k, v in recipe.to_json().items() if k != "lr_source"}  # lr_source only describes
    return {"arch": cfg.arch, "seed": seed, "recipe": settings, "archive_manifest_sha256": manifest_sha,
            **(identity_extra or {})}


# ---- one seed ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunData:
    """What a seed trains on: the archive (manifest, path), its images and class ids, a labeler, an evaluator.

    For a part of an archive (``hellopack eval continual``): ``labels`` are 0..num_classes-1 (default:
    the manifest's class count) and ``identity_extra`` joins the checkpoint identity.
    """

    manifest: dict
    archive_path: str
    images: torch.Tensor
    labels: torch.Tensor
    labeler: Labeler
    evaluator: Evaluator
    num_classes: int | None = None
    identity_extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Placement:
    """Where a run happens: its device, its place in the process group, and who hears about it."""

    device: torch.device
    info: dist.DistInfo
    reporter: Reporter


@dataclass
class _Training:
    """One seed's moving parts between epochs."""

    student: nn.Module
    model: nn.Module  # the student, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: StepBatches
    total_steps: int


class Run:
    def __init__(self, cfg: TrainConfig, recipe: Recipe, data: RunData, where: Placement) -> None:
        self.cfg, self.recipe, self.manifest, self.archive_path = cfg, recipe, data.manifest, data.archive_path
        self.images, self.labels, self.labeler, self.evaluator = data.images, data.labels, data.labeler, data.evaluator
        self.device, self.info, self.reporter = where.device, where.info, where.reporter
        self.num_classes = len(data.manifest["classes"]) if data.num_classes is None else data.num_classes
        self.identity_extra = data.identity_extra
        self.manifest_sha256 = manifest_sha256(data.manifest)

    def identity(self, seed: int) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed."""
        return run_identity(self.cfg, self.recipe, self.manifest_sha256, seed, self.identity_extra)

    def one_seed(self, seed: int, out: Path) -> dict[str, Any]:
        from hellopack.models.students import build_student

        cfg, recipe, info, device = self.cfg, self.recipe, self.info, self.device
        ck_dir = out / "checkpoints"
        resumed = self._load_checkpoint(ck_dir, seed)
        if info.is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise HellopackError(f"--out '{out}' cannot be created ({e.strerror or e}); "
                                     "choose another --out") from None

        fmt = devices.memory_format(device)
        with torch.random.fork_rng(devices=_cuda(device)):  # the caller's RNG is left as it was
            torch.manual_seed(seed)
            student = build_student(cfg.arch, self.num_classes, recipe.image_size, recipe.mean, recipe.std)
            student = student.to(device, memory_format=fmt)
            torch.manual_seed(_derived_seed(seed, info.rank))  # dropout differs between processes
            if device.type == "cuda":
                torch.cuda.manual_seed(_derived_seed(seed, info.rank))
            optimizer = proto.make_optimizer(student, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.decay,
                                             recipe.momentum)
            batches = StepBatches(self.images, self.labels, self._augmenter(), recipe.batch_size, cfg.drop_last,
                                  seed, info.rank, info.world_size)
            spe = batches.steps_per_epoch
            total_steps = recipe.epochs * spe
            scheduler = proto.make_scheduler(optimizer, recipe.schedule, spe, recipe.epochs)
            epoch, step, history, elapsed = 0, 0, [], 0.0
            if resumed is not None:
                epoch, step, elapsed = self._restore(resumed, student, optimizer, scheduler)
                history = [h for h in _read_jsonl(out / "metrics.jsonl") if h.get("epoch", 0) <= epoch]
                self.reporter.info(f"resuming {out} at epoch {epoch}/{recipe.epochs} (step {step})")
            model: nn.Module = student
            if info.enabled:
                model = nn.parallel.DistributedDataParallel(
                    student, device_ids=[device.index or 0] if device.type == "cuda" else None)
            if cfg.compile:
                model = torch.compile(model)
            training = _Training(student, model, optimizer, scheduler, batches, total_steps)
            return self._epochs(seed, out, training, (epoch, step, elapsed), history)

    def _epochs(self, seed: int, out: Path, training: _Training, start: tuple[int, int, float],
                history: list[dict]) -> dict[str, Any]:
        cfg, recipe = self.cfg, self.recipe
        student, model, optimizer, scheduler = training.student, training.model, training.optimizer, training.scheduler
        batches, total_steps = training.batches, training.total_steps
        start_epoch, step, elapsed = start
        spe = batches.steps_per_epoch
        stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
        source = getattr(self.labeler, "source_step", None)  # stored labels: the recorded batch a step trains on
        order = range(step, stop_at) if source is None else [source(s) for s in range(step, stop_at)]
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, sampler=order, num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda", generator=torch.Generator())  # own generator: global RNG untouched
        batch_iter = iter(loader)
        model.train()
        total_images = batches.images_until(stop_at) - batches.images_until(step)
        train_step = TrainStep(optimizer, self._loss_fn(model), scheduler=scheduler, diverged=self._diverged)
        with self.reporter.stage("train", total=total_images, unit="img") as stage:
            for epoch in range(start_epoch, recipe.epochs):
                losses = torch.zeros(2, dtype=torch.float64)  # sum of losses, steps (this epoch)
                t0, epoch_images = time.perf_counter(), [0]

                def on_step(index: int, value: float) -> None:
                    nonlocal losses
                    losses += torch.tensor([value, 1.0], dtype=torch.float64)
                    n = batches.images_until(index + 1) - batches.images_until(index)  # the global batch
                    epoch_images[0] += n
                    stage.advance(n, epoch=epoch + 1, loss=value, lr=scheduler.get_last_lr()[0],
                                  img_s=epoch_images[0] / max(1e-9, time.perf_counter() - t0))

                end = max(step, min((epoch + 1) * spe, stop_at))
                run_steps(train_step, ((i, (*next(batch_iter), i)) for i in range(step, end)), on_step)
                step = end
                elapsed += time.perf_counter() - t0
                if step < (epoch + 1) * spe:
                    break  # --max-steps stopped the run inside this epoch: nothing to checkpoint
                done = epoch + 1
                if done % cfg.eval_every == 0 or done == recipe.epochs or step == stop_at:
                    history.append(self._evaluate(student, done, step, losses, scheduler, out, history))
                self._save(out / "checkpoints", seed, student, optimizer, scheduler, done, step, elapsed)
                if step == stop_at:
                    break
        del batch_iter  # stops any worker processes now
        if not history or history[-1]["step"] != step:  # stopped inside an epoch: evaluate what we have
            history.append(self._evaluate(student, step // spe, step, torch.zeros(2, dtype=torch.float64),
                                          scheduler, out, history))
        result = self._result(seed, out, history, step, elapsed, stopped_early=step < total_steps)
        if self.info.is_main:
            _write_json(out / "result.json", result)
        return result

    def _loss_fn(self, model: nn.Module) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
        """A step's loss: label the augmented batch, then the recipe's TrainLoss (MSE/KL + beta * CE, or CE)."""
        device, labeler, criterion = self.device, self.labeler, TrainLoss.from_recipe(self.recipe)
        fmt = devices.memory_format(device)

        keyed = hasattr(labeler, "source_step")  # stored labels are looked up by step

        def loss_fn(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            x, hard, _, step = batch
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            hard = hard.to(device, non_blocking=True)
            soft = labeler(x, step) if keyed else labeler(x)
            with devices.autocast(device):
                logits = model(x)
            return criterion(logits, soft, hard)

        return loss_fn

    def _diverged(self, step: int, value: float) -> None:
        raise HellopackError(f"training diverged at step {step} (loss {value}); lower --lr (now {self.recipe.lr})")

    # -- pieces ----------------------------------------------------------------------------------

    def _augmenter(self) -> Augmenter:
        return Augmenter.from_recipe(self.recipe, self.num_classes)

    def _evaluate(self, student: nn.Module, epoch: int, step: int, loss_sum: torch.Tensor, scheduler: Any,
                  out: Path, history: list[dict]) -> dict[str, Any]:
        loss_sum = reduce_sum(loss_sum, self.device)
        res = self.evaluator(student)
        row = {"epoch": epoch, "step": step, **res.to_json(),
               "train_loss": (loss_sum[0] / loss_sum[1]).item() if loss_sum[1] > 0 else None,
               "lr": scheduler.get_last_lr()[0]}
        if self.info.is_main:
            _write_jsonl(out / "metrics.jsonl", history + [row])
        self.reporter.info(f"epoch {epoch}: top-1 {res.top1:.2f}%  top-5 {res.top5:.2f}%  ({res.evaluated_on})")
        return row

    def _save(self, folder: Path, seed: int, student: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              epoch: int, step: int, elapsed: float) -> None:
        rng_cpu = dist.all_gather_objects(torch.get_rng_state())
        rng = {f"rank{r}.cpu": s for r, s in enumerate(rng_cpu)}
        if self.device.type == "cuda":
            for r, s in enumerate(dist.all_gather_objects(torch.cuda.get_rng_state(self.device).cpu())):
                rng[f"rank{r}.cuda"] = s
        if self.info.is_main:
            meta = {"epoch": epoch, "step": step, "train_seconds": elapsed, "world_size": self.info.world_size,
                    **self.identity(seed)}
            ckpt.save(folder, student, optimizer, scheduler, rng, meta)
        dist.barrier()

    def _load_checkpoint(self, folder: Path, seed: int) -> ckpt.Checkpoint | None:
        if not ckpt.exists(folder):
            if self.cfg.resume:
                self.reporter.info(f"no checkpoint in {folder}: starting from scratch")
            return None
        if not self.cfg.resume:
            raise HellopackError(f"'{folder.parent}' already holds a training run; pass --resume to continue it "
                                 "or choose another --out")
        c = ckpt.load(folder)
        want = self.identity(seed)
        for key, value in want.items():
            if c.meta.get(key) != value:
                detail = key
                if key == "recipe":
                    diff = [k for k in value if c.meta.get("recipe", {}).get(k) != value[k]]
                    detail = f"recipe ({', '.join(diff)})"
                raise HellopackError(f"checkpoint in '{folder}' was made with a different {detail}; resume with the "
                                     "same archive, --arch, --seed and recipe, or choose another --out")
        return c

    def _restore(self, c: ckpt.Checkpoint, student: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any) -> tuple[int, int, float]:
        student.load_state_dict(c.model)
        optimizer.load_state_dict(c.optimizer)
        scheduler.load_state_dict(c.scheduler)
        rank = self.info.rank if c.meta.get("world_size") == self.info.world_size else 0
        if f"rank{rank}.cpu" in c.rng:
            torch.set_rng_state(c.rng[f"rank{rank}.cpu"])
        if self.device.type == "cuda" and f"rank{rank}.cuda" in c.rng:
            torch.cuda.set_rng_state(c.rng[f"rank{rank}.cuda"], self.device)
        return int(c.meta["epoch"]), int(c.meta["step"]), float(c.meta.get("train_seconds", 0.0))

    def _result(self, seed: int, out: Path, history: list[dict], step: int, elapsed: float, *,
                stopped_early: bool) -> dict[str, Any]:
        final = history[-1]
        best = max(history, key=lambda h: h["top1"])
        images = steps_images(len(self.images), self.recipe.batch_size, self.cfg.drop_last, step)
        return {
            "top1": final["top1"],
            "top5": final["top5"],
            "epoch": final["epoch"],
            "evaluated_on": final["evaluated_on"],
            "images_evaluated": final["images"],
            "headline": "final epoch's accuracy",
            "best_of_epochs": {"top1": best["top1"], "top5": best["top5"], "epoch": best["epoch"],
                               "note": "best over the evaluated epochs; for reference only, not the headline"},
            "arch": self.cfg.arch,
            "seed": seed,
            "labels": self.recipe.labels,
            "stopped_early": stopped_early,
            "archive": {"path": self.archive_path, "dataset": (self.manifest.get("dataset") or {}).get("name"),
                        "classes": self.num_classes, "images": len(self.images),
                        "manifest_sha256": self.manifest_sha256},
            "recipe": self.recipe.to_json(),
            "config": self.cfg.to_json(),
            "timing": {"train_seconds": elapsed, "steps": step, "images_seen": images,
                       "images_per_second": images / elapsed if elapsed > 0 else None,
                       "world_size": self.info.world_size},
            "out": str(out),
        }


def augment_config(r: Recipe, num_classes: int) -> AugmentConfig:
    """The augmentation a recipe asks for (train's, and `labels record`'s, which must draw the same views)."""
    return Augmenter.from_recipe(r, num_classes).cfg


def _cuda(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _derived_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), 0x64726F70]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
