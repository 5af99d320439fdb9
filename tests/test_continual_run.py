"""`eval continual` end to end on a tiny archive: continual.json, the PNG, the table, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from hellopack.continual import ContinualConfig, continual
from hellopack.continual.split import seeded_order
from hellopack.errors import HellopackError
from hellopack.progress import RecordingReporter
from hellopack.train import TrainConfig
from hellopack_cli import continual_cmd
from test_train_kit import demo_archive, demo_val  # noqa: F401



def config(archive: Path, val: Path, out: Path, **kw) -> ContinualConfig:
    t = TrainConfig(archive=str(archive), arch="convnet", val=str(val), out=str(out), device="cpu", epochs=2,
                    resume=kw.pop("resume", False), seed=kw.pop("seed", 0))
    return ContinualConfig(train=t, steps=2, labels=("projector", "hard"), **kw)


@pytest.fixture(scope="module")
def finished(demo_archive: Path, demo_val: Path, tmp_path_factory) -> tuple[Path, dict]:  # noqa: F811
    """One 2-step run, projector and hard labels (4 classes x 10 images; 2 epochs each)."""
    out = tmp_path_factory.mktemp("continual") / "run"
    return out, continual(config(demo_archive, demo_val, out))


def test_two_steps_write_continual_json_and_a_png(finished) -> None:
    out, result = finished
    saved = json.loads((out / "continual.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["complete"] and saved["steps"] == 2 and saved["labels"] == ["projector", "hard"]
    order = seeded_order(4, 0)
    assert saved["order"] == order and saved["groups"] == [order[:2], order[2:]]
    for src in ("projector", "hard"):
        rows = saved["runs"][src]
        assert [r["step"] for r in rows] == [1, 2]
        assert [r["classes_seen"] for r in rows] == [2, 4]
        assert [r["class_indices"] for r in rows] == [order[:2], order]
        assert [r["images_trained"] for r in rows] == [20, 40]  # 10 archive images per class
        assert [r["images_evaluated"] for r in rows] == [30, 60]  # 15 val images per seen class
        assert [r["top5_k"] for r in rows] == [2, 4]
        assert all(r["top5"] == 100.0 for r in rows)  # top-min(5, seen) with <= 4 classes
        assert all(0.0 <= r["top1"] <= 100.0 and r["train_seconds"] > 0 and r["epochs"] == 2 for r in rows)
        assert all(not r["skipped_on_resume"] for r in rows)
        for r in rows:
            run = json.loads((Path(r["out"]) / "result.json").read_text())
            assert run["labels"] == src and run["archive"]["classes"] == r["classes_seen"]
            assert run["top1"] == r["top1"]
    assert Path(saved["runs"]["hard"][1]["out"]) == out / "hard" / "step-2"
    assert saved["evaluated_on"].startswith("val: ")
    assert saved["plot"] == "continual.png" and saved["plot_backend"] in ("pillow", "matplotlib")
    with Image.open(out / "continual.png") as im:
        assert im.format == "PNG" and im.size == (900, 560)
        # both lines are drawn: the projector blue and the hard-label orange appear
        colors = {c for _, c in im.convert("RGB").getcolors(900 * 560)}
    assert (31, 119, 180) in colors and (255, 127, 14) in colors


def test_resume_skips_finished_steps_and_retrains_the_missing_one(finished, tmp_path: Path, demo_archive: Path,  # noqa: F811
                                                                  demo_val: Path) -> None:  # noqa: F811
    src, before = finished
    out = tmp_path / "run"
    shutil.copytree(src, out)
    shutil.rmtree(out / "projector" / "step-2")  # as if killed before step 2's projector run
    rec = RecordingReporter()
    after = continual(config(demo_archive, demo_val, out, resume=True), rec)
    skipped = [m for m in rec.messages if m.endswith("finished earlier, skipped")]
    assert skipped == ["step 1/2 (projector labels, 2 classes, 20 images): finished earlier, skipped",
                       "step 1/2 (hard labels, 2 classes, 20 images): finished earlier, skipped",
                       "step 2/2 (hard labels, 4 classes, 40 images): finished earlier, skipped"]
    assert rec.stage_names.count("train") == 1  # only the missing run trained
    for s in ("projector", "hard"):
        assert [r["top1"] for r in after["runs"][s]] == [r["top1"] for r in before["runs"][s]]  # CPU: bit-exact
        assert [r["skipped_on_resume"] for r in after["runs"][s]] == ([True, False] if s == "projector" else [True, True])
    # without --resume the folder is refused before any work
    with pytest.raises(HellopackError, match="already holds a continual run; pass --resume to continue it"):
        continual(config(demo_archive, demo_val, out))
    # another class order is not silently mixed with the finished runs
    order = tmp_path / "order.txt"
    order.write_text("".join(f"{c}\n" for c in reversed(after["order"])))
    with pytest.raises(HellopackError, match="was made with a different class split"):
        continual(config(demo_archive, demo_val, out, resume=True, order=str(order)))


def test_cli_prints_the_table_and_refuses_a_bad_order_file(finished, tmp_path: Path, demo_archive: Path,  # noqa: F811
                                                           demo_val: Path) -> None:  # noqa: F811
    app = typer.Typer()
    app.command()(continual_cmd.continual)
    app.command("other")(lambda: None)  # two commands: the app keeps the subcommand name
    out, _ = finished
    r = CliRunner().invoke(app, ["continual", str(demo_archive), "--arch", "convnet", "--val", str(demo_val),
                                 "--steps", "2", "--labels", "projector,hard", "--epochs", "2", "--device", "cpu",
                                 "--out", str(out), "--resume"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "2-step class-incremental (GDumb), top-1 / top-5 %" in r.output and "hard top-1" in r.output
    rows = json.loads((out / "continual.json").read_text())["runs"]
    for step in (0, 1):
        p, h = rows["projector"][step], rows["hard"][step]
        line = next(x for x in r.output.splitlines() if [c.strip() for c in x.split("│")[1:2]] == [str(step + 1)])
        assert f"{p['top1']:.2f}" in line and f"{h['top1']:.2f}" in line and f" {p['images_trained']} " in line
    bad = tmp_path / "order.txt"
    bad.write_text("0\n1\n1\n")
    r = CliRunner().invoke(app, ["continual", str(demo_archive), "--arch", "convnet", "--order", str(bad),
                                 "--device", "cpu", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "line 3: class 1 ('green v') is listed again (first on line 2)" in r.output
