"""End-to-end `train()` on tiny archives: resume equality, outputs, label sources, bad input, accuracy, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hellopack.errors import HellopackError
from hellopack.progress import RecordingReporter
from hellopack.train import TrainConfig, train
from hellopack.train import checkpoint as ckpt
from test_train_kit import (CLASS_IDS, demo_archive, demo_val, model_tensors, read_json,  # noqa: F401
                            small_archive, write_imagefolder)

REPO = Path(__file__).resolve().parents[1]



def cfg(archive: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(archive=str(archive), arch=kw.pop("arch", "convnet"), out=str(out), device="cpu", **kw)


# ---- resume ----------------------------------------------------------------------------

def test_two_epochs_plus_resume_plus_two_equals_four_straight(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    """mobilenet_v3_small has dropout and BatchNorm, so the RNG and buffers must be restored too."""
    common = dict(arch="mobilenet_v3_small", epochs=4, eval_every=2)
    straight = train(cfg(small_archive, tmp_path / "a", **common))
    first = train(cfg(small_archive, tmp_path / "b", max_steps=4, **common))  # 2 steps/epoch: killed after epoch 2
    assert first["stopped_early"] and first["epoch"] == 2
    assert read_json(tmp_path / "b" / "checkpoints" / "last.json")["meta"]["epoch"] == 2
    rec = RecordingReporter()
    resumed = train(cfg(small_archive, tmp_path / "b", resume=True, **common), rec)
    assert any(m.startswith("resuming") and m.endswith("at epoch 2/4 (step 4)") for m in rec.messages)
    a, b = model_tensors(tmp_path / "a"), model_tensors(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    oa, ob = ckpt.load(tmp_path / "a" / "checkpoints"), ckpt.load(tmp_path / "b" / "checkpoints")
    for pid, st in oa.optimizer["state"].items():
        for key, v in st.items():
            assert torch.equal(v, ob.optimizer["state"][pid][key]) if isinstance(v, torch.Tensor) else v == ob.optimizer["state"][pid][key]
    assert (straight["top1"], straight["top5"]) == (resumed["top1"], resumed["top5"])
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2, 4]


def test_workers_give_the_same_batches(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    train(cfg(small_archive, tmp_path / "w0", epochs=1, workers=0))
    train(cfg(small_archive, tmp_path / "w2", epochs=1, workers=2))
    a, b = model_tensors(tmp_path / "w0"), model_tensors(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- outputs -------------------------------------------------------------------------------

def test_outputs_without_val_say_they_are_not_a_test_accuracy(small_archive: Path, tmp_path: Path,  # noqa: F811
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rec = RecordingReporter()
    res = train(TrainConfig(archive=str(small_archive), arch="convnet", device="cpu", epochs=2, eval_every=1), rec)
    out = tmp_path / "demo-convnet"  # default: <archive stem>-<arch> in the working directory
    assert res == read_json(out / "result.json")
    assert res["evaluated_on"] == "archive images (not a test accuracy)"
    assert res["headline"] == "final epoch's accuracy" and res["epoch"] == 2
    assert res["best_of_epochs"]["note"].startswith("best over the evaluated epochs")
    assert res["recipe"]["epochs"] == 2 and res["recipe"]["lr"] == 0.002  # lr from the manifest's recipe
    assert res["timing"]["steps"] == 4 and res["timing"]["images_seen"] == 32
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["top1"] == res["top1"]
    assert ("train", 4 * 8, "img") in rec.stages
    assert any("not a test accuracy" in m for m in rec.messages)
    with pytest.raises(HellopackError, match=r"already holds a training run; pass --resume to continue it or choose another --out$"):
        train(TrainConfig(archive=str(small_archive), arch="convnet", device="cpu", epochs=2))
    with pytest.raises(HellopackError) as e:
        train(TrainConfig(archive=str(small_archive), arch="convnet", device="cpu", epochs=3, lr=0.1, resume=True))
    assert str(e.value) == (f"checkpoint in '{out / 'checkpoints'}' was made with a different recipe (epochs, lr); "
                            "resume with the same archive, --arch, --seed and recipe, or choose another --out")
    again = train(TrainConfig(archive=str(small_archive), arch="convnet", device="cpu", epochs=2, resume=True))
    assert again["top1"] == res["top1"] and again["timing"]["steps"] == 4  # finished run: nothing left to do


def test_seeds_report_mean_and_std(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    res = train(cfg(small_archive, tmp_path / "s", epochs=1, seeds=2, seed=5, labels="hard"))
    runs = [read_json(tmp_path / "s" / f"seed-{s}" / "result.json") for s in (5, 6)]
    top1 = [r["top1"] for r in runs]
    assert res["seeds"] == [5, 6] and res["top1_per_seed"] == top1
    assert res["top1"] == pytest.approx(sum(top1) / 2)
    assert res["top1_std"] == pytest.approx(abs(top1[0] - top1[1]) / 2 ** 0.5)
    assert read_json(tmp_path / "s" / "result.json") == res


def test_teacher_labels(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    from hellopack.models.students import build_student
    from hellopack.models.teachers import save_state_dict

    ckpt_path = save_state_dict(build_student("convnet", 4, 16, (0.5,) * 3, (0.5,) * 3), tmp_path / "t.safetensors")
    res = train(cfg(small_archive, tmp_path / "t", epochs=1, labels="teacher", teacher=f"convnet:{ckpt_path}",
                    loss="kl"))
    assert res["labels"] == "teacher" and res["recipe"]["teachers"] == [f"convnet:{ckpt_path}"]
    assert res["timing"]["steps"] == 2


# ---- bad input ---------------------------------------------------------------------------

def test_batch_size_larger_than_archive(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(HellopackError) as e:
        train(cfg(small_archive, tmp_path / "x", batch_size=17))
    assert str(e.value) == ("--batch-size 17 is larger than the archive's 16 images, so drop-last would drop "
                            "every batch; use --batch-size 16 or smaller")
    assert not (tmp_path / "x").exists()


def test_unknown_arch_lists_close_matches(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(HellopackError, match=r"^unknown student architecture 'resnet19'; did you mean: resnet18"):
        train(cfg(small_archive, tmp_path / "x", arch="resnet19"))


def test_base_fingerprint_mismatch_is_refused(tmp_path_factory, tmp_path: Path) -> None:
    from test_train_kit import cached_archive
    from hellopack.models.base import load_base

    bad = "sha256:" + "1" * 64
    archive = cached_archive(tmp_path_factory, ipc=4, fingerprint=bad)
    actual = load_base("hellopack-tiny-rn").fingerprint
    with pytest.raises(HellopackError) as e:
        train(cfg(archive, tmp_path / "x"))
    assert str(e.value) == (f"base model fingerprint {actual} does not match the archive's {bad} "
                            "(hellopack-tiny-rn); pass the CLIP weights the archive was built with "
                            "(--clip-weights FILE) or --allow-base-mismatch to use these anyway")
    rec = RecordingReporter()
    res = train(cfg(archive, tmp_path / "y", allow_base_mismatch=True, max_steps=1), rec)
    assert res["timing"]["steps"] == 1
    assert any(m.startswith(f"warning: base model fingerprint {actual} does not match") for m in rec.messages)


def test_val_classes_must_match(demo_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    val = write_imagefolder(tmp_path / "val", 1, 16, seed=3)
    (val / CLASS_IDS[3]).rename(val / "purple_v")
    with pytest.raises(HellopackError) as e:
        train(cfg(demo_archive, tmp_path / "x", val=str(val)))
    assert str(e.value) == (f"--val '{val}' has 4 classes, the archive has 4; only in the archive: yellow_v; "
                            "only in --val: purple_v; pass the validation data of the archive's dataset")


def test_missing_val_path(demo_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(HellopackError, match=r"^--val '.*nope' is neither an existing path nor a dataset recipe"):
        train(cfg(demo_archive, tmp_path / "x", val=str(tmp_path / "nope")))


# ---- accuracy ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("arch,epochs", [("convnet", 10), ("resnet18", 4)])
def test_student_beats_chance_on_held_out_images(arch: str, epochs: int, demo_archive: Path, demo_val: Path,  # noqa: F811
                                                  tmp_path: Path) -> None:
    """4 classes (chance 25 %); required: at least 50 % top-1 on 60 held-out images, i.e. chance + 25 points."""
    res = train(cfg(demo_archive, tmp_path / arch, arch=arch, epochs=epochs, val=str(demo_val)))
    assert res["evaluated_on"] == f"val: {demo_val}" and res["images_evaluated"] == 60
    assert res["top1"] >= 50.0, res["top1"]


# ---- DDP -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_process_gloo_torchrun(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from hellopack.train import TrainConfig, train\n"
        "train(TrainConfig(archive=sys.argv[1], arch='convnet', out=sys.argv[2], device='cpu', epochs=2))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(small_archive), str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_json(tmp_path / "ddp" / "result.json")
    assert res["timing"]["world_size"] == 2 and res["timing"]["steps"] == 4 and res["epoch"] == 2
    assert res["images_evaluated"] == 16  # both shards of the archive images counted
    meta = read_json(tmp_path / "ddp" / "checkpoints" / "last.json")["meta"]
    assert meta["world_size"] == 2
    assert set(ckpt.load(tmp_path / "ddp" / "checkpoints").rng) == {"rank0.cpu", "rank1.cpu"}


# ---- architectures ---------------------------------------------------------------------------

ISSUE_ARCHS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x1_0", "vgg11", "swin_v2_t",
               "vit_b_16", "convnet", "resnet18_cifar"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ISSUE_ARCHS)
def test_every_named_architecture_trains_one_step(arch: str, tmp_path_factory, tmp_path: Path) -> None:
    """At 32 px (CIFAR's size; VGG's five max-pools need at least 32)."""
    from test_train_kit import cached_archive

    archive = cached_archive(tmp_path_factory, ipc=4, size=32)
    res = train(cfg(archive, tmp_path / arch, arch=arch, batch_size=4, max_steps=1))
    assert res["timing"]["steps"] == 1 and res["arch"] == arch
    assert 0.0 <= res["top1"] <= 100.0 and res["images_evaluated"] == 16
    assert not (tmp_path / arch / "checkpoints").exists()  # stopped mid-epoch: nothing to checkpoint
