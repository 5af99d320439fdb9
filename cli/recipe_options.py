"""The recipe flags, declared once for `build` (``--train-*``), `train` and `eval continual`.

One option per setting of hellopack.archive.recipe.RecipeSettings (its name, type, default
and allowed values), in its order; only the words below are written here. A command takes
them with ``@recipe_options(...)`` and a ``recipe_flags`` parameter where they belong in its
signature; the decorator puts the options there and hands the command a dict of the values
given (None: not given). Defaults in help come from the dataclass (and RDED's tables in
hellopack.train.protocol), never typed again: see cli/defaults.py.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Tuple

import typer

from hellopack.archive import recipe as settings
from hellopack.train import protocol  # no torch at import time


def _by_mix(table: dict[str, float]) -> str:
    return f"RDED's: {table['cutmix']:g} for CutMix, {table['mixup']:g} for MixUp"


LR_BY_ARCH = f"RDED's AdamW lr for the student's architecture (e.g. {protocol.RDED_LR['swin_v2_t']:g} for swin_v2_t)"

# setting -> (what it is, the rule a build follows when the setting is None)
WORDS: dict[str, tuple[str, str]] = {
    "epochs": ("Training epochs", ""),
    "optimizer": ("Optimizer", ""),
    "lr": ("Learning rate of students RDED's table does not list", ""),
    "lr_by_arch": (f"Train each student at {LR_BY_ARCH}, at --train-lr if RDED does not list it", ""),
    "weight_decay": ("Weight decay", ""),
    "decay": ("Which parameters get weight decay: weights (matrices only, RDED) or all", ""),
    "schedule": ("LR schedule: half-cosine (per epoch, ends at half the lr: RDED), cosine (per step to 0) or constant", ""),
    "batch_size": ("Batch size", "RDED's: by IPC and class count, "
                   + ", ".join(f"{protocol.batch_size(i, 10)} for IPC {i}" for i in (1, 10, 50))
                   + ", doubled for 100 and 1,000 classes"),
    "loss": ("Loss: mse (+ beta CE, the paper) or kl (RDED's KL at the temperature, no CE unless beta is given)", ""),
    "beta": ("Weight of the hard-label CE term", "0.1 for mse, 0 for kl"),
    "temperature": ("KL temperature", _by_mix(protocol.TEMPERATURE)),
    "mix": ("Batch mix", ""),
    "mix_alpha": ("Beta(a, a) of the mix", _by_mix(protocol.MIX_ALPHA)),
    "crop_scale": ("RandomResizedCrop area range MIN MAX", "1/factor 1 (RDED)"),
    "patch_shuffle": ("Shuffle the stitched patches (RDED's ShufflePatches)", "on when factor > 1"),
}
# `train` only: the build writes RDED's value for the archive's image size
VAL_RESIZE = ("Resize --val images' shorter side to N before the centre crop",
              f"RDED's: size // 7 * 8, {protocol.val_resize(224)} for 224")
MIX_NOTE = "; a --mix other than the archive's takes RDED's for that mix"


def _flag_type(name: str) -> Any:
    kind = settings.base_type(name)
    return Optional[Tuple[float, float]] if kind is tuple else Optional[kind]


def _option(name: str, flag: str, text: str, default_text: str, panel: str) -> typer.models.OptionInfo:
    decls = f"{flag}/--no-{flag[2:]}" if settings.base_type(name) is bool else flag
    valid = settings.choices(name)
    listed = f" (one of {', '.join(valid)})" if valid and not all(v in text for v in valid) else ""
    return typer.Option(None, decls, help=f"{text}{listed} \\[{default_text}].", rich_help_panel=panel)


def _shown(name: str) -> str:
    value, rule = settings.default(name), WORDS[name][1]
    return rule if value is None else str(value)


def build_options(panel: str) -> dict[str, tuple[Any, typer.models.OptionInfo]]:
    """``train_<name>`` -> (type, option ``--train-<name>``) for every setting: what `build` writes."""
    out = {}
    for name in settings.NAMES:
        out["train_" + name] = (_flag_type(name), _option(name, "--train-" + name.replace("_", "-"), WORDS[name][0],
                                                          _shown(name), panel))
    return out


def train_options(panel: str, words: dict[str, str] | None = None) -> dict[str, tuple[Any, typer.models.OptionInfo]]:
    """``<name>`` -> (type, option ``--<name>``) for every setting `train` overrides, and --val-resize;
    ``words``: a command's own description of a setting."""
    out = {}
    for name in settings.NAMES:
        if name == "lr_by_arch":  # --lr replaces the lr, whatever table it came from
            continue
        text, shown = (words or {}).get(name, WORDS[name][0]), _shown(name)
        if name == "lr":
            text, shown = "Learning rate", f"{LR_BY_ARCH}, {shown} for others"
        if name in ("temperature", "mix_alpha"):
            text += MIX_NOTE
        out[name] = (_flag_type(name), _option(name, "--" + name.replace("_", "-"), text,
                                               f"the archive's; build: {shown}", panel))
    out["val_resize"] = (Optional[int], _option_plain("--val-resize", VAL_RESIZE[0],
                                                      f"the archive's; build: {VAL_RESIZE[1]}", panel))
    return out


def _option_plain(flag: str, text: str, default_text: str, panel: str) -> typer.models.OptionInfo:
    return typer.Option(None, flag, help=f"{text} \\[{default_text}].", rich_help_panel=panel)


def recipe_options(options: dict[str, tuple[Any, typer.models.OptionInfo]]) -> Callable:
    """Put ``options`` in place of the command's ``recipe_flags`` parameter; call it with their values."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        params = []
        for p in sig.parameters.values():
            if p.name == "recipe_flags":
                params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
                           for n, (kind, opt) in options.items()]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in options}
            # a pair not given may come as (); the configs take a tuple or None
            given = {n: (tuple(v) or None) if isinstance(v, (list, tuple)) else v for n, v in given.items()}
            return fn(**kwargs, recipe_flags=given)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params
                                   if p.annotation is not inspect.Parameter.empty}
        return command

    return decorate
