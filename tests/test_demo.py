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


def test_demo_says_how_the_label_storage_compares(tmp_path: Path, monkeypatch):
    """The text summary (run_demo stubbed): one epoch of 2 images is less than the payload, and it says so."""
    import hellopack.demo
    from hellopack.archive.storage import label_storage_from_counts

    def fake_run_demo(cfg, reporter):
        return {"archive": str(tmp_path / "demo.hellopack"), "arch": "convnet", "student_top1": 0.5,
                "val_images": 10, "classes": 2, "teacher_top1": 0.6,
                "storage": label_storage_from_counts(classes=2, images=2, epochs=1, payload_bytes=295),
                "timings": {"teach_s": 1.0, "build_s": 2.0, "train_s": 3.0}}

    monkeypatch.setattr(hellopack.demo, "run_demo", fake_run_demo)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    assert ("label storage: the archive's 295 B of LoRA + prompts replace 90 B of stored soft labels for 1 epoch "
            "(3.28x larger: at this size stored soft labels take less)") in r.stdout.splitlines()
