"""The options people reach for: quick builds (--max-images, --fidelity-images), quick evaluations
(--val-images), teachers from a folder on train, run folders that do not collide, a note on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hellopack.archive import open_archive
from hellopack.distill import BuildConfig, build
from hellopack.data import SyntheticConfig, open_source
from hellopack.data.subset import first_n
from hellopack.progress import RecordingReporter
from hellopack.train import TrainConfig, train
from hellopack.train.runs import default_run_name, input_size_note

from helpers_build import SYN, TINY_BUILD, tiny_teacher
from test_train_kit import demo_val, small_archive  # noqa: F401


def test_first_n_takes_a_views_first_images_in_its_fixed_order() -> None:
    src = open_source("synthetic", synthetic=SyntheticConfig(num_classes=3, per_class=10, test_per_class=2,
                                                              image_size=16))
    view = src.shard(1, 3)
    sub = first_n(view, 4)
    assert sub.num_samples == 4 and [s.key for s in sub] == [s.key for s in view][:4]
    assert first_n(src, 100) is src and first_n(src, None) is src


def test_a_quick_build_fits_on_the_first_images_and_measures_on_a_few(tmp_path: Path) -> None:
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    rec = RecordingReporter()
    cfg = BuildConfig(recipe="synthetic", out=str(tmp_path / "q.hellopack"), workdir=str(tmp_path / "w"),
                      synthetic=SYN, teachers=(f"convnet:{teacher}",), max_images=8, fidelity_images=5,
                      **TINY_BUILD)
    m = open_archive(build(cfg, rec)).manifest
    totals = {name: total for name, total, _ in rec.stages}
    assert totals["fit projector"] == 2  # 8 images at batch 8, 2 epochs (48 images would be 12 steps)
    assert totals["fidelity"] == 5 and m["fidelity"]["images"] == 5
    assert any(msg.startswith("warning: the fidelity figures come from 5 held-out images only") for msg in rec.messages)


def test_train_takes_teachers_from_a_folder_and_caps_the_val_images(small_archive: Path, demo_val: Path,  # noqa: F811
                                                                     tmp_path: Path, monkeypatch) -> None:
    traj = tmp_path / "traj"
    traj.mkdir()
    tiny_teacher(traj / "e1.safetensors", image_size=16)
    (traj / "trajectory.json").write_text(json.dumps({"arch": "convnet", "checkpoints": [{"file": "e1.safetensors"}]}))
    cfg = TrainConfig(archive=str(small_archive), arch="convnet", labels="teacher", teachers_dir=str(traj),
                      val=str(demo_val), val_images=7, epochs=1, device="cpu")
    assert cfg.teacher_specs() == (f"convnet:{traj / 'e1.safetensors'}",)
    monkeypatch.chdir(tmp_path)
    res = train(cfg)
    assert res["images_evaluated"] == 7 and res["evaluated_on"].endswith("(first 7 images)")
    assert Path(res["out"]).name == f"{small_archive.stem}-convnet-teacher"  # not the projector run's folder


def test_run_names_and_the_small_input_note() -> None:
    assert default_run_name("in1k", "resnet18", "projector") == "in1k-resnet18"
    assert default_run_name("in1k", "resnet18", "hard") == "in1k-resnet18-hard"
    assert input_size_note("swin_v2_t", 32) == (
        "swin_v2_t is designed for 224 px inputs and the archive's images are 32 px: expect low accuracy (its stem "
        "downsamples them to a few pixels); for small images try convnet or resnet18_cifar")
    assert input_size_note("resnet18_cifar", 32) is None and input_size_note("swin_v2_t", 224) is None


@pytest.mark.parametrize("flag,value,message", [("val_images", 0, "--val-images must be positive, got 0")])
def test_bad_option_values(flag: str, value: int, message: str) -> None:
    from hellopack.errors import HellopackError

    manifest = {"images": {"size": 16, "factor": 1}, "recipe": {}}
    with pytest.raises(HellopackError) as e:
        TrainConfig(archive="a", arch="convnet", **{flag: value}).resolve(manifest)
    assert str(e.value) == message


def test_teach_max_images_trains_on_the_first_images(tmp_path: Path) -> None:
    from hellopack.distill.teach import TeachConfig, teach

    rec = RecordingReporter()
    teach(TeachConfig(recipe="synthetic", out=str(tmp_path / "traj"), arch="convnet", epochs=1, keep_every=1,
                      batch_size=8, synthetic=SYN, max_images=16, device="cpu"), rec)
    assert rec.stages == [("teach convnet", 2, "step")]  # 16 of the 48 images at batch 8
