"""`hellopack eval rank` and `train --images random` as a user runs them, on the tiny synthetic archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellopack.rank import scores
from hellopack_cli.app import app
from test_train_kit import small_archive, write_imagefolder  # noqa: F401  (session fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The archive's 4 classes as an ImageFolder (12 images each): what --data-dir reads."""
    return write_imagefolder(tmp_path_factory.mktemp("src") / "src", 12, 16, seed=5)


def test_rank_trains_every_row_and_scores_them_as_dd_ranking(small_archive: Path, source: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    out = tmp_path / "rank"
    r = runner.invoke(app, ["eval", "rank", str(small_archive), "--arch", "convnet", "--data-dir", str(source),
                            "--data-recipe", "folder", "--epochs", "1", "--real-epochs", "1",
                            "--real-images-per-class", "8", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert set(result["runs"]) == {"distilled_hard", "distilled_own", "random_own", "distilled_own_noaug",
                                   "random_own_noaug", "real_hard"}
    assert result["real"] == "trained with hard labels on 8 random real images per class (a shortened run) for 1 epochs"
    acc = {k: v["per_seed"][0] for k, v in result["accuracy"].items()}
    for name, run in result["runs"].items():  # each row is a `train` run; its accuracy is result.json's, as a fraction
        assert acc[name] == json.loads((Path(run) / "result.json").read_text())["top1"] / 100
    random_cfg = json.loads((out / "random_own" / "result.json").read_text())["config"]
    assert (random_cfg["images"], random_cfg["labels"]) == ("random", "projector")
    noaug = json.loads((out / "random_own_noaug" / "result.json").read_text())["recipe"]
    assert (noaug["mix"], noaug["crop_scale"], noaug["patch_shuffle"]) == ("none", [1.0, 1.0], False)
    s = result["scores"]
    assert s["hlr"]["mean"] == pytest.approx(acc["real_hard"] - acc["distilled_hard"], abs=1e-12)
    assert s["ior"]["mean"] == pytest.approx(acc["distilled_own"] - acc["random_own"], abs=1e-12)
    assert s["lrs"]["mean"] == pytest.approx(scores.squash(0.5 * s["ior"]["mean"] - 0.5 * s["hlr"]["mean"]))
    beta = 0.5 * (acc["distilled_own"] - acc["random_own"]) + 0.5 * (acc["distilled_own_noaug"] - acc["random_own_noaug"])
    assert s["ars"]["mean"] == pytest.approx(scores.squash(beta))
    assert json.loads((out / "rank.json").read_text()) == result

    table = runner.invoke(app, ["eval", "rank", str(small_archive), "--arch", "convnet", "--data-dir", str(source),
                                "--data-recipe", "folder", "--epochs", "1", "--real-acc", "0.9", "--no-ars",
                                "--out", str(tmp_path / "table"), "--quiet"], terminal_width=200)
    assert table.exit_code == 0, table.output
    flat = " ".join(table.stdout.split())
    assert "full real data │ 90.00" in flat
    assert "acc(real data): given with --real-acc (0.9)" in flat
    assert "not run (--no-ars)" in flat


def test_train_random_subset_is_redrawn_per_seed_and_repeatable(small_archive: Path, source: Path,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    import torch

    from hellopack.data import open_source, random_subset

    src = open_source("folder", source)
    a, la = random_subset(src, 4, 0, 16)
    b, _ = random_subset(src, 4, 0, 16)
    c, _ = random_subset(src, 4, 1, 16)
    assert a.dtype == torch.uint8 and a.shape == (16, 3, 16, 16)
    assert la.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert torch.equal(a, b) and not torch.equal(a, c)
    r = runner.invoke(app, ["train", str(small_archive), "--arch", "convnet", "--epochs", "1", "--images", "random",
                            "--data-dir", str(source), "--data-recipe", "folder", "--out", str(tmp_path / "r"), "-q"],
                      terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "convnet, labels: projector, images: random" in r.stdout
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert (result["config"]["images"], result["archive"]["images"]) == ("random", 16)


@pytest.mark.parametrize("argv, message", [
    (["--images", "random"], "--images random needs --data-dir SOURCE: the real training images of the dataset the "
                             "archive was built from"),
    (["--data-dir", "x"], "--data-dir is only used with --images random or full (got --images archive)"),
    (["--images", "some"], "--images 'some' is not one of archive, random, full"),
])
def test_train_images_errors(small_archive: Path, tmp_path: Path, argv: list[str], message: str) -> None:  # noqa: F811
    r = runner.invoke(app, ["train", str(small_archive), "--arch", "convnet", "--out", str(tmp_path / "r"), *argv],
                      terminal_width=300)
    assert r.exit_code == 2
    assert " ".join(r.output.split()) == f"hellopack: error: {message}"


def test_data_dir_with_other_classes_names_both(small_archive: Path, source: Path, tmp_path: Path) -> None:  # noqa: F811
    import shutil

    other = tmp_path / "other"
    shutil.copytree(source / "red_h", other / "red_h")
    shutil.copytree(source / "green_v", other / "purple")
    r = runner.invoke(app, ["train", str(small_archive), "--arch", "convnet", "--images", "random", "--data-dir",
                            str(other), "--data-recipe", "folder", "--out", str(tmp_path / "r")], terminal_width=400)
    assert r.exit_code == 2
    assert " ".join(r.output.split()) == (
        f"hellopack: error: class 'green_v' of the archive (3 of its 4 classes) is not in --data-dir '{other}' read as "
        "folder (its classes: purple, red_h); pass the dataset the archive was built from, or the --data-recipe "
        "that reads it")
    assert not (tmp_path / "r").exists()


def test_rank_refuses_percent_real_acc(small_archive: Path, source: Path, tmp_path: Path) -> None:  # noqa: F811
    r = runner.invoke(app, ["eval", "rank", str(small_archive), "--arch", "convnet", "--data-dir", str(source),
                            "--real-acc", "84.3", "--out", str(tmp_path / "r")], terminal_width=300)
    assert r.exit_code == 2
    assert " ".join(r.output.split()) == "hellopack: error: --real-acc 84.3 is not a fraction in [0, 1]; pass e.g. 0.843 for 84.3 %"
