"""`hellopack train`: train a student on an archive's images with labels generated for every augmented batch.

Read top to bottom: open the archive, resolve the recipe, load the images into
memory, rebuild the labeler, then for each seed run the epoch loop
(augment -> label -> loss -> step), evaluating every few epochs and
checkpointing every epoch. Every batch is a pure function of (seed, step,
rank), and the global RNG (dropout) is saved in the checkpoint, so a resumed
run continues bit-exactly on CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from hellopack import device as devices
from hellopack import dist
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import NULL, Reporter
from hellopack.train import checkpoint as ckpt
from hellopack.train.augment import AugmentConfig, Augmenter, step_generator
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.core import TrainStep, run_steps
from hellopack.train.evaluate import Evaluator, archive_evaluator, reduce_sum, val_evaluator
from hellopack.train.fetch import resolve_archive
from hellopack.train.labelers import Labeler, build_labeler
from hellopack.train import protocol as proto
from hellopack.train.losses import student_loss
from hellopack.train.runs import default_run_name, input_size_note


def train(cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train ``cfg.seeds`` students; return result.json's content (a mean/std summary for several seeds)."""
    with dist.session(cfg.device) as (device, info):
        return _train(cfg, reporter if info.is_main else NULL, device, info)


def train_student(cfg: TrainConfig, recipe: Recipe, *, manifest: dict, archive_path: str, images: torch.Tensor,
                  labels: torch.Tensor, labeler: Labeler, evaluator: Evaluator, out: Path, device: torch.device,
                  info: dist.DistInfo, reporter: Reporter = NULL, num_classes: int | None = None,
                  identity_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one student (seed ``cfg.seed``) on already prepared pieces into ``out``; result.json's content.

    For callers that train on a part of an archive (``hellopack eval continual``): ``labels``
    are 0..num_classes-1 (default: the manifest's class count), ``labeler`` and ``evaluator``
    must speak the same classes, and ``identity_extra`` joins the checkpoint identity so a
    resume refuses a checkpoint made for another part. Resume rules are train's.
    """
    run = _Run(cfg=cfg, recipe=recipe, manifest=manifest, archive_path=archive_path, images=images, labels=labels,
               labeler=labeler, evaluator=evaluator, device=device, info=info, reporter=reporter,
               num_classes=num_classes, identity_extra=identity_extra)
    return run.one_seed(cfg.seed, out)


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def run_identity(cfg: TrainConfig, recipe: Recipe, manifest_sha: str, seed: int,
                 identity_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (stored in its meta)."""
    settings = {k: v for k, v in recipe.to_json().items() if k != "lr_source"}  # lr_source only describes
    return {"arch": cfg.arch, "seed": seed, "recipe": settings, "archive_manifest_sha256": manifest_sha,
            **(identity_extra or {})}


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
    if not cfg.resume:  # fail before minutes of loading, not after
        for out in outs:
            if ckpt.exists(out / "checkpoints"):
                raise HellopackError(f"'{out}' already holds a training run; pass --resume to continue it "
                                     "or choose another --out")
    eval_bs = cfg.eval_batch_size or recipe.batch_size
    evaluator: Evaluator | None = None
    if cfg.val is not None:  # opened first: a wrong --val fails before minutes of loading
        evaluator = val_evaluator(cfg.val, cfg.val_recipe, manifest, recipe.image_size, eval_bs, cfg.workers,
                                  device, info.rank, info.world_size, resize=recipe.val_resize,
                                  max_images=cfg.val_images)
    labeler = build_labeler(recipe.labels, archive=archive, teachers=recipe.teachers, num_classes=num_classes,
                            image_size=recipe.image_size, mean=recipe.mean, std=recipe.std, device=device,
                            clip_weights=cfg.clip_weights, allow_base_mismatch=cfg.allow_base_mismatch,
                            warn=reporter.warn)
    images, labels = load_archive_images(archive, recipe.image_size, num_classes, reporter)
    _check_batch_size(len(images), recipe.batch_size, cfg.drop_last, info.world_size)
    if evaluator is None:
        evaluator = archive_evaluator(images, labels, num_classes, eval_bs, device, info.rank, info.world_size)
        reporter.info("no --val given: accuracy is measured on the archive's own images (not a test accuracy)")

    run = _Run(cfg=cfg, recipe=recipe, manifest=manifest, archive_path=str(archive.path), images=images,
               labels=labels, labeler=labeler, evaluator=evaluator, device=device, info=info, reporter=reporter)
    results = [run.one_seed(seed, out) for seed, out in zip(seeds, outs)]
    if len(seeds) == 1:
        return results[0]
    summary = summarize(results, cfg, recipe)
    if info.is_main:
        _write_json(out_root / "result.json", summary)
    return summary


# ---- setup -------------------------------------------------------------------------------------

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
    return open_archive(path)


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


def load_archive_images(archive: Any, size: int, num_classes: int,
                        reporter: Reporter = NULL) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every archive image into one uint8 tensor [N,3,size,size] plus class ids [N]."""
    count = int((archive.manifest.get("images") or {}).get("count", 0))
    arrays: list[np.ndarray] = []
    classes: list[int] = []
    with reporter.stage("load images", total=count or None, unit="img") as stage:
        for rec in archive.iter_images():
            try:
                with Image.open(io.BytesIO(rec.data)) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise HellopackError(f"archive '{archive.path}': image {rec.key} cannot be decoded ({e}); "
                                     "the archive is damaged, download or rebuild it") from None
            if arr.shape[:2] != (size, size):
                raise HellopackError(f"archive '{archive.path}': image {rec.key} is {arr.shape[1]}x{arr.shape[0]}, "
                                     f"the manifest says {size}x{size}; the archive is inconsistent, rebuild it")
            if not 0 <= int(rec.cls) < num_classes:
                raise HellopackError(f"archive '{archive.path}': image {rec.key} has class {rec.cls}, outside "
                                     f"0..{num_classes - 1}; the archive is inconsistent, rebuild it")
            arrays.append(arr)
            classes.append(int(rec.cls))
            stage.advance(1)
    if not arrays:
        raise HellopackError(f"archive '{archive.path}' holds no images; rebuild it")
    if count and count != len(arrays):
        raise HellopackError(f"archive '{archive.path}': manifest says {count} images but images.tar holds "
                             f"{len(arrays)}; the archive is damaged, download or rebuild it")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(classes, dtype=torch.long)


def steps_per_epoch(n_images: int, batch_size: int, drop_last: bool) -> int:
    return n_images // batch_size if drop_last else math.ceil(n_images / batch_size)


def steps_images(n_images: int, batch_size: int, drop_last: bool, steps: int) -> int:
    """Images (over all processes) in the first ``steps`` global batches."""
    spe = steps_per_epoch(n_images, batch_size, drop_last)
    epochs, rest = divmod(steps, spe)
    per_epoch = spe * batch_size if drop_last else n_images
    return epochs * per_epoch + min(rest * batch_size, n_images)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # a stream apart from the per-step generators: no process has rank 2**31 - 1
    return torch.randperm(n, generator=step_generator(seed, epoch, rank=2**31 - 1))


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` = this process's augmented shard of global batch ``step``: (x01, hard targets, class ids).

    A pure function of (seed, step, rank), so workers, restarts and resumes all see the same batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augmenter: Augmenter, batch_size: int,
                 drop_last: bool, seed: int, rank: int, world: int) -> None:
        self.images, self.labels, self.augmenter = images, labels, augmenter
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.drop_last = drop_last
        self.steps_per_epoch = steps_per_epoch(len(images), batch_size, drop_last)
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def images_until(self, step: int) -> int:
        return steps_images(len(self.images), self.batch_size, self.drop_last, step)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, epoch_permutation(len(self.images), self.seed, epoch)
        idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        idx = idx.tensor_split(self.world)[self.rank]
        x, hard = self.augmenter(self.images[idx], self.labels[idx], step_generator(self.seed, step, self.rank))
        return x, hard, self.labels[idx]


# ---- one seed ----------------------------------------------------------------------------------

class _Run:
    def __init__(self, *, cfg: TrainConfig, recipe: Recipe, manifest: dict, archive_path: str, images: torch.Tensor,
                 labels: torch.Tensor, labeler: Labeler, evaluator: Evaluator, device: torch.device,
                 info: dist.DistInfo, reporter: Reporter, num_classes: int | None = None,
                 identity_extra: dict[str, Any] | None = None) -> None:
        self.cfg, self.recipe, self.manifest, self.archive_path = cfg, recipe, manifest, archive_path
        self.images, self.labels, self.labeler, self.evaluator = images, labels, labeler, evaluator
        self.device, self.info, self.reporter = device, info, reporter
        self.num_classes = len(manifest["classes"]) if num_classes is None else num_classes
        self.identity_extra = identity_extra
        self.manifest_sha256 = manifest_sha256(manifest)

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
            return self._epochs(seed, out, student, model, optimizer, scheduler, batches, epoch, step, total_steps,
                                history, elapsed)

    def _epochs(self, seed: int, out: Path, student: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, batches: StepBatches, start_epoch: int, step: int, total_steps: int,
                history: list[dict], elapsed: float) -> dict[str, Any]:
        cfg, recipe = self.cfg, self.recipe
        spe = batches.steps_per_epoch
        stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, sampler=range(step, stop_at), num_workers=cfg.workers,
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
                run_steps(train_step, ((i, next(batch_iter)) for i in range(step, end)), on_step)
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
        """A step's loss: label the augmented batch, then MSE/KL + beta * CE (or CE alone)."""
        recipe, device = self.recipe, self.device

        def loss_fn(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            x, hard, _ = batch
            x = x.to(device, non_blocking=True).contiguous(memory_format=devices.memory_format(device))
            hard = hard.to(device, non_blocking=True)
            soft = self.labeler(x)
            with devices.autocast(device):
                logits = model(x)
            return student_loss(logits, soft, hard, loss=recipe.loss, beta=recipe.beta,
                                temperature=recipe.temperature)

        return loss_fn

    def _diverged(self, step: int, value: float) -> None:
        raise HellopackError(f"training diverged at step {step} (loss {value}); lower --lr (now {self.recipe.lr})")

    # -- pieces ----------------------------------------------------------------------------------

    def _augmenter(self) -> Augmenter:
        r = self.recipe
        return Augmenter(AugmentConfig(size=r.image_size, num_classes=self.num_classes, crop_scale=r.crop_scale,
                                       factor=r.factor, patch_shuffle=r.patch_shuffle, mix=r.mix,
                                       mix_alpha=r.mix_alpha,
                                       shuffle="patches" if r.protocol == proto.LEGACY else "strips"))

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
