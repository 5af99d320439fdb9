"""hellopack.models.teachers: specs, safe checkpoint loading, class-count checks, saving."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hellopack.errors import HellopackError
from hellopack.models.students import build_student
from hellopack.models.teachers import load_teacher, parse_teacher_spec, save_state_dict

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = build_student("convnet", 4, 16, MEAN, STD)
    with torch.no_grad():
        model.net.classifier.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    return model.eval()


def _same(teacher, model) -> bool:
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(teacher(x), model(x))


def test_parse_spec():
    assert parse_teacher_spec("resnet18:ckpt/t.pt") == ("resnet18", "ckpt/t.pt")
    assert parse_teacher_spec("resnet18:C:/x.pt") == ("resnet18", "C:/x.pt")
    for bad in ("resnet18", ":x.pt", "resnet18:"):
        with pytest.raises(HellopackError, match="must be ARCH:CHECKPOINT"):
            parse_teacher_spec(bad)
    with pytest.raises(HellopackError, match="did you mean: resnet18"):
        parse_teacher_spec("resnet81:x.pt")


def test_save_and_load_safetensors_roundtrip(trained, tmp_path):
    path = save_state_dict(trained, tmp_path / "t.safetensors")
    assert set(load_file(str(path))) == set(trained.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]  # no temp file left
    teacher = load_teacher(f"convnet:{path}", 4, 16, MEAN, STD)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert _same(teacher, trained)


@pytest.mark.parametrize("wrap", ["raw", "ddp", "compile", "wrapped-dict"])
def test_torch_checkpoints_with_prefixes(trained, tmp_path, wrap):
    raw = trained.net.state_dict()
    state = {
        "raw": raw,
        "ddp": {f"module.{k}": v for k, v in raw.items()},
        "compile": {f"_orig_mod.net.{k}": v for k, v in raw.items()},
        "wrapped-dict": {"model": {f"module.{k}": v for k, v in raw.items()}, "epoch": 5},
    }[wrap]
    path = tmp_path / "t.pth"
    torch.save(state, path)
    assert _same(load_teacher(f"convnet:{path}", 4, 16, MEAN, STD), trained)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_pickle_with_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": _Evil(marker)}, f)
    with pytest.raises(HellopackError, match=r"^refusing to load teacher checkpoint .*evil\.pt.*\(Unsupported .*\); save a plain state dict"):
        load_teacher(f"convnet:{path}", 4, 16, MEAN, STD)
    assert not marker.exists()
    torch.save({"model": _Evil(marker)}, tmp_path / "evil2.pt")
    with pytest.raises(HellopackError, match="refusing to load"):
        load_teacher(f"convnet:{tmp_path / 'evil2.pt'}", 4, 16, MEAN, STD)
    assert not marker.exists()


def test_class_count_mismatch(trained, tmp_path):
    path = save_state_dict(trained, tmp_path / "t.safetensors")
    with pytest.raises(HellopackError, match=rf"^teacher convnet:{path} has 4 classes but the dataset has 10; "):
        load_teacher(f"convnet:{path}", 10, 16, MEAN, STD)


def test_wrong_architecture_and_missing_file(trained, tmp_path):
    path = save_state_dict(trained, tmp_path / "t.safetensors")
    with pytest.raises(HellopackError, match=r"does not match architecture resnet18 \(\d+ missing, \d+ unexpected"):
        load_teacher(f"resnet18:{path}", 4, 16, MEAN, STD)
    cifar = build_student("resnet18_cifar", 4, 16, MEAN, STD)
    p2 = save_state_dict(cifar, tmp_path / "cifar.safetensors")
    with pytest.raises(HellopackError, match=r"did you mean resnet18_cifar:"):
        load_teacher(f"resnet18:{p2}", 4, 16, MEAN, STD)
    with pytest.raises(HellopackError, match="teacher checkpoint 'nope.pt' not found"):
        load_teacher("convnet:nope.pt", 4, 16, MEAN, STD)
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(HellopackError, match=r"refusing to load teacher checkpoint .*junk\.pt"):
        load_teacher(f"convnet:{tmp_path / 'junk.pt'}", 4, 16, MEAN, STD)


def test_torchvision_weights_names(monkeypatch):
    with pytest.raises(HellopackError, match=r"resnet18:IMAGENET1K_V1 has 1000 classes but the dataset has 10"):
        load_teacher("resnet18:IMAGENET1K_V1", 10, 32, MEAN, STD)
    with pytest.raises(HellopackError, match=r"no resnet18 weights of that name \(torchvision has: IMAGENET1K_V1\)"):
        load_teacher("resnet18:IMAGENET1K_V9", 10, 32, MEAN, STD)
    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(HellopackError, match=r"could not download torchvision weights resnet18:IMAGENET1K_V1.*"
                                             r"pass a checkpoint file"):
        load_teacher("resnet18:IMAGENET1K_V1", 1000, 32, MEAN, STD)
