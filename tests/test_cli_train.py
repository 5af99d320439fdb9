"""`hellopack train` as a user runs it: the table in percent, --json, the run folder per seed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hellopack_cli.app import app
from test_train_kit import small_archive  # noqa: F401  (session fixture)

runner = CliRunner()


def test_two_seeds_table_and_json(small_archive: Path, tmp_path: Path):  # noqa: F811
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(small_archive), "--arch", "convnet", "--epochs", "1", "--seeds", "2",
                            "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.stdout.split())
    assert "(mean and sample std over 2 seeds)" in flat
    assert "archive images (not a test accuracy)" in flat  # no --val: says what it evaluated on
    result = json.loads((out / "seed-1" / "result.json").read_text())
    assert 0.0 <= result["top1"] <= 100.0
    assert f"{result['top1']:.2f}" in r.stdout  # percent, as stored, not multiplied again

    again = runner.invoke(app, ["train", str(small_archive), "--arch", "convnet", "--epochs", "1",
                                "--out", str(tmp_path / "json"), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["arch"] == "convnet"
