"""The command line as a user first meets it: --version, --help, commands not built yet."""

from __future__ import annotations

import subprocess
import sys

import hellopack
from typer.testing import CliRunner

from hellopack_cli.app import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout.strip() == f"hellopack {hellopack.__version__}"


def test_help_lists_commands_with_examples():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    flat = " ".join(r.stdout.split())
    for cmd in ("build", "inspect", "train", "teach", "demo"):
        assert f"hellopack {cmd}" in flat, cmd  # a one-line example per command
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0, cmd
        assert f"Example: hellopack {cmd}" in " ".join(sub.stdout.split()), cmd


def test_eval_continual_is_registered():
    r = runner.invoke(app, ["eval", "continual", "--help"])
    assert r.exit_code == 0
    assert "Example: hellopack eval continual" in " ".join(r.stdout.split())


def test_console_script_entry_point_runs():
    # The installed import name is hellopack_cli, never a bare `cli` module.
    out = subprocess.run([sys.executable, "-m", "hellopack_cli", "--version"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.startswith("hellopack ")
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "hellopack"]
    assert ep.value == "hellopack_cli.app:main"
