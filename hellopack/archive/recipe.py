"""The training recipe an archive carries (spec/FORMAT.md 2.9), declared once.

``RecipeSettings`` lists what a build chooses and `hellopack train` may override: each
setting's type, the value a build writes by default (None: derived from the data and the
mix, see hellopack.distill.config), its allowed values or bounds, and, for the keys every
1.0 archive carries, what an archive without them means (``LEGACY``). The manifest check
(``manifest_keys``), ``BuildConfig``'s ``train_*`` fields and ``TrainConfig``'s overrides
(``setting_fields``), both configs' validation (``problem``) and the CLIs' recipe flags all
read it. It lives in hellopack.archive because the manifest check needs the keys and
their types, and this package imports nothing else from hellopack; the rules the values
stand for (RDED's protocol) live in hellopack.train.protocol.

No ``from __future__ import annotations``: ``setting_fields`` hands the real types on.
"""

import dataclasses
import types
from dataclasses import MISSING, dataclass, field
from typing import Any

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("half-cosine", "cosine", "constant")
LOSSES = ("mse", "kl")
LEGACY_LOSSES = ("kl-t2",)  # what "kl" meant before the RDED protocol (T^2 * KL + beta * CE): train only
MIXES = ("cutmix", "mixup", "none")
DECAYS = ("weights", "all")

POSITIVE = "positive"
NONNEG = "zero or positive"
AREA = "area"  # (min, max) with 0 < min <= max <= 1: a RandomResizedCrop area range


def _setting(default: Any, rule: Any = None, *, legacy: Any = MISSING, also: tuple[str, ...] = ()) -> Any:
    """``rule``: the allowed values (a tuple) or a bound; ``legacy``: the value a recipe without
    the key means (given for the keys every 1.0 archive carries); ``also``: values only `train` takes."""
    return field(default=default, metadata={"rule": rule, "legacy": legacy, "also": also})


@dataclass(frozen=True)
class RecipeSettings:
    """The recipe settings, in manifest order, with the defaults a build writes."""

    epochs: int = _setting(300, POSITIVE, legacy=300)
    optimizer: str = _setting("adamw", OPTIMIZERS, legacy="adamw")
    lr: float = _setting(1e-3, POSITIVE, legacy=1e-3)  # for students RDED's table does not list
    lr_by_arch: bool = _setting(True)  # RDED's AdamW lr by student architecture
    weight_decay: float = _setting(0.01, NONNEG, legacy=0.01)
    decay: str = _setting("weights", DECAYS)  # decay on weight matrices only (RDED's get_parameters), or "all"
    schedule: str = _setting("half-cosine", SCHEDULES, legacy="cosine")  # per epoch, ends at half the lr
    batch_size: int | None = _setting(None, POSITIVE, legacy=100)  # None: RDED's by IPC and class count
    loss: str = _setting("mse", LOSSES, legacy="mse", also=LEGACY_LOSSES)
    beta: float | None = _setting(None, NONNEG, legacy=0.1)  # None: 0.1 for mse, 0 for kl (RDED's KL has no CE)
    temperature: float | None = _setting(None, POSITIVE, legacy=20.0)  # None: 20 for CutMix, 4 for MixUp (RDED)
    mix: str = _setting("cutmix", MIXES, legacy="cutmix")
    mix_alpha: float | None = _setting(None, POSITIVE)  # None: 1 for CutMix, 0.8 for MixUp (RDED)
    crop_scale: tuple[float, float] | None = _setting(None, AREA)  # None: (1 / factor, 1) (RDED)
    patch_shuffle: bool | None = _setting(None, legacy=True)  # None: factor > 1


SETTINGS: tuple[dataclasses.Field, ...] = dataclasses.fields(RecipeSettings)
NAMES: tuple[str, ...] = tuple(f.name for f in SETTINGS)
_BY_NAME = {f.name: f for f in SETTINGS}

# What a recipe without a key means: archives from before the RDED protocol (no "protocol" key)
# carried only these, so every key added since reads as its old behaviour.
LEGACY: dict[str, Any] = {f.name: f.metadata["legacy"] for f in SETTINGS if f.metadata["legacy"] is not MISSING}

# manifest keys a build derives rather than chooses: the first and the last key of a recipe
PROTOCOL_KEY = ("protocol", str)
VAL_RESIZE_KEY = ("val_resize", int)  # the validation images' shorter side before the centre crop


def base_type(name: str) -> type:
    """``int`` for ``int | None``: the type a setting's value has when it is given."""
    kind = _BY_NAME[name].type
    if isinstance(kind, types.UnionType):
        kind = next(k for k in kind.__args__ if k is not type(None))
    return getattr(kind, "__origin__", kind)  # tuple for tuple[float, float]


def manifest_keys() -> tuple[list[tuple[str, type]], list[tuple[str, type]]]:
    """(required, optional) recipe keys with their types: required are those every 1.0 archive
    carries, optional those added in 1.1 (``protocol`` first and ``val_resize`` last, as written)."""
    required = [(n, base_type(n)) for n in NAMES if n in LEGACY]
    optional = [PROTOCOL_KEY, *((n, base_type(n)) for n in NAMES if n not in LEGACY), VAL_RESIZE_KEY]
    return required, optional


def setting_fields(prefix: str = "", *, overrides: bool = False,
                   skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(prefix + name, type, field)`` per setting for ``dataclasses.make_dataclass``, keyword-only so
    they may precede required fields; ``overrides``: every value optional, None meaning "the archive's"."""
    out = []
    for f in SETTINGS:
        if f.name in skip:
            continue
        kind = f.type if not overrides or isinstance(f.type, types.UnionType) else f.type | None
        out.append((prefix + f.name, kind, field(default=None if overrides else f.default, kw_only=True)))
    return out


def choices(name: str, *, legacy: bool = False) -> tuple[str, ...]:
    """A setting's allowed values (empty for numbers and flags); ``legacy`` adds the values only `train` takes."""
    meta = _BY_NAME[name].metadata
    rule = meta["rule"]
    if not isinstance(rule, tuple):
        return ()
    return rule + meta["also"] if legacy else rule


def problem(name: str, value: Any, *, legacy: bool = False) -> str | None:
    """What is wrong with ``value`` for setting ``name``, worded to follow its flag; None if nothing
    (None, "not given", is fine). ``legacy``: accept the values only `train` takes."""
    if value is None:
        return None
    rule = _BY_NAME[name].metadata["rule"]
    if isinstance(rule, tuple):
        valid = choices(name, legacy=legacy)
        return None if value in valid else f"'{value}' is not one of {', '.join(valid)}"
    if rule == POSITIVE and not value > 0:
        return f"must be positive, got {value}"
    if rule == NONNEG and not value >= 0:
        return f"must be zero or positive, got {value}"
    if rule == AREA:
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            return f"must be two numbers 0 < min <= max <= 1, got {lo} {hi}"
    return None


def default(name: str) -> Any:
    """The value a build writes for ``name`` (None: derived, see hellopack.distill.config)."""
    return _BY_NAME[name].default
