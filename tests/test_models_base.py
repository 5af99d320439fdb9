"""hellopack.models.base and common: loading the open_clip base, weights files, fingerprint."""

from __future__ import annotations

import hashlib
import socket
import time

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hellopack.errors import HellopackError
from hellopack.models import base as base_mod
from hellopack.models.base import TINY_CONFIGS, fingerprint, load_base
from hellopack.models.common import Normalize, ResizeNormalize


@pytest.fixture(scope="module")
def tiny():
    return load_base("hellopack-tiny-rn")


def test_tiny_configs_registered_and_fast():
    assert TINY_CONFIGS == ("hellopack-tiny-rn", "hellopack-tiny-rn32", "hellopack-tiny-vit")
    assert set(TINY_CONFIGS) <= set(open_clip.list_models())
    t = time.perf_counter()
    vit = load_base("hellopack-tiny-vit")
    assert time.perf_counter() - t < 1.0
    assert (vit.image_size, vit.embed_dim) == (32, 64)


def test_tiny_base_identity(tiny):
    assert (tiny.name, tiny.pretrained, tiny.custom, tiny.bytes) == ("hellopack-tiny-rn", None, False, None)
    assert (tiny.image_size, tiny.embed_dim) == (64, 64)
    assert tiny.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)  # CLIP's init, exp(log(1/0.07))
    assert tiny.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert tiny.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.tokenizer(["a photo of a cat."]).shape == (1, 77)


def test_random_init_is_the_same_in_every_load(tiny):
    # build and train must agree on the tiny base's fingerprint.
    assert load_base("hellopack-tiny-rn").fingerprint == tiny.fingerprint
    assert tiny.fingerprint.startswith("sha256:") and len(tiny.fingerprint) == 7 + 64


def test_fingerprint_exact_bytes():
    lin = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.5]]))
        lin.bias.fill_(0.25)
    h = hashlib.sha256()
    for key, values, shape in (("bias", [0.25], (1,)), ("weight", [1.0, -2.5], (1, 2))):
        h.update(key.encode())
        h.update(b"torch.float32")
        h.update(repr(shape).encode())
        h.update(np.array(values, dtype="<f4").tobytes())
    assert fingerprint(lin) == "sha256:" + h.hexdigest()
    with torch.no_grad():
        lin.bias.fill_(0.5)
    assert fingerprint(lin) != "sha256:" + h.hexdigest()


def test_unknown_model_lists_close_matches():
    with pytest.raises(HellopackError, match=r"unknown open_clip model 'RN5'; did you mean: RN50"):
        load_base("RN5")


def test_unknown_pretrained_tag():
    with pytest.raises(HellopackError, match=r"did you mean: openai"):
        load_base("RN50", "opena")
    with pytest.raises(HellopackError, match=r"has no pretrained weights named 'openai'.*--clip-weights"):
        load_base("hellopack-tiny-rn", "openai")


def test_download_failure_says_pass_clip_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(base_mod, "_cached_or_unreachable", lambda cfg: None)  # looks online
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(HellopackError) as e:
        load_base("RN50", "openai")
    msg = str(e.value)
    assert msg.startswith("could not download the 'openai' weights of open_clip model 'RN50' (Failed to download")
    assert "--clip-weights FILE" in msg and "\n" not in msg
    assert "https://huggingface.co/timm/resnet50_clip.openai" in msg


def test_no_internet_fails_fast_without_trying_the_hub(monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def must_not_run(*args, **kwargs):
        raise AssertionError("create_model must not be called without internet and cache")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, fname: None)
    monkeypatch.setattr(open_clip, "create_model", must_not_run)
    t = time.perf_counter()
    with pytest.raises(HellopackError, match=r"\(cannot resolve huggingface\.co: no internet\); without internet, "
                                             r"pass --clip-weights FILE"):
        load_base("RN50", "openai")
    assert time.perf_counter() - t < 2.0


def test_no_internet_uses_the_hub_cache(tiny, tmp_path, monkeypatch):
    path = _save(tmp_path / "open_clip_model.safetensors", _perturbed_state(tiny))
    cfg = {"hf_hub": "org/tiny/", "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda name, tag: cfg if tag == "hubtag" else {})
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("no dns")))
    asked = []

    def cache(repo, fname):
        asked.append((repo, fname))
        return str(path) if fname == "open_clip_model.safetensors" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cache)
    b = load_base("hellopack-tiny-rn", "hubtag")
    assert asked[0] == ("org/tiny", "open_clip_model.safetensors")
    assert (b.pretrained, b.custom) == ("hubtag", False)
    assert b.fingerprint == load_base("hellopack-tiny-rn", weights=path).fingerprint


def _perturbed_state(tiny):
    state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    state["visual.conv1.weight"] += 0.01
    return state


def test_weights_safetensors_roundtrip(tiny, tmp_path):
    state = _perturbed_state(tiny)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    b = load_base("hellopack-tiny-rn", weights=path)
    assert b.custom and b.pretrained is None and b.bytes == path.stat().st_size
    assert b.fingerprint != tiny.fingerprint
    assert torch.equal(b.model.state_dict()["visual.conv1.weight"], state["visual.conv1.weight"])
    assert not any(p.requires_grad for p in b.model.parameters())


def test_weights_pt_with_wrapper_and_module_prefix(tiny, tmp_path):
    state = _perturbed_state(tiny)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    b = load_base("hellopack-tiny-rn", weights=path)
    ref = load_base("hellopack-tiny-rn", weights=_save(tmp_path / "ref.safetensors", state))
    assert b.fingerprint == ref.fingerprint


def _save(path, state):
    save_file(state, str(path))
    return path


def test_tag_plus_local_file_needs_no_download(tiny, tmp_path, monkeypatch):
    """--pretrained TAG --clip-weights FILE: the tag picks the config, the file gives the weights."""
    fake_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1), "quick_gelu": True}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda name, tag: fake_cfg if tag == "mine" else {})
    real_create = open_clip.create_model

    def no_download(name, pretrained=None, **kwargs):
        assert pretrained is None
        return real_create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", no_download)
    path = _save(tmp_path / "w.safetensors", _perturbed_state(tiny))
    b = load_base("hellopack-tiny-rn", "mine", weights=path)
    assert (b.pretrained, b.custom, b.bytes) == ("mine", False, path.stat().st_size)
    assert b.mean == pytest.approx((0.1, 0.2, 0.3)) and b.std == pytest.approx((0.3, 0.2, 0.1))


def test_wrong_weights_named_with_counts(tmp_path):
    vit = load_base("hellopack-tiny-vit")
    path = _save(tmp_path / "vit.safetensors", vit.model.state_dict())
    with pytest.raises(HellopackError, match=r"^wrong base weights: .*vit\.safetensors does not match open_clip "
                                             r"model hellopack-tiny-rn \(\d+ missing, \d+ unexpected/mismatched keys"):
        load_base("hellopack-tiny-rn", weights=path)


def test_weights_file_problems(tmp_path):
    with pytest.raises(HellopackError, match="not found"):
        load_base("hellopack-tiny-rn", weights=tmp_path / "missing.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(HellopackError, match=r"must be \.safetensors, \.pt, \.pth or \.bin"):
        load_base("hellopack-tiny-rn", weights=tmp_path / "w.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(HellopackError, match="not a valid safetensors file"):
        load_base("hellopack-tiny-rn", weights=tmp_path / "bad.safetensors")


def test_normalize_and_resize():
    n = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    x = torch.ones(1, 3, 5, 7)
    assert torch.allclose(n(x)[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    assert n(x).shape == (1, 3, 5, 7) and list(n.state_dict()) == []
    r = ResizeNormalize(8, (0.0,) * 3, (1.0,) * 3)
    y = torch.rand(2, 3, 4, 4)
    expected = torch.nn.functional.interpolate(y, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(r(y), expected)
    assert torch.equal(r(expected), expected)  # already 8x8: no resize


def test_rn50_fingerprint_is_stable_and_sees_every_weight():
    # Speed lives in benchmarks; here: same weights, same fingerprint; one changed weight, a new one.
    model = base_mod.open_clip.create_model("RN50")
    fp = fingerprint(model)
    assert fp == fingerprint(model)
    with torch.no_grad():
        model.visual.layer4[-1].conv3.weight[0, 0, 0, 0] += 1e-3
    assert fingerprint(model) != fp
