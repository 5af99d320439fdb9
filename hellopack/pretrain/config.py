"""What `hellopack pretrain-base` is asked to do: one frozen dataclass, checked on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hellopack.errors import HellopackError

OBJECTIVE = "simclr-nt-xent"

# Fields that change the trained weights: a checkpoint made with other values cannot be resumed.
IDENTITY_FIELDS = ("recipe", "config", "epochs", "batch_size", "lr", "weight_decay", "warmup", "temperature",
                   "proj_hidden", "proj_dim", "image_size", "max_images", "crop_scale", "jitter", "blur", "seed")


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining of an open_clip image tower (SimCLR, NT-Xent loss).

    Optimiser: AdamW with linear warmup then cosine decay, per step. SimCLR's LARS exists
    for batches of 4,096+; at the batch sizes that fit on one machine AdamW trains as well
    and needs no extra dependency. ``lr`` defaults to 1e-3 x global batch / 256.
    """

    recipe: str  # dataset recipe (cifar10, folder, wds, imagenet, synthetic, ...)
    out: str  # the base's .safetensors file
    data_dir: str | None = None
    config: str = "hellopack-tiny-rn"  # open_clip model name (any config; random init)
    epochs: int = 50
    batch_size: int = 256  # per process; the contrastive batch is world_size x this
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of all steps with a linear ramp
    temperature: float = 0.5  # SimCLR's CIFAR-10 setting
    proj_hidden: int = 512
    proj_dim: int = 128
    image_size: int | None = None  # augmented view size; default the source's natural size
    max_images: int | None = None  # train on the first N images only (quick runs)
    crop_scale: float = 0.2  # RandomResizedCrop lower area bound (0.08 on ImageNet-sized photos)
    jitter: float = 0.5  # colour-jitter strength s (brightness/contrast/saturation 0.8 s, hue 0.2 s)
    blur: bool | None = None  # Gaussian blur; default on for views of 96 px and more
    work_dir: str | None = None  # checkpoints; default OUT without suffix + ".work"
    resume: bool = False
    force: bool = False  # replace an existing OUT
    probe_train: int = 0  # >0: linear probe on that many labelled training images after pretraining
    probe_test: int = 2000  # ... evaluated on that many test-split images
    classes_file: str | None = None
    download: bool = False
    synthetic: Any = None  # SyntheticConfig or its fields, for the synthetic recipe
    max_bad_fraction: float = 0.01
    seed: int = 0
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("epochs", self.epochs >= 1), ("batch-size", self.batch_size >= 2),
            ("lr", self.lr is None or self.lr > 0), ("weight-decay", self.weight_decay >= 0),
            ("warmup", 0 <= self.warmup < 1), ("temperature", self.temperature > 0),
            ("proj-hidden", self.proj_hidden >= 1), ("proj-dim", self.proj_dim >= 1),
            ("image-size", self.image_size is None or 8 <= self.image_size <= 1024),
            ("max-images", self.max_images is None or self.max_images >= 2),
            ("crop-scale", 0 < self.crop_scale <= 1), ("jitter", 0 <= self.jitter <= 2),
            ("probe-train", self.probe_train >= 0), ("probe-test", self.probe_test >= 1),
            ("workers", self.workers >= 0),
        )
        for name, ok in checks:
            if not ok:
                value = getattr(self, name.replace("-", "_"))
                raise HellopackError(f"--{name} has an invalid value {value!r}; see `hellopack pretrain-base --help`")
        if not str(self.out).endswith(".safetensors"):
            raise HellopackError(f"--out '{self.out}' must end in .safetensors (the base is a safetensors state dict)")

    def resolved_lr(self, world_size: int = 1) -> float:
        return self.lr if self.lr is not None else 1e-3 * self.batch_size * world_size / 256

    def resolved_work_dir(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir)
        out = Path(self.out)
        return out.with_name(out.name[: -len(".safetensors")] + ".work")

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must share with this run to be resumed."""
        d = asdict(self)
        ident = {k: d[k] for k in IDENTITY_FIELDS}
        ident["synthetic"] = None if self.synthetic is None else repr(self.synthetic)
        return ident

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["synthetic"] = None if self.synthetic is None else repr(self.synthetic)
        return d
