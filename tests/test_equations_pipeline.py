"""Build -> archive -> train, checked against hand computations.

* the image update's objective, pairing each stored patch with ITS OWN source crop;
* an archive built with alpha != rank and a head rank below the class count is rebuilt by
  `train`'s labeler into exactly the projector the archive describes (hand-merged from the
  stored, decoded factors, after the fp16 / int8 round trip);
* in a `train` step the labeler and the student get the very same tensor: the CutMix batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load as st_load
from torch.testing import assert_close

from hellopack.archive import decode_lora, open_archive
from hellopack.distill import BuildConfig, build
from hellopack.distill.update import feature_loss, initial_patches, update_patches
from hellopack.models.base import load_base
from hellopack.train.labelers import TeacherSet, build_labeler

from helpers_build import SYN, TINY_BUILD, tiny_teacher
from test_equations_lora import hand_projector_logits, hand_text_head

CPU = torch.device("cpu")


# ---- image update ---------------------------------------------------------------------------------

def _features_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()).requires_grad_(False)

    def features(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(net(x), dim=1)

    return features


def _crops(n: int = 5, size: int = 16) -> torch.Tensor:
    """Distinct crops: each a different colour ramp plus noise, so any re-pairing changes the objective."""
    g = torch.Generator().manual_seed(3)
    ramp = torch.linspace(0, 1, size)
    out = []
    for i in range(n):
        base = torch.stack([ramp.view(1, -1).expand(size, size) * ((i + c) % 3) / 2 for c in range(3)])
        out.append((base * 0.7 + 0.3 * torch.rand(3, size, size, generator=g)).clamp(0, 1))
    return (torch.stack(out) * 255).round().to(torch.uint8)


def _hand_start(crops_u8: torch.Tensor, factor: int) -> torch.Tensor:
    """The stored patch before the update: antialiased bilinear downsample, uint8, as float in [0, 1]."""
    s = crops_u8.shape[-1] // factor
    down = F.interpolate(crops_u8.float() / 255, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    return (down.clamp(0, 1) * 255).round() / 255


def _hand_objective(features, crops_u8: torch.Tensor, p01: torch.Tensor) -> torch.Tensor:
    """sum over patches n of mean_d (E(up(p_n)) - E(c_n))^2: patch n against its own crop n."""
    size = crops_u8.shape[-1]
    up = F.interpolate(p01, size=(size, size), mode="bilinear", align_corners=False)
    target = features(crops_u8.float() / 255)
    return ((features(up) - target) ** 2).mean(1).sum()


def test_update_objective_pairs_each_patch_with_its_own_crop():
    features, crops = _features_net(), _crops()
    p0 = _hand_start(crops, 2)
    assert torch.equal(initial_patches(crops, 2).float() / 255, p0)
    want = _hand_objective(features, crops, p0)
    # a rolled pairing is a clearly different number
    rolled = ((features(F.interpolate(p0, size=(16, 16), mode="bilinear", align_corners=False))
               - features(crops.roll(1, 0).float() / 255)) ** 2).mean(1).sum()
    assert float(rolled) > 2 * float(want) + 1e-3
    with torch.no_grad():
        target = features(crops.float() / 255)
    assert_close(feature_loss(features, target, p0, 16), want, rtol=1e-6, atol=1e-8)

    seen: list[tuple[int, float]] = []
    lr = 0.01
    out = update_patches(features, crops, factor=2, steps=1, lr=lr, device=CPU,
                         on_step=lambda i, v: seen.append((i, v)))
    assert [i for i, _ in seen] == [0, 1]
    assert seen[0][1] == pytest.approx(float(want), rel=1e-6, abs=1e-9)
    # Adam's first step on the hand objective: p1 = clamp(p0 - lr * g / (|g| + eps), 0, 1)
    p = p0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_hand_objective(features, crops, p), [p])
    p1 = (p0 - lr * g / (g.abs() + 1e-8)).clamp(0, 1)
    with torch.no_grad():
        after = _hand_objective(features, crops, p1)
    assert seen[1][1] == pytest.approx(float(after), rel=1e-5, abs=1e-9)
    assert float(after) < float(want)
    q = (p1 * 255).round().to(torch.uint8)
    assert out.dtype == torch.uint8 and out.shape == q.shape
    assert torch.equal(out, q)  # quantised: round(255 * p1)


def test_update_of_a_patch_does_not_depend_on_the_other_crops():
    """Each patch is optimised towards its own crop: changing crop 0 leaves patches 1.. as they were."""
    features, crops = _features_net(), _crops()
    other = crops.clone()
    other[0] = 255 - other[0]
    a = update_patches(features, crops, factor=2, steps=3, lr=0.02, device=CPU)
    b = update_patches(features, other, factor=2, steps=3, lr=0.02, device=CPU)
    assert torch.equal(a[1:], b[1:])
    assert not torch.equal(a[0], b[0])
    alone = update_patches(features, crops[2:3], factor=2, steps=3, lr=0.02, device=CPU)
    assert torch.equal(alone[0], a[2])


# ---- a tiny build with alpha != rank and a head rank below the class count --------------------------

ALPHA, RANK_ENCODER, RANK_HEAD = 3.0, 2, 2  # SYN has 4 classes: rank 2 < 4
_BUILT: dict[str, tuple[Path, Path]] = {}


def built_archive(tmp_path_factory, dtype: str) -> tuple[Path, Path]:
    """(archive, work directory) of a tiny build; one build per LoRA dtype per process."""
    if dtype not in _BUILT:
        root = tmp_path_factory.mktemp(f"build-{dtype}")
        teacher = tiny_teacher(root / "teacher.safetensors")
        settings = {**TINY_BUILD, "rank_encoder": RANK_ENCODER, "rank_head": RANK_HEAD, "alpha": ALPHA,
                    "lora_dtype": dtype, "fit_lr": 0.01}
        cfg = BuildConfig(recipe="synthetic", out=str(root / "out.hellopack"), workdir=str(root / "work"),
                          synthetic=SYN, teachers=(f"convnet:{teacher}",), **settings)
        with torch.random.fork_rng(devices=[]):
            _BUILT[dtype] = (build(cfg), root / "work")
    return _BUILT[dtype]


def _hand_decode(data: bytes, dtype: str) -> dict[str, np.ndarray]:
    """lora.safetensors by hand: fp16 -> float32; int8 * its per-row fp16 scale."""
    raw = st_load(data)
    out = {}
    for name, t in raw.items():
        if name.endswith(".scale"):
            continue
        if dtype == "fp16":
            assert t.dtype == np.float16
            out[name] = t.astype(np.float32)
        else:
            assert t.dtype == np.int8 and raw[name + ".scale"].dtype == np.float16
            scale = raw[name + ".scale"].astype(np.float32)
            out[name] = t.astype(np.float32) * scale.reshape((-1,) + (1,) * (t.ndim - 1))
    return out


def _fitted_factors(work: Path) -> dict[str, np.ndarray]:
    """The float32 factors the build's fit left in its work directory (before the archive's rounding).

    (The fit stage's ``lora.safetensors`` in ``<workdir>/fit``; adapt here if the pipeline moves it.)"""
    return st_load((work / "fit" / "lora.safetensors").read_bytes())


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_train_rebuilds_exactly_the_archived_projector(tmp_path_factory, dtype):
    path, work = built_archive(tmp_path_factory, dtype)
    archive = open_archive(path)
    m = archive.manifest
    lora = m["lora"]
    num_classes = len(m["classes"])
    assert num_classes == 4 and lora["dtype"] == dtype
    assert (lora["rank_encoder"], lora["rank_head"]) == (RANK_ENCODER, RANK_HEAD)
    targets = {t["name"]: t for t in lora["targets"]}
    assert targets["head"]["rank"] == RANK_HEAD < num_classes
    assert {(t["rank"], t["alpha"]) for n, t in targets.items() if n != "head"} == {(RANK_ENCODER, ALPHA)}
    assert targets["head"]["alpha"] == ALPHA

    # the stored factors, decoded by hand, and the round trip they went through
    data = archive.read_member("lora.safetensors")
    stored = _hand_decode(data, dtype)
    decoded = decode_lora(data)
    assert stored.keys() == decoded.keys() == {f"{n}.lora_{k}" for n in targets for k in "AB"}
    for k in stored:
        assert np.array_equal(stored[k], decoded[k]), k
    fitted = _fitted_factors(work)
    assert fitted.keys() == stored.keys()
    assert stored["head.lora_A"].shape == (RANK_HEAD, 64) and stored["head.lora_B"].shape == (num_classes, RANK_HEAD)
    if dtype == "fp16":
        for k in stored:
            assert np.array_equal(stored[k], fitted[k].astype(np.float16).astype(np.float32)), k
    else:
        raw = st_load(data)
        for k in stored:
            half_step = raw[k + ".scale"].astype(np.float64).reshape((-1,) + (1,) * (stored[k].ndim - 1)) / 2
            assert (np.abs(stored[k].astype(np.float64) - fitted[k]) <= half_step * (1 + 1e-6) + 1e-12).all(), k
    assert any(not np.array_equal(stored[k], fitted[k]) for k in stored)  # the round trip is lossy
    assert np.abs(stored["head.lora_B"]).max() > 1e-3  # the fit moved B off zero

    # what the archive describes, by hand: public base, text head from prompts.json, W + (alpha/r) B A
    base = load_base(m["base"]["name"], m["base"]["pretrained"])
    assert base.fingerprint == m["base"]["fingerprint"]
    assert m["head"]["logit_scale"] == pytest.approx(base.logit_scale, rel=1e-7)
    prompts = json.loads(archive.read_member("prompts.json"))
    head = hand_text_head(base, prompts["classnames"], prompts["templates"])

    def factors(tensors: dict[str, np.ndarray], alpha_of=lambda t: float(t["alpha"])):
        return {n: (torch.from_numpy(tensors[f"{n}.lora_A"]), torch.from_numpy(tensors[f"{n}.lora_B"]), alpha_of(t))
                for n, t in targets.items()}

    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    want = hand_projector_logits(base, head, factors(stored), m["head"]["logit_scale"], x)

    teachers = TeacherSet((), num_classes, m["images"]["size"], m["images"]["mean"], m["images"]["std"])
    labeler = build_labeler("projector", archive=archive, teachers=teachers, device=CPU)
    got = labeler(x)
    assert got.dtype == torch.float32 and got.shape == (6, num_classes)
    assert (got - want).abs().max().item() <= 1e-5

    # the test can tell: ignoring alpha, or the rounding, gives other logits
    unscaled = hand_projector_logits(base, head, factors(stored, lambda t: float(t["rank"])),
                                     m["head"]["logit_scale"], x)
    assert (unscaled - want).abs().max().item() > 1e-3
    if dtype == "int8":
        unrounded = hand_projector_logits(base, head, factors(fitted), m["head"]["logit_scale"], x)
        assert (unrounded - want).abs().max().item() > 1e-5


# ---- train: the labeler and the student see the same mixed batch ------------------------------------

def test_labeler_and_student_get_the_same_cutmix_batch(tmp_path_factory, tmp_path, monkeypatch):
    from torchvision.transforms import v2

    import hellopack.models.students as students
    from hellopack.train import TrainConfig, train
    from hellopack.train import losses
    from hellopack.train.labelers import ProjectorLabeler

    path, _ = built_archive(tmp_path_factory, "fp16")
    mixed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (input batch, output batch, targets)
    labeled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, logits)
    fed: list[torch.Tensor] = []  # the student's inputs while training
    loss_args: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []  # (logits, soft, hard)

    cutmix_forward = v2.CutMix.forward

    def spy_cutmix(self, *inputs):
        out = cutmix_forward(self, *inputs)
        mixed.append((inputs[0].detach().clone(), out[0].detach().clone(), out[1].detach().clone()))
        return out

    labeler_call = ProjectorLabeler.__call__

    def spy_labeler(self, x01):
        out = labeler_call(self, x01)
        labeled.append((x01.detach().clone(), out.detach().clone()))
        return out

    real_build = students.build_student

    def spy_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda mod, inp: fed.append(inp[0].detach().clone()) if mod.training else None)
        return model

    real_loss = losses.student_loss

    def spy_loss(logits, soft, hard, **kw):
        loss_args.append((logits.detach().clone(), None if soft is None else soft.detach().clone(),
                          hard.detach().clone()))
        return real_loss(logits, soft, hard, **kw)

    monkeypatch.setattr(v2.CutMix, "forward", spy_cutmix)
    monkeypatch.setattr(ProjectorLabeler, "__call__", spy_labeler)
    monkeypatch.setattr(students, "build_student", spy_build)
    # the per-seed run (train/run.py) takes its loss through losses.TrainLoss, which calls losses.student_loss
    monkeypatch.setattr(losses, "student_loss", spy_loss)
    steps = 2
    res = train(TrainConfig(archive=str(path), arch="convnet", out=str(tmp_path / "run"), device="cpu",
                            labels="projector", mix="cutmix", epochs=steps, batch_size=4, max_steps=steps))
    assert res["timing"]["steps"] == steps
    assert len(mixed) == len(labeled) == len(fed) == len(loss_args) == steps
    mixed_steps = 0
    for (before, after, targets), (lab_in, lab_out), student_in, (_, soft, hard) in zip(mixed, labeled, fed,
                                                                                       loss_args):
        assert torch.equal(lab_in, student_in)  # one tensor for both
        assert torch.equal(student_in, after)  # ... and it is CutMix's output
        assert torch.equal(hard, targets)  # CE sees CutMix's targets
        assert soft is not None and torch.equal(soft, lab_out)  # and the loss sees the labeler's logits
        diff = (after != before).any(1).any(0)  # [H, W] where some image changed
        if not diff.any():
            continue  # an empty box (lam = 1): nothing was mixed in this step
        mixed_steps += 1
        assert not torch.equal(student_in, before)  # not the unmixed batch
        # CutMix by hand: outside one box each image is itself, inside it is its predecessor's
        ys, xs = diff.nonzero(as_tuple=True)
        y1, y2, x1, x2 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        want = before.clone()
        want[..., y1:y2, x1:x2] = before.roll(1, 0)[..., y1:y2, x1:x2]
        assert torch.equal(after, want)
        assert (targets.max(1).values < 1).any()  # the targets are mixed too
    assert mixed_steps >= 1
