"""pretrain(): the written base loads strictly with the printed fingerprint, labels are never read,
resume is exact, and bad paths are refused up front."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hellopack.errors import HellopackError
from hellopack.models.base import load_base
from hellopack.pretrain import OBJECTIVE, PretrainConfig, pretrain
from hellopack.progress import Reporter


SMALL = {"per_class": 4, "test_per_class": 2}  # 40 training images, 20 test images




def _cfg(tmp_path: Path, name: str = "base.safetensors", **kw) -> PretrainConfig:
    base = dict(recipe="synthetic", out=str(tmp_path / name), config="hellopack-tiny-vit", epochs=1, batch_size=16,
                synthetic=SMALL, seed=0, device="cpu")
    base.update(kw)
    return PretrainConfig(**base)


class _NoLabel:
    def __init__(self, sample) -> None:
        self.image, self.key = sample.image, sample.key

    @property
    def label(self) -> int:
        raise AssertionError("pretraining read a label")


def poison_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from hellopack.data.synthetic import SyntheticSource

    original = SyntheticSource._load
    monkeypatch.setattr(SyntheticSource, "_load", lambda self, entry: _NoLabel(original(self, entry)))


class _Stop(Exception):
    pass


class _StopAfterEpoch(Reporter):
    """Simulates a killed run: raises right after the given epoch's checkpoint was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def info(self, message: str) -> None:
        if message.startswith(f"epoch {self.epoch}/"):
            raise _Stop(message)


def test_the_base_round_trips_through_load_base_with_the_same_fingerprint(tmp_path: Path) -> None:
    result = pretrain(_cfg(tmp_path, config="hellopack-tiny-rn", epochs=2))
    out = tmp_path / "base.safetensors"
    base = load_base("hellopack-tiny-rn", weights=out)  # strict: the full open_clip state dict
    assert base.fingerprint == result["fingerprint"]
    assert (tmp_path / "base.safetensors.sha256").read_text() == result["fingerprint"] + "\n"
    assert base.custom is True and base.bytes == out.stat().st_size == result["bytes"]
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert (meta["open_clip_config"], meta["epochs"], meta["objective"]) == ("hellopack-tiny-rn", "2", OBJECTIVE)
    assert meta["fingerprint"] == result["fingerprint"]
    assert json.loads(meta["open_clip_model_cfg"]) == open_clip.get_model_config("hellopack-tiny-rn")

    random_init = load_base("hellopack-tiny-rn").model.state_dict()
    saved = load_file(str(out))
    assert set(saved) == set(random_init)  # no projection head, nothing missing
    # text tower untouched (the seeded init), image tower and its BatchNorm statistics trained
    assert all(torch.equal(saved[k], v) for k, v in random_init.items() if not k.startswith("visual."))
    assert not torch.equal(saved["visual.conv1.weight"], random_init["visual.conv1.weight"])
    assert not torch.equal(saved["visual.bn1.running_mean"], random_init["visual.bn1.running_mean"])
    assert int(saved["visual.bn1.num_batches_tracked"]) == 2 * 2  # 2 epochs x 2 steps of 16 of 40 images
    assert [h["epoch"] for h in result["history"]] == [1, 2] and result["steps"] == 4
    assert json.loads((tmp_path / "base.work" / "result.json").read_text())["fingerprint"] == result["fingerprint"]


def test_pretraining_cannot_see_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = pretrain(_cfg(tmp_path, "clean.safetensors"))
    poison_labels(monkeypatch)  # every sample's .label now raises
    blind = pretrain(_cfg(tmp_path, "blind.safetensors"))
    assert blind["fingerprint"] == clean["fingerprint"]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = pretrain(_cfg(tmp_path, "straight.safetensors", config="hellopack-tiny-rn", epochs=2))
    cfg = _cfg(tmp_path, "resumed.safetensors", config="hellopack-tiny-rn", epochs=2)
    with pytest.raises(_Stop):
        pretrain(cfg, _StopAfterEpoch(1))
    assert not (tmp_path / "resumed.safetensors").exists()  # a killed run leaves no base behind
    with pytest.raises(HellopackError, match="holds a checkpoint; pass --resume"):
        pretrain(cfg)
    resumed = pretrain(replace(cfg, resume=True))
    assert resumed["fingerprint"] == straight["fingerprint"]
    a, b = load_file(str(tmp_path / "straight.safetensors")), load_file(str(tmp_path / "resumed.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, epochs=2)
    with pytest.raises(_Stop):
        pretrain(cfg, _StopAfterEpoch(1))
    with pytest.raises(HellopackError, match=r"made with temperature=0.5, this run has temperature=0.2"):
        pretrain(replace(cfg, resume=True, temperature=0.2))


def test_refuses_bad_paths_before_training(tmp_path: Path) -> None:
    with pytest.raises(HellopackError, match="output folder .* does not exist"):
        pretrain(_cfg(tmp_path / "missing"))
    (tmp_path / "base.safetensors").write_bytes(b"x")
    with pytest.raises(HellopackError, match="already exists; pass --force"):
        pretrain(_cfg(tmp_path))
    with pytest.raises(HellopackError, match="must end in .safetensors"):
        _cfg(tmp_path, "base.pt")
    with pytest.raises(HellopackError, match="fewer than one batch of 64"):
        pretrain(_cfg(tmp_path, "other.safetensors", batch_size=64))
    with pytest.raises(HellopackError, match="--temperature has an invalid value 0"):
        _cfg(tmp_path, temperature=0)


def test_probe_scores_the_written_base(tmp_path: Path) -> None:
    result = pretrain(_cfg(tmp_path, probe_train=40, probe_test=20))
    probe = result["probe"]
    assert (probe["train_images"], probe["test_images"], probe["classes"]) == (40, 20, 10)
    assert 0.0 <= probe["top1"] <= 1.0


def test_fit_linear_separates_separable_features() -> None:
    from hellopack.pretrain.probe import fit_linear

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 5
    y = torch.arange(60) % 3
    x = centres[y] + 0.1 * torch.randn(60, 8, generator=g)
    head = fit_linear(x, y, 3)
    assert torch.equal(head(x).argmax(1), y)
