"""The Python API (`hellopack.open`): its names and docs, the README loop as written, and that its pieces
are `hellopack train`'s (the same steps give a bit-identical student)."""

from __future__ import annotations

import inspect
import io
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import hellopack
from hellopack.errors import HellopackError
from test_train_fetch import server  # noqa: F401  (fixture: a local http.server)
from test_train_kit import demo_archive, model_tensors, small_archive  # noqa: F401  (session fixtures)

REPO = Path(__file__).resolve().parents[1]


def python_blocks(path: Path, heading: str) -> list[str]:
    """The ```python blocks of the section ``heading`` (up to the next heading of the same level)."""
    text = path.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    end = text.find("\n" + level + " ", start + len(heading))
    section = text[start:end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


# ---- names, docstrings, type hints ---------------------------------------------------------------

EXPECTED_NAMES = {"open", "Pack", "Recipe", "ArchiveDataset", "Augmenter", "ProjectorLabeler", "TrainLoss"}


def undocumented() -> list[str]:
    """Public names and public methods/properties of the public classes without a docstring or type hints."""
    bad = []

    def check_function(label: str, fn) -> None:
        if not (inspect.getdoc(fn) or "").strip():
            bad.append(f"{label}: no docstring")
        sig = inspect.signature(fn)
        params = [p for n, p in sig.parameters.items() if n not in ("self", "cls")]
        if any(p.annotation is inspect.Parameter.empty for p in params) or (
                sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__"):
            bad.append(f"{label}: missing type hints")

    for name in hellopack.__all__:
        obj = getattr(hellopack, name)
        if not (obj.__doc__ or "").strip():
            bad.append(f"hellopack.{name}: no docstring")
        if not inspect.isclass(obj):
            check_function(f"hellopack.{name}", obj)
            continue
        for attr, value in vars(obj).items():
            public = not attr.startswith("_") or attr in ("__call__", "__len__", "__getitem__")
            if not public or attr in ("__dataclass_fields__",):
                continue
            if isinstance(value, property):
                if not (value.__doc__ or "").strip():
                    bad.append(f"hellopack.{name}.{attr}: no docstring")
            elif isinstance(value, (classmethod, staticmethod)):
                check_function(f"hellopack.{name}.{attr}", value.__func__)
            elif inspect.isfunction(value):
                check_function(f"hellopack.{name}.{attr}", value)
    return bad


def test_all_lists_exactly_the_public_names_each_documented_and_typed() -> None:
    assert set(hellopack.__all__) == EXPECTED_NAMES and len(hellopack.__all__) == len(EXPECTED_NAMES)
    assert set(hellopack.__all__) <= set(dir(hellopack))
    assert undocumented() == []
    # the objects the archive hands out are the public classes
    assert {"dataset", "augmenter", "labeler", "train_loss", "classes", "recipe", "manifest"} <= set(vars(hellopack.Pack))
    with pytest.raises(AttributeError, match="module 'hellopack' has no attribute 'nope'"):
        hellopack.nope  # noqa: B018


def test_a_lost_docstring_fails_the_check(monkeypatch) -> None:
    monkeypatch.setattr(hellopack.Pack.dataset, "__doc__", None)
    monkeypatch.setattr(hellopack.Augmenter.views, "__doc__", "")
    assert undocumented() == ["hellopack.Pack.dataset: no docstring", "hellopack.Augmenter.views: no docstring"]


def test_import_hellopack_stays_cheap() -> None:
    """No torch at `import hellopack`, nor when the API's names are only looked up."""
    code = ("import sys, hellopack; assert 'torch' not in sys.modules, 'import'; hellopack.open; hellopack.Pack; "
            "hellopack.Recipe; assert 'torch' not in sys.modules, 'lookup'; print('ok')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.stdout == "ok\n", out.stderr[-2000:]


# ---- the README loop, as written -----------------------------------------------------------------

def test_readme_loop_runs_as_written(demo_archive: Path) -> None:  # noqa: F811
    (code,) = python_blocks(REPO / "README.md", "## In your own training loop")
    assert 20 <= len(code.splitlines()) <= 32  # "about 25 lines"
    ns: dict = {"ARCHIVE": str(demo_archive)}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    printed = out.getvalue()
    m = re.fullmatch(r"epoch 4: loss (\S+), top-1 on the archive's images (\S+) %\n", printed)
    assert m, printed
    assert math.isfinite(float(m.group(1))) and 0.0 <= float(m.group(2)) <= 100.0
    pack = ns["pack"]
    assert pack.recipe.epochs == 4 and pack.recipe.batch_size == 8 and len(pack.classes) == 4
    assert ns["labeler"].models[0].training is False  # the projector labels in eval mode


# ---- the pieces are train's ----------------------------------------------------------------------

def test_open_resolves_the_recipe_as_train_does(demo_archive: Path) -> None:  # noqa: F811
    from hellopack.train import TrainConfig

    pack = hellopack.open(demo_archive, arch="convnet", epochs=2, mix="mixup")
    want = TrainConfig(archive=str(demo_archive), arch="convnet", epochs=2, mix="mixup").resolve(pack.manifest)
    assert pack.recipe == want
    assert pack.classes == ("red h", "green v", "blue h", "yellow v")
    assert pack.path == demo_archive and repr(pack) == f"Pack({str(demo_archive)!r}, 4 classes, 40 images)"
    plain = hellopack.open(str(demo_archive))
    assert plain.recipe.lr == 0.002 and plain.recipe.lr_source == "the archive's lr (no arch given)"


def test_open_refuses_bad_input(demo_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(HellopackError) as e:
        hellopack.open(demo_archive, epoch=3)
    assert str(e.value).startswith("hellopack.open() got unknown recipe setting(s) epoch; settings: epochs, ")
    with pytest.raises(HellopackError, match=r"^archive '.*nope\.hellopack' not found; pass an existing"):
        hellopack.open(tmp_path / "nope.hellopack")
    with pytest.raises(HellopackError, match=r"^--lr must be"):
        hellopack.open(demo_archive, lr=-1.0)


def test_open_a_url_downloads_once(server, small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    base, root, requests = server
    shutil.copy(small_archive, root / "demo.hellopack")
    for _ in range(2):
        pack = hellopack.open(f"{base}/demo.hellopack", cache_dir=tmp_path / "cache")
        assert len(pack.dataset()) == 16
    assert requests == ["/demo.hellopack"] and pack.path.read_bytes() == small_archive.read_bytes()


def test_api_steps_give_trains_student_bit_for_bit(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    """One epoch of `hellopack train` redone with the API's pieces (plus train's seeding) gives the same weights."""
    from hellopack.models.students import build_student
    from hellopack.train import TrainConfig, train
    from hellopack.train import protocol as proto
    from hellopack.train.augment import step_generator
    from hellopack.train.images import epoch_permutation
    from hellopack.train.run import _derived_seed

    seed, epochs = 3, 1
    train(TrainConfig(archive=str(small_archive), arch="convnet", out=str(tmp_path / "cli"), device="cpu",
                      seed=seed, epochs=epochs))
    want = model_tensors(tmp_path / "cli")

    pack = hellopack.open(small_archive, arch="convnet", epochs=epochs)
    r, data = pack.recipe, pack.dataset()
    augment, labeler, loss_fn = pack.augmenter(), pack.labeler("cpu"), pack.train_loss()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_student("convnet", len(pack.classes), r.image_size, r.mean, r.std)
        torch.manual_seed(_derived_seed(seed, 0))
        opt = proto.make_optimizer(student, r.optimizer, r.lr, r.weight_decay, r.decay, r.momentum)
        spe = len(data) // r.batch_size
        sched = proto.make_scheduler(opt, r.schedule, spe, r.epochs)
        student.train()
        for step in range(spe * r.epochs):
            epoch, i = divmod(step, spe)
            idx = epoch_permutation(len(data), seed, epoch)[i * r.batch_size:(i + 1) * r.batch_size]
            x, targets = augment(data.images[idx], data.labels[idx], step_generator(seed, step))
            loss = loss_fn(student(x), labeler(x), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    got = student.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


# ---- each piece ------------------------------------------------------------------------------------

def test_dataset_items_workers_spawn_and_distributed_sampler(small_archive: Path) -> None:  # noqa: F811
    from torch.utils.data import DataLoader, DistributedSampler

    pack = hellopack.open(small_archive)
    data = pack.dataset()
    image, label = data[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label == 1
    pil, pil_label = pack.dataset(pil=True)[5]
    assert pil.mode == "RGB" and pil.size == (16, 16) and pil_label == 1
    assert torch.equal(torch.from_numpy(np.array(pil)).permute(2, 0, 1), image)
    assert pack.dataset(transform=lambda im: im.float().mean().item())[5][0] == image.float().mean().item()
    assert pack.dataset().images is data.images  # decoded once

    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy.images, data.images) and torch.equal(copy.labels, data.labels)
    direct = [(im, y) for im, y in DataLoader(data, batch_size=4)]
    for kw in ({"num_workers": 2}, {"num_workers": 1, "multiprocessing_context": "spawn"}):
        got = list(DataLoader(data, batch_size=4, **kw))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(direct, got)), kw
    shards = [list(DistributedSampler(data, num_replicas=2, rank=k, shuffle=True, seed=1)) for k in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8 and sorted(shards[0] + shards[1]) == list(range(16))


def test_augmenter_is_trains_transform(demo_archive: Path) -> None:  # noqa: F811
    from torchvision.transforms import v2

    from hellopack.train.augment import step_generator

    pack = hellopack.open(demo_archive, arch="convnet")
    aug = pack.augmenter()
    assert isinstance(aug, v2.Transform) and isinstance(aug.batch_mix, v2.CutMix)
    cfg = aug.cfg
    assert (cfg.size, cfg.num_classes, cfg.mix, cfg.crop_scale) == (16, 4, "cutmix", pack.recipe.crop_scale)
    data = pack.dataset()
    images, labels = data.images[:8], data.labels[:8]
    x, targets = aug(images, labels, step_generator(0, 5))
    views = aug.views(images, step_generator(0, 5))
    assert x.shape == views.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and targets.shape == (8, 4)
    # CutMix pastes one box: outside it the mixed batch is the views it mixed
    same = (x == views).all(1).all(0)
    assert same.any() and torch.allclose(targets.sum(1), torch.ones(8))
    # no generator: drawn from torch's global RNG (DataLoader workers and torch.manual_seed rule it)
    torch.manual_seed(7)
    a, ta = aug(images, labels)
    torch.manual_seed(7)
    b, tb = aug(images, labels)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    mixed, t = aug.mix(views, labels, step_generator(1, 1))
    assert mixed.shape == views.shape and torch.allclose(t.sum(1), torch.ones(8))
    none = hellopack.open(demo_archive, mix="none").augmenter()
    xn, tn = none(images, labels, step_generator(0, 5))
    assert torch.equal(xn, none.views(images, step_generator(0, 5)))
    assert torch.equal(tn, torch.nn.functional.one_hot(labels, 4).float())


def test_labeler_is_the_merged_projector(demo_archive: Path) -> None:  # noqa: F811
    from hellopack.archive import open_archive
    from hellopack.train.labelers import ProjectorLabeler, projector_from_archive

    pack = hellopack.open(demo_archive)
    labeler = pack.labeler("cpu")
    assert isinstance(labeler, ProjectorLabeler) and labeler.device == torch.device("cpu")
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = ProjectorLabeler(projector_from_archive(open_archive(demo_archive)), torch.device("cpu"))(x)
    got = labeler(x)
    assert torch.equal(got, want) and got.dtype == torch.float32 and got.shape == (5, 4)
    assert not got.requires_grad and not got.is_inference()  # usable as a loss target
    assert all(not p.requires_grad for p in labeler.models[0].parameters())


def test_train_loss_is_the_recipes(demo_archive: Path) -> None:  # noqa: F811
    import torch.nn.functional as F

    pack = hellopack.open(demo_archive)
    loss_fn = pack.train_loss()
    assert (loss_fn.loss, loss_fn.beta, loss_fn.temperature) == ("mse", 0.1, 20.0)
    g = torch.Generator().manual_seed(0)
    logits, soft = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    targets = torch.softmax(torch.randn(4, 4, generator=g), 1)
    want = F.mse_loss(logits, soft) + 0.1 * F.cross_entropy(logits, targets)
    assert loss_fn(logits, soft, targets).item() == pytest.approx(want.item(), rel=1e-6)
    assert loss_fn(logits, None, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    kl = hellopack.open(demo_archive, loss="kl", temperature=4.0).train_loss()
    assert (kl.loss, kl.beta, kl.temperature) == ("kl", 0.0, 4.0)
