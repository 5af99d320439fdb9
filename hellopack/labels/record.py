"""`hellopack labels record`: label the exact views `hellopack train` will draw, and store them.

The views come from train's own pieces (``StepBatches`` with train's augmentation for the
recipe, seed and batch size: a pure function of (seed, step)), labelled by the archive's
projector or by teachers (train's ``build_labeler``), for ``epochs`` epochs. Each kept view is
stored with its augmentation record and its top-K fp16 log-probabilities (plus the logits'
log-sum-exp; hellopack.labels.format); LPLD's pruning keeps a seeded fraction of the steps
(hellopack.labels.prune). ``plan`` gives the exact header, so the file's bytes are known before
any model runs (``format.file_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hellopack import dist
from hellopack.errors import HellopackError
from hellopack.labels import format as fmt
from hellopack.labels.prune import kept_steps
from hellopack.labels.views import RecordingAugmenter, shuffle_width
from hellopack.progress import NULL, Reporter
from hellopack.train.config import Recipe, TrainConfig
from hellopack.train.images import steps_images, steps_per_epoch
from hellopack.train.run import augment_config, manifest_sha256

SOURCES = ("projector", "teacher")


@dataclass(frozen=True)
class RecordConfig:
    """``train``: the run whose views are labelled (archive, seed, recipe overrides, --labels, device).
    Its ``arch`` is not used: the views and labels do not depend on the student."""

    train: TrainConfig
    top_k: int
    out: str
    keep: float = 1.0  # fraction of the steps whose labels are kept (LPLD)


def identity(cfg: TrainConfig, recipe: Recipe, manifest: dict, n_images: int) -> dict[str, Any]:
    """What train must agree on to use the file: the archive, the seed and everything that draws a view."""
    aug = augment_config(recipe, len(manifest["classes"]))
    return {"archive_manifest_sha256": manifest_sha256(manifest), "seed": cfg.seed, "world_size": 1,
            "images_source": cfg.images, "images_per_class": per_class(cfg, manifest),
            "epochs": recipe.epochs, "batch_size": recipe.batch_size, "drop_last": cfg.drop_last,
            "images": n_images, "classes": aug.num_classes, "image_size": aug.size,
            "crop_scale": list(aug.crop_scale), "flip": aug.flip, "factor": aug.factor,
            "patch_shuffle": aug.patch_shuffle, "shuffle": aug.shuffle, "mix": aug.mix, "mix_alpha": aug.mix_alpha}


def per_class(cfg: TrainConfig, manifest: dict) -> int | None:
    """--images random: the real images drawn per class (train's rule: --images-per-class, else the IPC)."""
    if cfg.images != "random":
        return None
    return cfg.images_per_class or int((manifest.get("images") or {}).get("ipc") or 0) or None


def planned_images(cfg: TrainConfig, manifest: dict) -> int:
    """How many images the views are drawn from: the archive's, or IPC real images per class (--images random)."""
    if cfg.images == "random":
        return int(per_class(cfg, manifest) or 0) * len(manifest["classes"])
    return int(manifest["images"]["count"])


def plan(cfg: RecordConfig, manifest: dict, recipe: Recipe) -> tuple[dict[str, Any], np.ndarray]:
    """The file's exact header and the kept steps, from the manifest alone (nothing is run)."""
    from hellopack.archive.storage import label_storage

    classes = len(manifest["classes"])
    _check(cfg, classes)
    n = planned_images(cfg.train, manifest)
    bs, drop = recipe.batch_size, cfg.train.drop_last
    spe = steps_per_epoch(n, bs, drop)
    if spe == 0:
        raise HellopackError(f"--batch-size {bs} is larger than the archive's {n} images; use {n} or smaller")
    total = recipe.epochs * spe
    kept = kept_steps(total, cfg.keep, cfg.train.seed)
    views = int(sum(steps_images(n, bs, drop, int(s) + 1) - steps_images(n, bs, drop, int(s)) for s in kept))
    layout = fmt.Layout(steps=len(kept), views=views, top_k=cfg.top_k, mix=recipe.mix,
                        shuffle_width=shuffle_width(augment_config(recipe, classes), recipe.image_size))
    all_views = steps_images(n, bs, drop, total)
    header = {
        "format": fmt.FORMAT, "version": fmt.VERSION, "layout": layout.to_json(),
        # the digest of the uint8 images the views were drawn from, filled in by record (fixed length:
        # the byte count stays exact); train refuses other images (another subset, another decoder)
        "identity": {**identity(cfg.train, recipe, manifest, n), "images_sha256": "0" * 64},
        "source": {"labels": recipe.labels, "teachers": list(recipe.teachers)},
        "values": "top-k log-probabilities (fp16, largest first), their classes (u16), the logits' log-sum-exp (fp16)",
        "keep": cfg.keep, "steps_total": total, "views_total": all_views,
        "kept_fraction": views / all_views,
        "archive": {"dataset": (manifest.get("dataset") or {}).get("name"),
                    "label_payload_bytes": label_storage(manifest).payload_bytes},
    }
    return header, kept


def _check(cfg: RecordConfig, classes: int) -> None:
    t = cfg.train
    if t.labels not in SOURCES:
        raise HellopackError(f"--labels '{t.labels}' cannot be recorded; use projector or teacher")
    if not 1 <= cfg.top_k <= classes:
        raise HellopackError(f"--top-k {cfg.top_k} is outside 1..{classes} (the archive's class count)")
    if classes > fmt.MAX_CLASSES:
        raise HellopackError(f"the archive has {classes} classes; stored labels hold at most {fmt.MAX_CLASSES}")
    if t.images == "full":
        raise HellopackError("--images full cannot be recorded (every real image, epochs of views); "
                             "record --images archive or random")
    if not 0.0 < cfg.keep <= 1.0:
        raise HellopackError(f"--keep {cfg.keep} must be in (0, 1]: the fraction of the views whose labels are kept")


def record(cfg: RecordConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Label and write; returns the header plus ``file_bytes`` and ``path``."""
    from hellopack.device import resolve_device
    from hellopack.train.images import StepBatches
    from hellopack.train.source import TrainingImages
    from hellopack.train.labelers import TeacherSet, build_labeler
    from hellopack.train.loop import open_run_archive

    t = cfg.train
    out = Path(cfg.out)
    if out.is_dir():
        raise HellopackError(f"--out '{out}' is a folder; name the label file, e.g. {out / 'labels.hplabels'}")
    archive = open_run_archive(t, reporter, dist.DistInfo())
    manifest = archive.manifest
    recipe = t.resolve(manifest)
    header, kept = plan(cfg, manifest, recipe)  # bad --top-k / --keep fail before any loading
    device = resolve_device(t.device)
    classes = len(manifest["classes"])
    labeler = build_labeler(recipe.labels, archive=archive, device=device, clip_weights=t.clip_weights,
                            teachers=TeacherSet(recipe.teachers, classes, recipe.image_size, recipe.mean, recipe.std),
                            allow_base_mismatch=t.allow_base_mismatch, warn=reporter.warn)
    images, labels, _ = TrainingImages(t, archive, recipe, reporter).for_seed(t.seed)  # as train draws them
    if len(images) != header["identity"]["images"]:
        raise HellopackError(f"--images {t.images} gave {len(images)} images, the plan expected "
                             f"{header['identity']['images']}; every class needs --images-per-class images")
    header["identity"]["images_sha256"] = images_sha256(images)
    aug = RecordingAugmenter(augment_config(recipe, classes))
    batches = StepBatches(images, labels, aug, recipe.batch_size, t.drop_last, t.seed, 0, 1)
    arrays = label_views(batches, labeler, kept, cfg.top_k, reporter, device)
    written = fmt.write(out, header, arrays)
    return {**header, "file_bytes": written, "path": str(out)}


def images_sha256(images: torch.Tensor) -> str:
    """The digest of a uint8 [N,3,H,W] image tensor (C order): which pixels the views were drawn from."""
    import hashlib

    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def label_views(batches: Any, labeler: Any, kept: np.ndarray, top_k: int, reporter: Reporter,
                device: torch.device) -> dict[str, np.ndarray]:
    """Every section's array: each kept step's views drawn as train draws them, recorded and labelled."""
    from hellopack.train.augment import step_generator

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("mix", "image", "crop", "flip", "shuffle", "lse",
                                                          "values", "classes")}
    total = int(sum(len(batches.indices(int(s))) for s in kept))
    with reporter.stage("label views", total=total, unit="img") as stage:
        for s in kept:
            idx = batches.indices(int(s))
            x, _, rec = batches.augmenter.record(batches.images[idx], batches.labels[idx],
                                                 step_generator(batches.seed, int(s), batches.rank))
            logits = labeler(x.to(device)).float().cpu()
            lse = torch.logsumexp(logits, dim=1)
            top = torch.topk(logits - lse[:, None], top_k, dim=1)  # log-probabilities: fp16 is finest near 0
            parts["mix"].append(rec.mix[None])
            parts["image"].append(idx.numpy())
            parts["crop"].append(rec.crop)
            parts["flip"].append(rec.flip)
            parts["shuffle"].append(rec.shuffle)
            parts["lse"].append(lse.half().numpy())
            parts["values"].append(top.values.half().numpy())
            parts["classes"].append(top.indices.numpy().astype("<u2"))
            stage.advance(len(idx))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["steps"] = kept.astype("<u4")
    return arrays
