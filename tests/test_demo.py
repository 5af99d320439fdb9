"""`hellopack demo`, the README's first command: offline, CPU, and its student beats chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellopack.archive import open_archive
from hellopack_cli.app import app


@pytest.mark.slow
def test_demo_writes_an_archive_and_its_student_beats_chance(tmp_path: Path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    archive = tmp_path / "demo.hellopack"
    assert res["archive"] == str(archive)
    rep = open_archive(archive).verify(decode_images=True)
    assert rep.images_checked == 100  # IPC 10 x 10 classes
    assert (tmp_path / "demo-run" / "student" / "result.json").is_file()
    # 10 classes: chance is 10 %; the demo's student must clear it by at least 15 points.
    assert res["student_top1"] >= 0.25, res["student_top1"]
    assert res["val_images"] == 500
    assert res["storage"]["payload_bytes"] < res["storage"]["total_bytes"]
