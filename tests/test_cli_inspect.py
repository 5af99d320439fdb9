"""`hellopack inspect` on the spec's test vectors, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hellopack_cli.app import app

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"
GOOD = VECTORS / "valid-minimal.hellopack"
BAD = sorted(p for p in VECTORS.glob("*.hellopack") if not p.name.startswith("valid-"))

runner = CliRunner()


def test_table_shows_what_is_inside():
    r = runner.invoke(app, ["inspect", str(GOOD)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    for text in ("vector-minimal", "red checker", "blue stripe", "IPC 1", "4x4 px", "tiny-vector",
                 "74 stored", "lora.safetensors", "images.tar", "what it replaces", "92x smaller"):
        assert text in out, text


def test_json_is_complete_and_parses():
    r = runner.invoke(app, ["inspect", str(GOOD), "--json"])
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert s["classes"] == {"count": 2, "first": ["red checker", "blue stripe"]}
    assert s["lora"]["parameters"] == 74
    assert [m["name"] for m in s["members"]] == ["prompts.json", "lora.safetensors", "images.tar"]
    # 300 epochs x 2 images x 2 classes x 2 B of logits + 300 x 2 x 41 B of augmentation records
    assert s["replaces"]["soft_label_bytes"] == 2400
    assert s["replaces"]["total_bytes"] == 2400 + 24600
    assert s["replaces"]["payload_bytes"] == 85 + 210
    assert s["manifest"]["format_version"] == [1, 1]


def test_verify_passes_on_good():
    r = runner.invoke(app, ["inspect", str(GOOD), "--verify", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["verified"] == {"members_checked": 3, "images_checked": 2}


@pytest.mark.parametrize("vector", BAD, ids=lambda p: p.stem)
def test_every_malformed_vector_exits_2_with_its_one_line(vector: Path):
    expected = (vector.parent / (vector.stem + ".error.txt")).read_text().strip()
    r = runner.invoke(app, ["inspect", str(vector), "--verify"])
    assert r.exit_code == 2
    assert r.stderr == f"hellopack: error: {vector}: {expected}\n"
    assert r.stdout == ""


def test_missing_archive():
    r = runner.invoke(app, ["inspect", "no/such.hellopack"])
    assert r.exit_code == 2
    assert r.stderr == "hellopack: error: archive 'no/such.hellopack' does not exist; check the path\n"


def test_grid_writes_one_row_per_class(tmp_path: Path):
    out = tmp_path / "sheet.png"
    r = runner.invoke(app, ["inspect", str(GOOD), "--grid", str(out)])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.height == 2 * (96 + 2)  # two classes, one row each


def test_grid_is_not_left_behind_when_archive_is_bad(tmp_path: Path):
    bad = tmp_path / "bad.hellopack"
    data = bytearray(GOOD.read_bytes())
    bad.write_bytes(bytes(data[: len(data) - 40]))
    r = runner.invoke(app, ["inspect", str(bad), "--grid", str(tmp_path / "sheet.png")])
    assert r.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hellopack"]


def test_custom_base_is_an_external_dependency_counted_both_ways(tmp_path: Path):
    from test_archive_kit import base_doc, write

    doc = base_doc()
    doc["manifest"]["base"].update({"custom": True, "bytes": 10_000})
    path = write(doc, tmp_path / "custom.hellopack")
    s = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)
    r = s["replaces"]
    assert r["payload_with_base_bytes"] == r["payload_bytes"] + 10_000
    assert r["ratio_with_base"] == r["total_bytes"] / (r["payload_bytes"] + 10_000)
    assert [e["bytes"] for e in s["external"]] == [10_000]
    table = runner.invoke(app, ["inspect", str(path)]).stdout
    assert "external dependency" in table and "ratio with the base counted" in table
    assert "2.62x smaller" in table  # 27,000 B / (295 + 10,000) B: two decimals below 10x, not "2.6x" or "3x"


def test_a_payload_larger_than_the_labels_it_replaces_says_so(tmp_path: Path):
    from test_archive_kit import base_doc, write

    from hellopack.summary import ratio_text, summary_line

    doc = base_doc()
    doc["manifest"]["recipe"]["epochs"] = 1  # 2 images x 2 classes for 1 epoch: 8 B of logits + 82 B of records
    path = write(doc, tmp_path / "one-epoch.hellopack")
    assert summary_line(path) == (f"wrote {path}: 2 images (2 classes, IPC 1), label payload 295 B replaces 90 B of "
                                  "stored soft labels (3.28x larger: at this size stored soft labels take less)")
    table = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"}).stdout
    assert "3.28x larger: at this size stored soft labels take less" in table and "smaller" not in table
    assert "stored soft labels (1 epoch x 2 images x 2 classes x 2 B)" in table
    assert "1 epoch, adamw lr" in table
    assert [ratio_text(r) for r in (1 / 1.07, 1.07, 91.5, 12_345.6)] == [
        "1.07x larger: at this size stored soft labels take less", "1.07x smaller", "92x smaller", "12,346x smaller"]


def test_archive_that_is_a_folder(tmp_path: Path):
    r = runner.invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2
    assert r.stderr == f"hellopack: error: archive '{tmp_path}' is a folder; pass the .hellopack file itself\n"


def test_grid_that_is_a_folder(tmp_path: Path):
    r = runner.invoke(app, ["inspect", str(GOOD), "--grid", str(tmp_path)])
    assert r.exit_code == 2
    assert r.stderr == (f"hellopack: error: --grid '{tmp_path}' is a folder; name the .png file, "
                        f"e.g. {tmp_path / 'sheet.png'}\n")
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_json_never_prints_infinity(monkeypatch):
    """1e400 in a manifest is refused by the reader; and should a summary ever hold inf, --json refuses
    rather than print `Infinity` (not JSON)."""
    vector = VECTORS / "non-finite-number.hellopack"
    r = runner.invoke(app, ["inspect", str(vector), "--json"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == (f"hellopack: error: {vector}: manifest: invalid JSON (key \"note\" holds 1e400, which is "
                        "not a finite number)\n")
    import hellopack_cli.inspect_cmd as ic

    real = ic.summarize
    monkeypatch.setattr(ic, "summarize", lambda a: {**real(a), "ratio": float("inf")})
    r = runner.invoke(app, ["inspect", str(GOOD), "--json"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == ("hellopack: error: the archive summary holds a number JSON cannot represent (NaN or "
                        "Infinity); the archive is damaged, rebuild it\n")


@pytest.mark.parametrize("how", ["same path", "dotted path", "symlink", "hard link"])
def test_grid_never_writes_over_the_archive(tmp_path: Path, how: str):
    import os
    import shutil

    archive = Path(shutil.copy(GOOD, tmp_path / "a.hellopack"))
    grid = {"same path": archive, "dotted path": tmp_path / "." / "a.hellopack",
            "symlink": tmp_path / "link.png", "hard link": tmp_path / "hard.png"}[how]
    if how == "symlink":
        os.symlink(archive, grid)
    elif how == "hard link":
        os.link(archive, grid)
    r = runner.invoke(app, ["inspect", str(archive), "--grid", str(grid)])
    assert r.exit_code == 2
    assert r.stderr == (f"hellopack: error: --grid '{grid}' is the archive itself; name another .png file, "
                        f"e.g. {tmp_path / 'a.png'}\n")
    assert archive.read_bytes() == GOOD.read_bytes() and r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"a.hellopack", grid.name})


def test_inspect_says_which_training_protocol_the_archive_carries():
    from hellopack.distill import BuildConfig
    from hellopack.summary import describe_protocol

    r = runner.invoke(app, ["inspect", str(GOOD), "--json"])
    assert json.loads(r.stdout)["protocol"] == (
        "RDED's evaluation: half-cosine schedule, RDED's lr by student (0.001 for others), decay 0.01 on weights, "
        "batch 2, crops (1.0, 1.0) after patch shuffle, cutmix (alpha 1.0), val resize 4")
    in1k = BuildConfig(recipe="imagenet", out="x").train_recipe(factor=2, size=224, num_classes=1000, num_images=10_000)
    assert describe_protocol(in1k) == (
        "RDED's evaluation: half-cosine schedule, RDED's lr by student (0.001 for others), decay 0.01 on weights, "
        "batch 100, crops (0.5, 1.0) after patch shuffle, cutmix (alpha 1.0), val resize 256")
    old = {k: v for k, v in in1k.items() if k not in ("protocol", "lr_by_arch", "decay", "mix_alpha", "crop_scale",
                                                     "val_resize")}
    assert describe_protocol(old).startswith("hellopack 0.1 (written before the RDED protocol): per-step cosine")
    table = runner.invoke(app, ["inspect", str(GOOD)], env={"COLUMNS": "200"}).stdout
    assert "RDED's evaluation: half-cosine schedule" in table and "crops scored by the projector" in table
