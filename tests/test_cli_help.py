"""`--help` of every command shows every option's default, read from the config dataclasses.

Rich reads ``[lowercase ...]`` in a help string as markup and drops it, so a default written
``[openai]`` vanished from the rendered help; help strings write ``\\[...]``. These tests render
each command's help in a wide terminal and check, option by option, that

- the default in the option's config dataclass field appears on the option's help line
  (``[VALUE...]`` written in the help, or typer's ``[default: VALUE]`` when the CLI passes the
  value, which must then equal the field's default);
- an option whose default is None shows its rule in brackets, unless it is listed in NO_DEFAULT
  (None meaning "not given, nothing used");
- every bracketed text in the help source survives rendering;
- flags show no ``<bool>`` value type;
- every option has a description.

A new option whose default is not shown fails here, and so does a new command missing from
CONFIGS.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from hellopack.distill.config import BuildConfig
from hellopack.distill.teach import TeachConfig
from hellopack.continual.config import ContinualConfig
from hellopack.demo import DemoConfig
from hellopack.pretrain.config import PretrainConfig
from hellopack.rank.config import RankConfig
from hellopack.train.config import TrainConfig
from hellopack.labels.record import RecordConfig
from hellopack_cli.app import app
from hellopack_cli.defaults import offline_bases, source_defaults

WIDTH = 250
runner = CliRunner()

# Command path -> (config dataclasses whose fields the options fill, first match wins; param renames).
CONFIGS: dict[tuple[str, ...], tuple[tuple[type, ...], dict[str, str]]] = {
    (): ((), {}),
    ("build",): ((BuildConfig,), {"classes": "classes_file", "teacher": "teachers"}),
    ("inspect",): ((), {}),
    ("train",): ((TrainConfig,), {}),
    ("teach",): ((TeachConfig,), {"classes": "classes_file"}),
    ("demo",): ((DemoConfig,), {}),
    ("pretrain-base",): ((PretrainConfig,), {"classes": "classes_file", "probe": "probe_train"}),
    ("eval",): ((), {}),
    ("eval", "continual"): ((ContinualConfig, TrainConfig), {}),
    ("labels",): ((), {}),
    ("labels", "record"): ((RecordConfig, TrainConfig), {}),
    ("labels", "inspect"): ((), {}),
    ("eval", "rank"): ((RankConfig, TrainConfig), {}),
}

# Options whose default is None (or empty) meaning "not given, nothing used": no default to show.
NO_DEFAULT: dict[tuple[str, ...], set[str]] = {
    ("build",): {"data_dir", "config", "classes", "teacher", "teachers_dir", "clip_weights"},
    ("inspect",): {"grid"},
    ("train",): {"teacher", "teachers_dir", "data_dir"},
    ("teach",): {"data_dir", "classes"},
    ("pretrain-base",): {"data_dir", "classes"},
    ("eval", "continual"): {"teacher", "teachers_dir"},
    ("labels", "record"): {"teacher", "teachers_dir", "data_dir"},
    ("eval", "rank"): {"teacher", "teachers_dir", "data_dir"},
}

# The modules read by cli/defaults.py from source, so that `hellopack --help` does not import torch.
SOURCE_READ = {
    ("hellopack.distill.teach", "TeachConfig"): TeachConfig,
    ("hellopack.pretrain.config", "PretrainConfig"): PretrainConfig,
    ("hellopack.continual.config", "ContinualConfig"): ContinualConfig,
    ("hellopack.demo", "DemoConfig"): DemoConfig,
}

_BRACKETED = re.compile(r"\\?\[([^\]]*)\]")
_DROPPED_BY_RICH = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")  # rich.markup's tag pattern, unescaped


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(app)))
PATHS = sorted(COMMANDS)


def _ids(path: tuple[str, ...]) -> str:
    return " ".join(path) or "hellopack"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _options(path: tuple[str, ...]) -> list[Any]:
    cmd = COMMANDS[path]
    ctx = cmd.make_context(path[-1] if path else "hellopack", [], resilient_parsing=True)
    return [p for p in cmd.get_params(ctx) if p.param_type_name == "option"]


def _render(path: tuple[str, ...]) -> dict[str, str]:
    """Rendered `--help`: option's first long name -> its whole row (continuation lines joined)."""
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) > 200, "help was not rendered wide"
    rows: dict[str, str] = {}
    current = None
    for line in res.output.splitlines():
        if not line.startswith("│"):
            current = None
            continue
        body = line.strip().strip("│").strip()
        m = re.match(r"^(?:\*\s+)?(--[\w-]+)", body)
        if m:
            current = m.group(1)
            rows[current] = body
        elif current and body:
            rows[current] += " " + body
    return {k: _norm(v) for k, v in rows.items()}


def _long(param: Any) -> str:
    return next(o for o in param.opts if o.startswith("--"))


def _field_default(path: tuple[str, ...], name: str) -> Any:
    classes, renames = CONFIGS[path]
    field = renames.get(name, name)
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name == field:
                return f.default  # MISSING for required fields and factories
    return dataclasses.MISSING


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def test_every_command_has_a_config_entry() -> None:
    assert set(COMMANDS) == set(CONFIGS), "add the new command to CONFIGS (and NO_DEFAULT if needed)"
    for path, names in NO_DEFAULT.items():
        params = {p.name: p for p in _options(path)}
        for name in names:
            assert name in params, f"{_ids(path)}: NO_DEFAULT lists --{name}, which no longer exists"
            assert params[name].default in (None, ()), f"{_ids(path)} --{name} has a default: show it"


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_defaults_from_the_dataclasses_are_shown(path: tuple[str, ...]) -> None:
    rows = _render(path)
    for p in _options(path):
        opt = _long(p)
        row = rows.get(opt)
        assert row is not None, f"{_ids(path)}: {opt} not found in the rendered help"
        if p.name == "help":
            continue
        dc = _field_default(path, p.name)
        where = f"{_ids(path)} {opt}: {row!r}"
        if p.is_flag and not p.secondary_opts:
            # a lone flag defaults to "not given"; its field must agree when the CLI passes a value
            if p.default is not None and dc is not dataclasses.MISSING:
                assert p.default == dc, f"{where}: CLI default {p.default!r}, dataclass {dc!r}"
            continue
        if p.default not in (None, ()):
            if dc is not dataclasses.MISSING:
                assert _shown(p.default) == _shown(dc), (
                    f"{where}: the CLI default {p.default!r} is typed again; read it from the dataclass ({dc!r})")
            shown = _shown(p.default)
            if isinstance(p.default, bool) and p.secondary_opts:  # typer names the flag: [default: no-blur]
                shown = (p.opts if p.default else p.secondary_opts)[0].lstrip("-")
            assert f"[default: {shown}]" in row, f"{where}: default {p.default!r} not shown"
            continue
        brackets = _BRACKETED.findall(row)
        if dc not in (None, (), dataclasses.MISSING):
            assert any(b.startswith(_shown(dc)) for b in brackets), f"{where}: the dataclass default {dc!r} is not shown"
        elif p.name not in NO_DEFAULT.get(path, set()):
            assert brackets, f"{where}: no default shown; say the rule in \\[...] or list it in NO_DEFAULT"


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_bracketed_text_survives_rendering(path: tuple[str, ...]) -> None:
    rows = _render(path)
    for p in _options(path):
        helptext = p.help or ""
        dropped = _DROPPED_BY_RICH.findall(helptext)
        assert not dropped, f"{_ids(path)} {_long(p)}: rich drops {dropped} as markup; write \\[...]"
        for seg in _BRACKETED.findall(helptext):
            assert _norm(f"[{seg}]") in rows[_long(p)], f"{_ids(path)} {_long(p)}: [{seg}] missing from {rows[_long(p)]!r}"


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_flags_show_no_value_type(path: tuple[str, ...]) -> None:
    rows = _render(path)
    for p in _options(path):
        if p.is_flag:
            assert "<bool>" not in rows[_long(p)], f"{_ids(path)} {_long(p)} takes no value: {rows[_long(p)]!r}"


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_every_option_has_a_description(path: tuple[str, ...]) -> None:
    for p in _options(path):
        assert (p.help or "").strip(), f"{_ids(path)} {_long(p)} has no help text"


def test_source_defaults_match_the_dataclasses() -> None:
    for (module, name), cls in SOURCE_READ.items():
        read = vars(source_defaults(module, name))
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING:
                assert f.name not in read, f"{name}.{f.name}"
            else:
                assert read.get(f.name, dataclasses.MISSING) == f.default, f"{name}.{f.name}"


def test_offline_bases_are_listed() -> None:
    from hellopack.models.base import TINY_CONFIGS

    assert offline_bases() == TINY_CONFIGS and len(TINY_CONFIGS) >= 3
    for path, opt in ((("build",), "--base"), (("pretrain-base",), "--config")):
        row = _render(path)[opt]
        for name in TINY_CONFIGS:
            assert name in row, f"{_ids(path)} {opt} does not list {name}: {row!r}"


def test_help_does_not_import_torch() -> None:
    code = "import sys, hellopack_cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
