"""What `hellopack train` was asked to do, and the effective recipe after the manifest fills the gaps.

Recipe fields left as ``None`` come from the archive's ``manifest["recipe"]`` (what the
builder recommends: RDED's evaluation protocol, hellopack.train.protocol); keys an older
archive lacks keep the meaning they had when it was written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, make_dataclass
from typing import Any, Mapping

from hellopack.archive import recipe as settings
from hellopack.errors import HellopackError
from hellopack.train import protocol as proto

# the allowed values are declared once, with the recipe (hellopack.archive.recipe)
OPTIMIZERS, SCHEDULES, MIXES, DECAYS = settings.OPTIMIZERS, settings.SCHEDULES, settings.MIXES, settings.DECAYS
LOSSES = settings.choices("loss", legacy=True)
LABELS = ("projector", "teacher", "hard")
# what a student trains on: the archive's images, IPC real images per class drawn per seed, or all real images
IMAGES = ("archive", "random", "full")
# What an archive's recipe means when a key is absent (see hellopack.archive.recipe.LEGACY).
FALLBACK_RECIPE: dict[str, Any] = settings.LEGACY

# The recipe overrides: one keyword-only field per recipe setting (None = the archive's recommendation),
# except lr_by_arch (--lr replaces the lr whatever its source), plus the --val images' resize.
_RecipeOverrides = make_dataclass("_RecipeOverrides", [
    *settings.setting_fields(overrides=True, skip=("lr_by_arch",)),
    # --val: shorter side before the centre crop (RDED: size // 7 * 8)
    ("val_resize", int | None, field(default=None, kw_only=True)),
], frozen=True)
_RecipeOverrides.__module__ = __name__
OVERRIDES: tuple[str, ...] = tuple(n for n in settings.NAMES if n != "lr_by_arch") + ("val_resize",)


@dataclass(frozen=True)
class TrainConfig(_RecipeOverrides):
    archive: str  # path or http(s) URL (optionally ending in #sha256=<hex>)
    arch: str
    out: str | None = None  # default: "<archive stem>-<arch>" in the working directory
    val: str | None = None  # path (ImageFolder / WebDataset shards), "RECIPE:PATH" or a recipe name
    val_recipe: str | None = None  # force the recipe used to read --val
    # not in the manifest
    momentum: float = 0.9  # SGD only
    labels: str = "projector"
    images: str = "archive"  # one of IMAGES; random and full read data_dir (hellopack.train.source)
    data_dir: str | None = None  # --images random/full: the archive's source dataset (its training split)
    data_recipe: str | None = None  # the recipe that reads data_dir (default: the manifest's dataset.recipe)
    images_per_class: int | None = None  # --images random: how many per class (default: the archive's IPC)
    teacher: str | tuple[str, ...] | None = None  # "ARCH:CKPT" (several: a tuple or comma-separated)
    teachers_dir: str | None = None  # a `hellopack teach` trajectory: all its checkpoints
    seeds: int = 1
    seed: int = 0
    eval_every: int = 10  # epochs; the last epoch is always evaluated
    eval_batch_size: int | None = None  # default: the training batch size
    val_images: int | None = None  # evaluate on the first N --val images only (quick runs)
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
        """``--teacher`` specs, then the checkpoints of ``--teachers-dir`` (a `hellopack teach` output)."""
        if self.teacher is None:
            given: tuple[str, ...] = ()
        elif isinstance(self.teacher, str):
            given = tuple(s.strip() for s in self.teacher.split(",") if s.strip())
        else:
            given = tuple(self.teacher)
        if self.teachers_dir is None:
            return given
        from hellopack.distill.teachers import dir_specs

        return given + tuple(dir_specs(self.teachers_dir))

    def resolve(self, manifest: Mapping[str, Any]) -> "Recipe":
        """Fill every ``None`` recipe field from the manifest, validate, and return the effective values.

        An archive's recipe names its ``protocol``; one without it predates the RDED protocol
        and its absent keys keep their old meaning (see hellopack.train.protocol).
        """
        given = {k: v for k, v in (manifest.get("recipe") or {}).items() if v is not None}
        stored = {**FALLBACK_RECIPE, **given}
        legacy = "protocol" not in given
        images = manifest.get("images") or {}
        size = int(images.get("size", 0))

        def pick(name: str, default: Any = None) -> Any:
            mine = getattr(self, name)
            return mine if mine is not None else stored.get(name, default)

        mix = str(pick("mix")).lower()
        mix_changed = self.mix is not None and mix != str(stored["mix"]).lower()
        loss = str(pick("loss")).lower()
        if legacy and self.loss is None and loss == "kl":
            loss = "kl-t2"  # what `--loss kl` meant before: T^2 * KL + beta * CE
        if self.beta is not None:
            beta = self.beta
        elif loss == "kl" and (legacy or str(stored["loss"]).lower() != "kl"):
            beta = 0.0  # RDED's KL has no CE term unless --beta asks for one
        else:
            beta = stored["beta"]
        if self.lr is not None:
            lr, lr_source = self.lr, "--lr"
        elif stored.get("lr_by_arch"):
            lr = proto.lr_for(self.arch, float(stored["lr"]))
            known = self.arch in proto.RDED_LR
            lr_source = f"RDED's AdamW lr for {self.arch}" if known else f"the archive's lr ({self.arch} is not in RDED's table)"
        else:
            lr, lr_source = stored["lr"], "the archive's lr"
        # a --mix other than the archive's takes RDED's temperature and strength for that mix
        if self.temperature is not None:
            temperature = self.temperature
        else:
            temperature = proto.TEMPERATURE.get(mix, 20.0) if mix_changed else stored["temperature"]
        if self.mix_alpha is not None:
            mix_alpha = self.mix_alpha
        else:
            mix_alpha = proto.MIX_ALPHA.get(mix, 1.0) if mix_changed else stored.get("mix_alpha", 1.0)
        if self.crop_scale is not None:
            crop = self.crop_scale
        elif "crop_scale" in given:
            crop = given["crop_scale"]
        else:
            crop = proto.legacy_crop_scale(size)
        r = Recipe(
            epochs=int(pick("epochs")),
            optimizer=str(pick("optimizer")).lower(),
            lr=float(lr),
            weight_decay=float(pick("weight_decay")),
            schedule=str(pick("schedule")).lower(),
            batch_size=int(pick("batch_size")),
            loss=loss,
            beta=float(beta),
            temperature=float(temperature),
            mix=mix,
            patch_shuffle=bool(pick("patch_shuffle")),
            momentum=float(self.momentum),
            mix_alpha=float(mix_alpha),
            crop_scale=_pair(crop),
            labels=self.labels,
            teachers=self.teacher_specs(),
            image_size=size,
            factor=int(images.get("factor", 1) or 1),
            mean=tuple(float(v) for v in images.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(float(v) for v in images.get("std", (0.5, 0.5, 0.5))),
            decay=str(pick("decay", "all")).lower(),
            val_resize=self.val_resize if self.val_resize is not None else (
                None if given.get("val_resize") is None else int(given["val_resize"])),
            protocol=proto.LEGACY if legacy else str(given["protocol"]),
            lr_source=lr_source,
        )
        self._validate(r)
        return r

    def _validate(self, r: "Recipe") -> None:
        for name in OVERRIDES[:-1]:  # the recipe settings; --val-resize needs the image size, below
            wrong = settings.problem(name, getattr(r, name), legacy=True)
            if wrong is None:
                continue
            flag = "--" + name.replace("_", "-")
            if getattr(self, name) is not None:
                raise HellopackError(f"{flag} {wrong}")
            # not the user's flag: say where the value came from and how to replace it
            raise HellopackError(f"the archive's recipe {name} {wrong}; pass {flag} to override it")
        if r.labels not in LABELS and not (r.labels.startswith("stored:") and len(r.labels) > len("stored:")):
            raise HellopackError(f"--labels '{r.labels}' is not one of {', '.join(LABELS)}, stored:FILE")
        for flag, v in {"seeds": self.seeds, "eval-every": self.eval_every}.items():
            if not v > 0:
                raise HellopackError(f"--{flag} must be positive, got {v}")
        if self.workers < 0:
            raise HellopackError(f"--workers must be zero or positive, got {self.workers}")
        self._validate_images()
        if r.labels == "teacher" and not r.teachers:
            raise HellopackError("--labels teacher needs --teacher ARCH:CHECKPOINT or --teachers-dir DIR")
        if r.labels != "teacher" and r.teachers:
            raise HellopackError(f"--teacher/--teachers-dir is only used with --labels teacher (got --labels {r.labels})")
        if r.image_size <= 0:
            raise HellopackError("archive manifest has no images.size; rebuild the archive with a current hellopack")
        if r.val_resize is not None and r.val_resize < r.image_size:
            raise HellopackError(f"--val-resize {r.val_resize} is smaller than the {r.image_size}-px crop; "
                                 f"use at least {r.image_size} (RDED: {proto.val_resize(r.image_size)})")
        if self.val_images is not None and self.val_images <= 0:
            raise HellopackError(f"--val-images must be positive, got {self.val_images}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise HellopackError(f"max_steps must be positive, got {self.max_steps}")

    def _validate_images(self) -> None:
        if self.images not in IMAGES:
            raise HellopackError(f"--images '{self.images}' is not one of {', '.join(IMAGES)}")
        if self.images != "archive" and self.data_dir is None:
            raise HellopackError(f"--images {self.images} needs --data-dir SOURCE: the real training images of "
                                 "the dataset the archive was built from")
        if self.images == "archive" and (self.data_dir is not None or self.data_recipe is not None):
            flag = "--data-dir" if self.data_dir is not None else "--data-recipe"
            raise HellopackError(f"{flag} is only used with --images random or full (got --images archive)")
        if self.images_per_class is not None and self.images != "random":
            raise HellopackError(f"--images-per-class is only used with --images random (got --images {self.images})")
        if self.images_per_class is not None and self.images_per_class <= 0:
            raise HellopackError(f"--images-per-class must be positive, got {self.images_per_class}")

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
    decay: str = "weights"  # which parameters get weight decay
    val_resize: int | None = None  # --val: shorter side to this, then centre crop (None: the source's rule)
    protocol: str = proto.PROTOCOL
    lr_source: str = ""  # where lr came from (the RDED table, the archive, --lr)

    def to_json(self) -> dict[str, Any]:
        """The recipe as JSON values (tuples as lists), as result.json records it."""
        d = asdict(self)
        for k in ("crop_scale", "teachers", "mean", "std"):
            d[k] = list(d[k])
        return d


def _pair(value: Any) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise HellopackError(f"crop scale {value!r} must be two numbers, min and max area")
    return (float(value[0]), float(value[1]))
