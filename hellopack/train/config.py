"""What `hellopack train` was asked to do, and the effective recipe after the manifest fills the gaps.

Recipe fields left as ``None`` come from the archive's ``manifest["recipe"]``
(what the builder recommends), falling back to RDED's evaluation protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from hellopack.errors import HellopackError

# RDED's evaluation protocol: used only when the manifest has no recipe entry.
FALLBACK_RECIPE: dict[str, Any] = {
    "epochs": 300,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.01,
    "schedule": "cosine",
    "batch_size": 100,
    "loss": "mse",
    "beta": 0.1,
    "temperature": 20.0,
    "mix": "cutmix",
    "patch_shuffle": True,
}

SMALL_IMAGE_MAX = 64
SMALL_IMAGE_CROP_SCALE = (0.5, 1.0)

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
LOSSES = ("mse", "kl")
LABELS = ("projector", "teacher", "hard")
MIXES = ("cutmix", "mixup", "none")


@dataclass(frozen=True)
class TrainConfig:
    archive: str  # path or http(s) URL (optionally ending in #sha256=<hex>)
    arch: str
    out: str | None = None  # default: "<archive stem>-<arch>" in the working directory
    val: str | None = None  # path (ImageFolder / WebDataset shards), "RECIPE:PATH" or a recipe name
    val_recipe: str | None = None  # force the recipe used to read --val
    # recipe: None = the archive's recommendation
    epochs: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    batch_size: int | None = None
    loss: str | None = None
    beta: float | None = None
    temperature: float | None = None
    mix: str | None = None
    patch_shuffle: bool | None = None
    # not in the manifest
    momentum: float = 0.9  # SGD only
    mix_alpha: float = 1.0
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop scale; None: by image size (see below)
    labels: str = "projector"
    teacher: str | tuple[str, ...] | None = None  # "ARCH:CKPT" (several: a tuple or comma-separated)
    seeds: int = 1
    seed: int = 0
    eval_every: int = 10  # epochs; the last epoch is always evaluated
    eval_batch_size: int | None = None  # default: the training batch size
    workers: int = 0
    device: str = "auto"
    compile: bool = False
    clip_weights: str | None = None
    allow_base_mismatch: bool = False
    resume: bool = False
    cache_dir: str | None = None
    drop_last: bool = True
    max_steps: int | None = None  # stop after this many optimizer steps (tests, smoke runs)

    def teacher_specs(self) -> tuple[str, ...]:
        if self.teacher is None:
            return ()
        if isinstance(self.teacher, str):
            return tuple(s.strip() for s in self.teacher.split(",") if s.strip())
        return tuple(self.teacher)

    def resolve(self, manifest: Mapping[str, Any]) -> "Recipe":
        """Fill every ``None`` recipe field from the manifest, validate, and return the effective values."""
        stored = dict(FALLBACK_RECIPE)
        stored.update({k: v for k, v in (manifest.get("recipe") or {}).items() if v is not None})
        images = manifest.get("images") or {}
        values = {k: getattr(self, k) if getattr(self, k) is not None else stored[k] for k in FALLBACK_RECIPE}
        r = Recipe(
            epochs=int(values["epochs"]),
            optimizer=str(values["optimizer"]).lower(),
            lr=float(values["lr"]),
            weight_decay=float(values["weight_decay"]),
            schedule=str(values["schedule"]).lower(),
            batch_size=int(values["batch_size"]),
            loss=str(values["loss"]).lower(),
            beta=float(values["beta"]),
            temperature=float(values["temperature"]),
            mix=str(values["mix"]).lower(),
            patch_shuffle=bool(values["patch_shuffle"]),
            momentum=float(self.momentum),
            mix_alpha=float(self.mix_alpha),
            crop_scale=self._crop_scale(int(images.get("size", 0))),
            labels=self.labels,
            teachers=self.teacher_specs(),
            image_size=int(images.get("size", 0)),
            factor=int(images.get("factor", 1) or 1),
            mean=tuple(float(v) for v in images.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(float(v) for v in images.get("std", (0.5, 0.5, 0.5))),
        )
        self._validate(r)
        return r

    def _crop_scale(self, size: int) -> tuple[float, float]:
        """RDED's ImageNet protocol crops (0.08, 1); at <= 64 px a 0.08 crop is a few pixels of noise
        (9 px of a 32-px image), so small images keep at least half their area."""
        if self.crop_scale is not None:
            return (float(self.crop_scale[0]), float(self.crop_scale[1]))
        return SMALL_IMAGE_CROP_SCALE if size <= SMALL_IMAGE_MAX else (0.08, 1.0)

    def _validate(self, r: "Recipe") -> None:
        def choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
            if value not in valid:
                raise HellopackError(f"--{flag} '{value}' is not one of {', '.join(valid)}")

        choice("optimizer", r.optimizer, OPTIMIZERS)
        choice("schedule", r.schedule, SCHEDULES)
        choice("loss", r.loss, LOSSES)
        choice("labels", r.labels, LABELS)
        choice("mix", r.mix, MIXES)
        positive = {"epochs": r.epochs, "batch-size": r.batch_size, "lr": r.lr, "temperature": r.temperature,
                    "seeds": self.seeds, "eval-every": self.eval_every}
        for flag, v in positive.items():
            if not v > 0:
                raise HellopackError(f"--{flag} must be positive, got {v}")
        for flag, v in {"weight-decay": r.weight_decay, "beta": r.beta, "workers": self.workers}.items():
            if v < 0:
                raise HellopackError(f"--{flag} must be zero or positive, got {v}")
        lo, hi = r.crop_scale
        if not 0 < lo <= hi <= 1:
            raise HellopackError(f"crop scale {r.crop_scale} must satisfy 0 < min <= max <= 1")
        if r.labels == "teacher" and not r.teachers:
            raise HellopackError("--labels teacher needs --teacher ARCH:CHECKPOINT")
        if r.labels != "teacher" and r.teachers:
            raise HellopackError(f"--teacher is only used with --labels teacher (got --labels {r.labels})")
        if r.image_size <= 0:
            raise HellopackError("archive manifest has no images.size; rebuild the archive with a current hellopack")
        if self.max_steps is not None and self.max_steps <= 0:
            raise HellopackError(f"max_steps must be positive, got {self.max_steps}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale) if self.crop_scale is not None else None
        d["teacher"] = list(self.teacher_specs()) or None
        return d


@dataclass(frozen=True)
class Recipe:
    """The effective training recipe (manifest defaults + user overrides), recorded in result.json."""

    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    batch_size: int
    loss: str
    beta: float
    temperature: float
    mix: str
    patch_shuffle: bool
    momentum: float
    mix_alpha: float
    crop_scale: tuple[float, float]
    labels: str
    teachers: tuple[str, ...]
    image_size: int
    factor: int
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("crop_scale", "teachers", "mean", "std"):
            d[k] = list(d[k])
        return d
