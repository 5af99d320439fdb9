"""Teacher files as users have them (issue 16, part 3): the checkpoints torchvision's reference
``references/classification/train.py`` writes load as teachers with no conversion, alone
(``--teacher resnet18:model_8.pth``, ``#ema`` for its EMA weights) or as a folder
(``--teachers-dir resnet18:DIR``); anything else that would run code is still refused."""

from __future__ import annotations

import argparse
import os
import pathlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from typer.testing import CliRunner

from hellopack.distill import BuildConfig, build
from hellopack.distill.teachers import dir_specs, load_ensemble
from hellopack.errors import HellopackError
from hellopack.models.teachers import load_teacher
from hellopack_cli.app import app

from helpers_build import SYN, TINY_BUILD
from test_train_kit import small_archive  # noqa: F401

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference_args(**extra) -> argparse.Namespace:
    """The arguments train.py keeps in every checkpoint (a real argparse.Namespace from a parser)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data-path", default="/datasets01/imagenet_full_size/061417/")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", default=32, type=int)
    p.add_argument("--epochs", default=90, type=int)
    p.add_argument("--lr", default=0.1, type=float)
    p.add_argument("--momentum", default=0.9, type=float)
    p.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay")
    p.add_argument("--lr-scheduler", default="steplr")
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--model-ema-decay", default=0.99998, type=float)
    p.add_argument("--output-dir", default="runs/in1k-r18")
    p.add_argument("--weights", default=None)
    args = p.parse_args(["--model-ema"])
    for k, v in extra.items():
        setattr(args, k, v)
    return args


def reference_checkpoint(path: Path, num_classes: int = 10, *, ema: bool = True, seed: int = 0, **extra) -> dict:
    """What train.py saves after an epoch: model, optimizer, lr_scheduler, epoch, args (+ model_ema)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    model_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    model_ema.update_parameters(model)  # the first update copies the weights
    model.train()
    loss = model(torch.rand(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    opt.step()  # optimizer state with momentum buffers, weights moved away from the EMA's
    sched.step()
    model_ema.update_parameters(model)
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
            "epoch": 8, "args": reference_args(**extra)}
    if ema:
        ckpt["model_ema"] = model_ema.state_dict()
    torch.save(ckpt, path)
    return ckpt


def by_hand(state: dict, num_classes: int = 10) -> torch.nn.Module:
    """The torchvision model loaded the way a user would, with the same normalisation as a teacher."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.load_state_dict(state)
    norm = torchvision.transforms.Normalize(MEAN, STD)
    return torch.nn.Sequential(norm, net).eval()


def test_a_reference_checkpoint_is_a_teacher_with_no_conversion(tmp_path: Path) -> None:
    path = tmp_path / "model_8.pth"
    ckpt = reference_checkpoint(path)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["optimizer"]["state"]
    assert "n_averaged" in ckpt["model_ema"] and all(k.startswith("module.") for k in ckpt["model_ema"]
                                                      if k != "n_averaged")
    x = torch.rand(3, 3, 32, 32)
    ens = load_ensemble([f"resnet18:{path}"], 10, 32, MEAN, STD, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(ens(x), by_hand(ckpt["model"])(x))
        ema = {k[len("module."):]: v for k, v in ckpt["model_ema"].items() if k != "n_averaged"}
        got = load_teacher(f"resnet18:{path}#ema", 10, 32, MEAN, STD)(x)
        assert torch.equal(got, by_hand(ema)(x))
        assert not torch.allclose(got, ens(x))  # the EMA weights, not the model's


def test_ddp_prefixed_model_and_missing_ema(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "args": reference_args(),
                "epoch": 0}, path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_teacher(f"resnet18:{path}", 10, 32, MEAN, STD)(x), by_hand(net.state_dict())(x))
    with pytest.raises(HellopackError) as e:
        load_teacher(f"resnet18:{path}#ema", 10, 32, MEAN, STD)
    assert str(e.value) == (f"teacher checkpoint '{path}' has no 'model_ema' (torchvision's train.py writes it with "
                            f"--model-ema); drop '#ema' to use its model")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_a_checkpoint_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "FILE"
    path = tmp_path / "model_8.pth"
    ckpt = reference_checkpoint(path)
    ckpt["args"].hook = _RunsCode(marker)  # hidden where a user would not look
    torch.save(ckpt, path)
    with pytest.raises(HellopackError) as e:
        load_teacher(f"resnet18:{path}", 10, 32, MEAN, STD)
    assert str(e.value) == (f"refusing to load teacher checkpoint '{path}': it is not a plain tensor file that loads "
                            f"without running code (Unsupported global: GLOBAL posix.system; only tensors, "
                            f"argparse.Namespace are allowed); save a plain state dict or a .safetensors file")
    assert not marker.exists()


def test_another_global_is_refused_with_the_exact_message(tmp_path: Path) -> None:
    path = tmp_path / "model_3.pth"
    reference_checkpoint(path, data_path=pathlib.PurePosixPath("/data/imagenet"))  # a Path among the args
    with pytest.raises(HellopackError) as e:
        load_teacher(f"resnet18:{path}", 10, 32, MEAN, STD)
    assert str(e.value) == (f"refusing to load teacher checkpoint '{path}': it is not a plain tensor file that loads "
                            f"without running code (Unsupported global: GLOBAL pathlib.PurePosixPath; only tensors, "
                            f"argparse.Namespace are allowed); save a plain state dict or a .safetensors file")


def test_a_folder_of_reference_checkpoints(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for epoch in (0, 2, 10):
        reference_checkpoint(runs / f"model_{epoch}.pth", seed=epoch)
    (runs / "checkpoint.pth").write_bytes((runs / "model_10.pth").read_bytes())  # train.py's copy of the latest
    (runs / "log.txt").write_text("not a checkpoint")
    want = [f"resnet18:{runs / f'model_{e}.pth'}" for e in (0, 2, 10)]  # epoch order, the copy skipped
    assert dir_specs(f"resnet18:{runs}") == want
    assert dir_specs(f"resnet18:{runs}#ema") == [s + "#ema" for s in want]
    with pytest.raises(HellopackError) as e:
        dir_specs(runs)
    assert str(e.value) == (f"teachers folder '{runs}' has checkpoints but no trajectory.json; name their "
                            f"architecture: --teachers-dir ARCH:{runs} (e.g. resnet18:{runs})")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HellopackError) as e:
        dir_specs(f"resnet18:{empty}")
    assert str(e.value) == (f"teachers folder '{empty}' holds no .pth/.pt/.safetensors checkpoints; pass the "
                            f"--output-dir of torchvision's train.py or a `hellopack teach` folder")


def test_train_labels_on_the_fly_from_a_reference_folder(small_archive: Path, tmp_path: Path,  # noqa: F811
                                                         monkeypatch) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for epoch in (1, 2):
        reference_checkpoint(runs / f"model_{epoch}.pth", num_classes=4, seed=epoch)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", str(small_archive), "--arch", "convnet", "--labels", "teacher",
                                   "--teachers-dir", f"resnet18:{runs}#ema", "--epochs", "1", "--device", "cpu",
                                   "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 0, res.output


def test_build_with_a_reference_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model_8.pth"
    reference_checkpoint(path, num_classes=SYN.num_classes)
    cfg = BuildConfig(recipe="synthetic", out=str(tmp_path / "b.hellopack"), workdir=str(tmp_path / "w"),
                      synthetic=SYN, teachers=(f"resnet18:{path}",), max_images=8, fidelity_images=4, **TINY_BUILD)
    assert Path(build(cfg)).is_file()
