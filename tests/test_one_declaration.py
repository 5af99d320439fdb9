"""Each setting is declared once: the training recipe in hellopack/archive/recipe.py, the rest in the
config dataclasses; options, help defaults, allowed values and manifest keys are read from there.

Builds on tests/test_cli_help.py's map of options to fields (CONFIGS). Fails when
- two options of `build`, `train` or `eval continual` fill the same field;
- a recipe setting lacks its one option, or a command declares a recipe option by hand;
- a help string or an option default in cli/ writes a field's default as a literal (typed
  again) instead of reading it from the dataclass;
- a config dataclass declares a recipe field by hand, or the allowed values are written outside
  the declaration;
- a bad recipe value gets past the build config, or its message names another flag.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import test_cli_help as cli_map
from hellopack.archive import manifest
from hellopack.archive import recipe as settings
from hellopack.distill.config import BuildConfig
from hellopack.errors import HellopackError
from hellopack.train.config import OVERRIDES, TrainConfig
from hellopack_cli.app import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {("build",): ("build_cmd.py", "build"), ("train",): ("train_cmd.py", "train"),
            ("eval", "continual"): ("continual_cmd.py", "continual")}
RECIPE_OPTIONS = {("build",): tuple("train_" + n for n in settings.NAMES), ("train",): OVERRIDES,
                  ("eval", "continual"): OVERRIDES}
ALLOWED = (settings.OPTIMIZERS, settings.SCHEDULES, settings.LOSSES + settings.LEGACY_LOSSES, settings.MIXES,
           settings.DECAYS)


def _field_of(path: tuple[str, ...], param: str) -> str | None:
    classes, renames = cli_map.CONFIGS[path]
    name = renames.get(param, param)
    return name if any(name in {f.name for f in dataclasses.fields(c)} for c in classes) else None


def _default_of(path: tuple[str, ...], field: str) -> object:
    for cls in cli_map.CONFIGS[path][0]:
        for f in dataclasses.fields(cls):
            if f.name == field:
                return f.default
    return dataclasses.MISSING


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_no_two_options_fill_one_field(path):
    seen: dict[str, str] = {}
    for p in cli_map._options(path):
        field = _field_of(path, p.name)
        if field is None:
            continue
        assert field not in seen, f"{' '.join(path)}: {cli_map._long(p)} and {seen[field]} both set {field}"
        seen[field] = cli_map._long(p)


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_recipe_setting_has_its_one_option_named_after_the_field(path):
    options = {p.name: p for p in cli_map._options(path)}
    for name in RECIPE_OPTIONS[path]:
        assert name in options, f"{' '.join(path)} has no option for the recipe setting {name}"
        assert cli_map._long(options[name]) == "--" + name.replace("_", "-")
        assert options[name].default is None  # None: not given (build: the dataclass's default; train: the archive's)
    # declared by cli/recipe_options.py, not in the command's own signature
    source, func = COMMANDS[path]
    tree = ast.parse((ROOT / "cli" / source).read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func)
    by_hand = {a.arg for a in fn.args.args + fn.args.kwonlyargs} & set(RECIPE_OPTIONS[path])
    assert not by_hand, f"cli/{source} declares recipe options by hand: {sorted(by_hand)}; use recipe_options"


def _literal_defaults(path: tuple[str, ...]):
    """(param, literal help text, literal default or MISSING) for every typer.Option of the command."""
    source, func = COMMANDS[path]
    tree = ast.parse((ROOT / "cli" / source).read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func)
    args = fn.args.args + fn.args.kwonlyargs
    defaults = [None] * (len(fn.args.args) - len(fn.args.defaults)) + fn.args.defaults + fn.args.kw_defaults
    for arg, call in zip(args, defaults):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "Option"):
            continue
        help_node = next((k.value for k in call.keywords if k.arg == "help"), None)
        text = "".join(v.value for v in ast.walk(help_node) if isinstance(v, ast.Constant)
                       and isinstance(v.value, str)) if help_node is not None else ""
        first = call.args[0] if call.args else None
        literal = first.value if isinstance(first, ast.Constant) else dataclasses.MISSING
        yield arg.arg, text, literal


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_help_reads_defaults_instead_of_typing_them(path):
    for param, text, literal in _literal_defaults(path):
        field = _field_of(path, param)
        if field is None:
            continue
        default = _default_of(path, field)
        if default is None or default is False or default == () or default is dataclasses.MISSING:  # "not given"
            continue
        written = [b for b in re.findall(r"\\\[([^\]]*)\]", text) if b.startswith(cli_map._shown(default))]
        assert not written, f"{' '.join(path)} --{param}: help writes the default {written[0]!r}; read {field} instead"
        assert literal is dataclasses.MISSING or literal is None or literal is False, (
            f"{' '.join(path)} --{param}: the option's default {literal!r} is typed again; read {field} instead")


def test_the_configs_take_their_recipe_fields_from_the_declaration():
    build = {f.name: f for f in dataclasses.fields(BuildConfig)}
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for f in settings.SETTINGS:
        assert build["train_" + f.name].default == f.default and build["train_" + f.name].type == f.type
        if f.name != "lr_by_arch":
            assert train[f.name].default is None
    assert {n for n in build if n.startswith("train_")} == {"train_" + n for n in settings.NAMES}
    # the manifest's recipe keys: the settings between protocol and val_resize, required where 1.0 had them
    assert [*manifest.SCHEMA["recipe"], *manifest.RECIPE_OPTIONAL] == [
        *settings.LEGACY, "protocol", *(n for n in settings.NAMES if n not in settings.LEGACY), "val_resize"]
    written = BuildConfig(recipe="cifar10", out="x").train_recipe(factor=1, size=32, num_classes=10, num_images=100)
    assert list(written) == ["protocol", *settings.NAMES, "val_resize"]
    for name, (ok, _) in {**manifest.SCHEMA["recipe"], **manifest.RECIPE_OPTIONAL}.items():
        assert ok(written[name]), name


def test_allowed_values_are_written_once():
    """A tuple, list or set of two or more allowed values outside hellopack/archive/recipe.py is a copy
    (a membership test such as ``loss in ("kl", "kl-t2")`` is not)."""
    declared = ROOT / "hellopack" / "archive" / "recipe.py"
    copies = []
    for path in [*(ROOT / "hellopack").rglob("*.py"), *(ROOT / "cli").glob("*.py")]:
        if path == declared:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tests = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Compare) for c in n.comparators}
        for node in ast.walk(tree):  # `loss in ("kl", "kl-t2")` asks about values; it lists none
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and id(node) not in tests:
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(values) == len(node.elts) and any(values <= set(a) for a in ALLOWED):
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(values)}")
    assert not copies, f"allowed values written again: {copies}"


@pytest.mark.parametrize("name", settings.NAMES)
def test_a_bad_value_names_the_flag_the_user_passed(name):
    bad = {str: "bogus", int: 0, float: -1.0, tuple: (0.9, 0.2)}.get(settings.base_type(name))
    if bad is None or settings.problem(name, bad) is None:
        pytest.skip(f"{name} takes any value of its type")
    build_flags = {cli_map._long(p) for p in cli_map._options(("build",))}
    with pytest.raises(HellopackError) as e:
        BuildConfig(recipe="cifar10", out="x", **{"train_" + name: bad})
    flag = str(e.value).split()[0]
    assert flag == "--train-" + name.replace("_", "-") and flag in build_flags, str(e.value)
    manifest_ = {"recipe": {"protocol": "rded"}, "images": {"size": 32, "factor": 1}}
    if name != "lr_by_arch":
        with pytest.raises(HellopackError) as e:
            TrainConfig(archive="a", arch="convnet", **{name: bad}).resolve(manifest_)
        assert str(e.value).split()[0] == "--" + name.replace("_", "-"), str(e.value)


def test_build_refuses_a_bad_recipe_value_before_any_work(tmp_path):
    """train_optimizer="adam" used to be caught only by the config; a negative weight decay not at all,
    and `train` then refused the archive, naming --weight-decay, a flag the user never passed."""
    out = tmp_path / "a.hellopack"
    for flags, message in ((["--train-optimizer", "adam"], "--train-optimizer 'adam' is not one of adamw, sgd"),
                           (["--train-weight-decay", "-0.5"], "--train-weight-decay must be zero or positive, got -0.5")):
        res = CliRunner().invoke(app, ["build", "synthetic", "--out", str(out), *flags])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
    toml = tmp_path / "b.toml"
    toml.write_text('recipe = "synthetic"\nout = "a.hellopack"\n[train]\noptimizer = "adam"\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["build", "synthetic", "--config", str(toml), "--out", str(out)])
    assert res.exit_code == 2 and "--train-optimizer 'adam' is not one of adamw, sgd" in res.output
    assert list(tmp_path.iterdir()) == [toml]  # no archive, no work directory


def test_an_archive_value_train_refuses_is_named_as_the_archives():
    m = {"recipe": {"protocol": "rded", "optimizer": "adam"}, "images": {"size": 32, "factor": 1}}
    with pytest.raises(HellopackError) as e:
        TrainConfig(archive="a", arch="convnet").resolve(m)
    assert str(e.value) == "the archive's recipe optimizer 'adam' is not one of adamw, sgd; pass --optimizer to override it"
    assert TrainConfig(archive="a", arch="convnet", optimizer="sgd").resolve(m).optimizer == "sgd"
