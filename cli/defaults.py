"""Where help text gets its defaults: the library's config dataclasses, read without importing torch.

Help text takes its defaults from the dataclasses. ``BuildConfig`` and ``TrainConfig`` import
without torch and are read directly; the training recipe's options and defaults come from
``hellopack.archive.recipe.RecipeSettings`` through cli/recipe_options.py. ``TeachConfig`` and ``DemoConfig`` live in modules that
import torch, and ``PretrainConfig`` and ``ContinualConfig`` in packages whose ``__init__``
does; importing them would make every ``hellopack --help`` pay for torch. Their field defaults
are read from the module's source instead (``source_defaults``): the same values the dataclass
gets, which tests/test_cli_help.py checks against the imported classes.

In help strings a default is written ``\\[VALUE]``: rich reads ``[lowercase ...]`` as markup
and drops it, the backslash makes it literal text.
"""

from __future__ import annotations

import ast
from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace

import hellopack

_PACKAGE = Path(hellopack.__file__).resolve().parent


def source_defaults(module: str, cls: str) -> SimpleNamespace:
    """The literal field defaults of dataclass ``cls`` in ``module`` (``hellopack.x.y``), without importing it.

    A field whose default is not a literal (``field(default_factory=...)``, a call) is left out:
    asking for it raises AttributeError at CLI import, so a help string cannot show a stale value.
    """
    parts = module.split(".")
    if parts[0] != "hellopack":
        raise ValueError(f"{module} is not a hellopack module")
    path = _PACKAGE.joinpath(*parts[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            values = {}
            for stmt in node.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None):
                    continue
                value = stmt.value
                if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) == "field":
                    value = next((k.value for k in value.keywords if k.arg == "default"), None)
                    if value is None:
                        continue
                try:
                    values[stmt.target.id] = ast.literal_eval(value)
                except ValueError:
                    continue
            return SimpleNamespace(**values)
    raise LookupError(f"no class {cls} in {path}")


def offline_bases() -> tuple[str, ...]:
    """The tiny open_clip configs shipped in hellopack/models/configs/ (what hellopack.models.base registers)."""
    return tuple(sorted(p.name[: -len(".json")] for p in (files("hellopack.models") / "configs").iterdir()
                        if p.name.endswith(".json")))
