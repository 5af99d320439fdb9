"""The resolved build configuration: defaults, a TOML loader, validation and its manifest form.

``BuildConfig.from_sources(toml_path, overrides)`` is what the CLI calls: the file gives
values, flags (``overrides``, ``None`` meaning "not given") win, unknown keys are refused
with close matches. Field-local checks run on construction; checks that need the data
(factor dividing the image size, class counts) run in the pipeline after the data scan.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Mapping

from hellopack.archive import recipe as settings
from hellopack.errors import HellopackError
from hellopack.train import protocol

LORA_DTYPES = ("fp16", "int8")
# the head's default LoRA rank: HEAD_RANKS[0] up to HEAD_RANK_CLASSES classes, HEAD_RANKS[1] above
HEAD_RANKS = (64, 128)
HEAD_RANK_CLASSES = 100
OBSERVERS = ("teacher", "projector")
IMAGE_FORMATS = ("auto", "png", "webp", "jpeg", "webp-lossless")  # hellopack.archive.images.ENCODING_EXTS + auto
AUTO_SMALL_MAX_SIZE = 64  # auto: lossless WebP up to this size, lossy WebP above (resolved_image_format)
AUTO_QUALITY = (90, 85)  # default WebP / JPEG quality: up to AUTO_SMALL_MAX_SIZE px, above

# The training recipe written into the manifest for `hellopack train`: one keyword-only field
# train_<name> per setting of hellopack.archive.recipe.RecipeSettings, with its default (RDED's
# evaluation, hellopack.train.protocol, with HeLlO's MSE + beta * CE loss; None: derived in train_recipe).
_TrainRecipe = make_dataclass("_TrainRecipe", settings.setting_fields("train_"), frozen=True)
_TrainRecipe.__module__ = __name__


@dataclass(frozen=True)
class BuildConfig(_TrainRecipe):
    # --- what to distill, where to write
    recipe: str
    out: str
    data_dir: str | None = None
    dataset_name: str | None = None  # the archive's dataset name (default: the source's, e.g. "cifar10")
    workdir: str | None = None  # default: "<out without suffix>.work" beside the archive
    classes_file: str | None = None
    download: bool = False
    synthetic: Any = None  # a hellopack.data SyntheticConfig or a mapping of its fields
    max_bad_fraction: float = 0.01
    allow_short: bool = False
    # --- distilled images
    ipc: int = 10
    factor: int | None = None  # default: 2 when the image size is >= 128, else 1
    image_size: int | None = None  # default: the source's natural size
    # how images.tar stores them: png, webp, jpeg, webp-lossless, or auto (resolved_image_format)
    image_format: str = "auto"
    image_quality: int | None = None  # webp / jpeg quality 1..100; default: resolved_image_quality
    # --- weak teachers
    teachers: tuple[str, ...] = ()
    teachers_dir: str | None = None
    # a folder of the teachers' logits by batch content, reused by builds with the same teachers and
    # batches (a rank sweep); it changes no output byte, so like workdir it is in no manifest nor stage key
    teacher_cache: str | None = None
    # --- projector
    base: str = "RN50"
    pretrained: str | None = "openai"
    clip_weights: str | None = None
    templates: str = "openai"
    rank_encoder: int = 8
    rank_head: int | None = None  # default: see resolved_rank_head
    alpha: float | None = None  # default: alpha = rank (scaling 1)
    lora_dtype: str = "fp16"
    # --- projector fit: MSE(proj, mean teacher logits) + lam * CE
    fit_epochs: int = 10
    fit_lr: float = 1e-3
    fit_weight_decay: float = 0.01
    fit_batch_size: int = 128
    fit_checkpoint_every: int = 200  # optimizer steps between resumable checkpoints
    lam: float = 0.1
    val_fraction: float = 0.02  # held out for the fidelity report when there is no test split
    max_images: int | None = None  # fit on the first N training images only (quick runs)
    fidelity_images: int | None = None  # measure fidelity on at most N held-out images
    # --- RDED initialisation (synthesize/: N random real images per class, M square crops each)
    n_real: int = 300
    m_crops: int = 5
    # RDED's MultiRandomCrop: RandomResizedCrop's default (0.08, 1), aspect 1:1.
    crop_scale: tuple[float, float] = (0.08, 1.0)
    observer: str = "teacher"  # scores the crops: "teacher" (mean teacher logits, paper Eq. 6) or "projector"
    # --- image update
    update: bool = True
    update_steps: int = 100
    update_lr: float = 0.01
    # --- refine: continue the fit on the archive's own training views (0 steps = off, the paper's method)
    refine_steps: int = 0
    refine_lr: float | None = None  # default: fit_lr
    refine_batch_size: int = 100
    # --- runtime
    eval_batch_size: int = 128  # crop scoring, image update and fidelity batches
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    # --- the training recipe: the train_* fields of _TrainRecipe, above

    def __post_init__(self) -> None:
        if isinstance(self.teachers, (list, str)):
            object.__setattr__(self, "teachers", (self.teachers,) if isinstance(self.teachers, str) else tuple(self.teachers))
        if isinstance(self.pretrained, str) and self.pretrained.lower() in ("none", ""):
            object.__setattr__(self, "pretrained", None)  # the flag's spelling of "no tag" (random init / own weights)
        for name in ("crop_scale", "train_crop_scale"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_sources(cls, toml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> "BuildConfig":
        """Values from ``toml_path`` (if any), then ``overrides`` (flags; ``None`` = not given)."""
        values: dict[str, Any] = load_toml(toml_path) if toml_path is not None else {}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise _unknown_key(key, "flag overrides")
            values[name] = _coerce(name, value, "flag")
        for required in ("recipe", "out"):
            if required not in values:
                raise HellopackError(f"build config needs '{required}'; pass it as a flag or in the config file")
        return cls(**values)

    # ---- derived values -----------------------------------------------------------
    def resolved_workdir(self) -> Path:
        if self.workdir is not None:
            return Path(self.workdir)
        out = Path(self.out)
        return out.with_name(out.stem + ".work")

    def resolved_factor(self, image_size: int) -> int:
        factor = self.factor if self.factor is not None else (2 if image_size >= 128 else 1)
        if image_size % factor:
            raise HellopackError(f"factor {factor} does not divide the image size {image_size}; "
                                 f"choose --factor among {', '.join(str(d) for d in _divisors(image_size)[:8])}")
        return factor

    def resolved_image_format(self, image_size: int) -> str:
        """auto: the smallest encoding whose students stay within 0.5 points of PNG's (issue 15's rule).
        Up to 64 px that is lossless WebP: PNG's pixels in 67 % of its bytes, while WebP q90 (-0.73 points) and
        JPEG q90 (-0.63) missed the margin on CIFAR-10 with projector labels (benchmarks/results/cifar10-codecs.md).
        Above 64 px, lossy WebP: the only encoding that puts ImageNet-1K IPC 10 at 224 px in 170 MB
        (benchmarks/results/storage.md); no GPU has measured its students yet."""
        if self.image_format != "auto":
            return self.image_format
        return "webp-lossless" if image_size <= AUTO_SMALL_MAX_SIZE else "webp"

    def resolved_image_quality(self, image_size: int) -> int:
        """--image-quality, else AUTO_QUALITY[0] up to AUTO_SMALL_MAX_SIZE px (the quality measured on CIFAR-10)
        and AUTO_QUALITY[1] above (ImageNet-1K IPC 10 at 224 px in at most 170 MB)."""
        if self.image_quality is not None:
            return self.image_quality
        return AUTO_QUALITY[0] if image_size <= AUTO_SMALL_MAX_SIZE else AUTO_QUALITY[1]

    def resolved_rank_head(self, num_classes: int, embed_dim: int) -> int:
        """The head's LoRA rank (the one place this rule lives): --rank-head, else HEAD_RANKS by class
        count; capped at min(num_classes, embed_dim), where a larger rank adds parameters but no
        expressiveness."""
        default = HEAD_RANKS[0] if num_classes <= HEAD_RANK_CLASSES else HEAD_RANKS[1]
        requested = self.rank_head if self.rank_head is not None else default
        return min(requested, num_classes, embed_dim)

    def resolved_train_batch_size(self, num_classes: int, num_images: int) -> int:
        if self.train_batch_size is not None:
            return self.train_batch_size
        return min(protocol.batch_size(self.ipc, num_classes), num_images)

    def train_recipe(self, factor: int, size: int, num_classes: int, num_images: int) -> dict[str, Any]:
        """The manifest's ``recipe``: what `hellopack train` defaults to for this archive.

        Its keys: ``protocol``, the settings in declaration order, ``val_resize``; a setting left
        None takes RDED's rule for this archive's mix, loss, factor and class count."""
        mix, loss = self.train_mix, self.train_loss
        derived = {
            "batch_size": self.resolved_train_batch_size(num_classes, num_images),
            "beta": 0.0 if loss == "kl" else 0.1,
            "temperature": protocol.TEMPERATURE[mix],
            "mix_alpha": protocol.MIX_ALPHA[mix],
            "crop_scale": protocol.crop_scale(factor),
            "patch_shuffle": factor > 1,
        }
        recipe: dict[str, Any] = {"protocol": protocol.PROTOCOL}
        for name in settings.NAMES:
            value = getattr(self, "train_" + name)
            recipe[name] = derived[name] if value is None else value
        recipe["crop_scale"] = [float(v) for v in recipe["crop_scale"]]
        recipe["val_resize"] = protocol.val_resize(size)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest's "build" key (paths as given)."""
        out: dict[str, Any] = {}
        # the train_* fields come first in the class (inherited), last here, where they were declared before
        for f in sorted(dataclasses.fields(self), key=lambda f: f.name.startswith("train_")):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


# ---- TOML ---------------------------------------------------------------------------

def load_toml(path: str | Path) -> dict[str, Any]:
    """Read ``build.toml`` into field values.

    Keys may use dashes like the flags; one level of tables is flattened with an underscore
    (``[fit] epochs = 5`` is ``fit_epochs``, ``[train] lr`` is ``train_lr``).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HellopackError(f"config file '{path}' not found; check the --config path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HellopackError(f"cannot read config file '{path}': {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise HellopackError(f"config file '{path}' is not valid TOML ({e}); fix the syntax") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key.replace("-", "_") != "synthetic":
            for sub, v in value.items():
                _put(values, f"{key}_{sub}", v, path)
        else:
            _put(values, key, value, path)
    return values


def _put(values: dict[str, Any], key: str, value: Any, path: Path) -> None:
    name = key.replace("-", "_")
    if name not in _FIELDS:
        raise _unknown_key(key, str(path))
    values[name] = _coerce(name, value, f"'{path}'")


def _unknown_key(key: str, where: str) -> HellopackError:
    name = key.replace("-", "_")
    close = difflib.get_close_matches(name, sorted(_FIELDS), n=4, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else "; see `hellopack build --help` for the valid keys"
    return HellopackError(f"unknown key '{key}' in {where}{hint}")


# ---- types and checks ---------------------------------------------------------------

_FIELDS: dict[str, Any] = typing.get_type_hints(BuildConfig)


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    hint = _FIELDS[name]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in kinds:
        return None
    for kind in kinds:
        if kind is Any:
            return value
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (str, Path)):
            return str(value)
        origin = typing.get_origin(kind)
        if origin is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(kind)
            if args and args[-1] is Ellipsis:
                if all(isinstance(v, (str, Path)) for v in value):
                    return tuple(str(v) for v in value)
            elif len(value) == len(args) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return tuple(float(v) for v in value)
        if origin is tuple and args_is_str_tuple(kind) and isinstance(value, str):
            return (value,)
    expected = " or ".join(_kind_name(k) for k in kinds)
    raise HellopackError(f"'{name}' in {where} must be {expected}, got {value!r}; fix the value")


def args_is_str_tuple(kind: Any) -> bool:
    args = typing.get_args(kind)
    return bool(args) and args[0] is str and args[-1] is Ellipsis


def _kind_name(kind: Any) -> str:
    if kind is type(None):
        return "unset"
    if typing.get_origin(kind) is tuple:
        return "a list of strings" if args_is_str_tuple(kind) else f"a list of {len(typing.get_args(kind))} numbers"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(kind, str(kind))


def _validate(c: BuildConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise HellopackError(msg)

    need(c.ipc > 0, f"--ipc must be a positive number of images per class, got {c.ipc}")
    need(c.factor is None or c.factor >= 1, f"--factor must be 1 or more, got {c.factor}")
    need(c.image_size is None or c.image_size >= 8, f"--image-size must be at least 8 pixels, got {c.image_size}")
    need(c.rank_encoder >= 1, f"--rank-encoder must be 1 or more, got {c.rank_encoder}")
    need(c.rank_head is None or c.rank_head >= 1, f"--rank-head must be 1 or more, got {c.rank_head}")
    need(c.alpha is None or c.alpha > 0, f"--alpha must be positive, got {c.alpha}")
    need(c.lora_dtype in LORA_DTYPES, f"--lora-dtype must be one of {', '.join(LORA_DTYPES)}, got '{c.lora_dtype}'")
    need(c.fit_epochs >= 1, f"--fit-epochs must be 1 or more, got {c.fit_epochs}")
    need(c.fit_lr > 0, f"--fit-lr must be positive, got {c.fit_lr}")
    need(c.fit_weight_decay >= 0, f"--fit-weight-decay must be 0 or more, got {c.fit_weight_decay}")
    need(c.fit_batch_size >= 1, f"--fit-batch-size must be 1 or more, got {c.fit_batch_size}")
    need(c.fit_checkpoint_every >= 1, f"--fit-checkpoint-every must be 1 or more, got {c.fit_checkpoint_every}")
    need(c.lam >= 0, f"--lam must be 0 or more, got {c.lam}")
    need(0 < c.val_fraction < 1, f"--val-fraction must be between 0 and 1, got {c.val_fraction}")
    need(c.max_images is None or c.max_images >= 1, f"--max-images must be 1 or more, got {c.max_images}")
    need(c.fidelity_images is None or c.fidelity_images >= 1,
         f"--fidelity-images must be 1 or more, got {c.fidelity_images}")
    need(c.n_real >= 1, f"--n-real must be 1 or more, got {c.n_real}")
    need(c.m_crops >= 1, f"--m-crops must be 1 or more, got {c.m_crops}")
    lo, hi = c.crop_scale
    need(0 < lo <= hi <= 1, f"--crop-scale must be two numbers 0 < min <= max <= 1, got {lo} {hi}")
    need(c.update_steps >= 0, f"--update-steps must be 0 or more, got {c.update_steps}")
    need(c.refine_steps >= 0, f"--refine-steps must be 0 or more, got {c.refine_steps}")
    need(c.refine_lr is None or c.refine_lr > 0, f"--refine-lr must be positive, got {c.refine_lr}")
    need(c.refine_batch_size >= 2, f"--refine-batch-size must be 2 or more (CutMix mixes pairs), got {c.refine_batch_size}")
    need(c.update_lr > 0, f"--update-lr must be positive, got {c.update_lr}")
    need(c.eval_batch_size >= 1, f"--eval-batch-size must be 1 or more, got {c.eval_batch_size}")
    need(c.workers >= 0, f"--workers must be 0 or more, got {c.workers}")
    need(0 <= c.max_bad_fraction <= 1, f"--max-bad-fraction must be between 0 and 1, got {c.max_bad_fraction}")
    for name in settings.NAMES:  # the recipe's own checks, named by the build flag
        wrong = settings.problem(name, getattr(c, "train_" + name))
        need(wrong is None, f"--train-{name.replace('_', '-')} {wrong}")
    need(c.image_format in IMAGE_FORMATS,
         f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, got '{c.image_format}'")
    need(c.image_quality is None or (isinstance(c.image_quality, int) and 1 <= c.image_quality <= 100),
         f"--image-quality must be an integer 1..100, got {c.image_quality}")
    need(c.observer in OBSERVERS, f"--observer must be one of {', '.join(OBSERVERS)}, got '{c.observer}'")
    need(bool(c.out), "--out must name the archive to write")
    for spec in c.teachers:
        need(":" in spec, f"teacher '{spec}' must be ARCH:CHECKPOINT or ARCH:WEIGHTS_NAME, e.g. resnet18:ckpt.pt")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = ["BuildConfig", "load_toml", "LORA_DTYPES"]
