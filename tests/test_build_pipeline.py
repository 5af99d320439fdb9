"""End-to-end builds on tiny synthetic data: archive contents, stage skipping, bad input,
resume after SIGKILL with identical bytes, and a 2-process gloo torchrun build."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from hellopack.archive.images import encoder_identity

from hellopack.archive import open_archive
from hellopack.distill import BuildConfig, build
from hellopack.distill.teach import TeachConfig, load_trajectory, resolve_arch, teach
from hellopack.data import SyntheticConfig
from hellopack.errors import HellopackError
from hellopack.progress import RecordingReporter, Stage

from helpers_build import CHILD_ENV, SYN, TINY_BUILD  # shared with the CLI fault-injection tests





@pytest.fixture(scope="module")
def teachers_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teach")
    rec = RecordingReporter()
    traj = teach(TeachConfig(recipe="synthetic", out=str(out), arch="convnet", epochs=2, keep_every=1,
                             batch_size=16, synthetic=SYN, device="cpu"), rec)
    assert [c["epoch"] for c in traj["checkpoints"]] == [1, 2]
    assert all(0.0 <= c["val_top1"] <= 1.0 for c in traj["checkpoints"])
    assert rec.stage_names == ["teach convnet"]
    return out


def config(tmp: Path, tdir: Path, **kw) -> BuildConfig:
    base = dict(recipe="synthetic", out=str(tmp / "out.hellopack"), workdir=str(tmp / "work"), synthetic=SYN,
                teachers_dir=str(tdir), **TINY_BUILD)
    base.update(kw)
    return BuildConfig(**base)


def test_teach_writes_a_trajectory_that_loads(teachers_dir):
    specs = load_trajectory(teachers_dir)
    assert specs == [f"convnet:{teachers_dir / f'convnet-epoch00{e}.safetensors'}" for e in (1, 2)]
    traj = json.loads((teachers_dir / "trajectory.json").read_text())
    assert (traj["arch"], traj["num_classes"], traj["image_size"], traj["eval"]) == ("convnet", 4, 32, "test")
    assert resolve_arch("resnet18", 32) == "resnet18_cifar" and resolve_arch("resnet18", 224) == "resnet18"


def test_holdout_view_is_disjoint_and_complete():
    from hellopack.distill.splits import HoldoutRest
    from hellopack.data import make_loader, open_source

    full = open_source("synthetic", synthetic=SyntheticConfig(num_classes=3, per_class=7, test_per_class=2))
    rest, held = HoldoutRest(full, 4), full.shard(0, 4)
    streamed = [s.key for s in rest]  # the streaming path (_entries)
    indexed = [rest.load_entry(rest.entry_at(i)).key for i in range(rest.num_samples)]  # random access
    assert streamed == indexed and rest.num_samples == 15
    assert sorted(streamed + [s.key for s in held]) == sorted(s.key for s in full)
    assert not set(streamed) & {s.key for s in held}
    assert sum(len(y) for _, y in make_loader(rest, 32, 4, train=True, seed=0)) == 15


def test_the_data_line_says_what_is_held_out(tmp_path):
    from hellopack.distill.pipeline import _held_out
    from hellopack.distill.splits import open_splits
    from test_train_kit import write_imagefolder

    assert _held_out(open_splits("synthetic", None, synthetic=SYN)) == "16 test images"
    folder = open_splits("folder", str(write_imagefolder(tmp_path / "data", 4, 16, seed=0)), val_fraction=0.25)
    assert _held_out(folder) == "4 training images, set aside (the data has no test split)"
    one = open_splits("folder", str(write_imagefolder(tmp_path / "one", 1, 16, seed=0)), val_fraction=0.25)
    assert _held_out(one) == "1 training image, set aside (the data has no test split)"


def test_load_trajectory_errors(tmp_path):
    with pytest.raises(HellopackError, match="teachers folder '.*' does not exist; train one with `hellopack teach`"):
        load_trajectory(tmp_path / "missing")
    with pytest.raises(HellopackError, match="has no trajectory.json; pass a folder written by `hellopack teach`"):
        load_trajectory(tmp_path)


def test_build_archive_contents_and_stage_skipping(tmp_path, teachers_dir):
    cfg = config(tmp_path, teachers_dir)
    first = RecordingReporter()
    path = build(cfg, first)
    assert path == Path(cfg.out)
    assert first.stage_names == ["projector: text head (4 classes x 7 templates)", "fit projector", "fidelity", "select: score crops", "select: extract crops",
                            "update images", "write archive"]
    archive = open_archive(path)
    report = archive.verify()
    assert report.images_checked == 4
    m = archive.manifest
    assert m["images"] == {"count": 4, "ipc": 1, "factor": 2, "size": 32, "format": "webp",
                           "mean": [0.49, 0.49, 0.49], "std": [0.21, 0.21, 0.21],
                           # format 1.2: how the images were encoded (auto: lossless WebP at <= 64 px)
                           "encoding": "webp-lossless", "quality": None,
                           "encoder": encoder_identity("webp-lossless")}
    assert m["format_version"] == [1, 2]
    assert [c["name"] for c in m["classes"]] == ["circle", "square", "triangle", "cross"]
    assert m["base"]["name"] == "hellopack-tiny-rn" and m["base"]["pretrained"] is None
    assert m["lora"]["rank_encoder"] == 2 and m["lora"]["rank_head"] == 4  # capped at the class count
    assert m["lora"]["parameters"] == sum(t["rank"] * (t["in_features"] * t["kernel_size"][0] * t["kernel_size"][1]
                                                       + t["out_features"]) for t in m["lora"]["targets"])
    assert m["recipe"]["patch_shuffle"] is True and m["recipe"]["batch_size"] == 4
    assert m["seeds"] == {"build": 0}
    assert set(m["fidelity"]) == {"agreement", "kl", "projector_top1", "teacher_top1", "images", "eval"}
    assert m["fidelity"]["images"] == 16 and m["fidelity"]["eval"] == "test"
    assert m["build"]["ipc"] == 1 and "workdir" not in m["build"] and "out" not in m["build"]
    assert "data: synthetic shapes: 4 classes, 48 train images of 32 px, seed 0; 48 training images, held-out: " \
           "16 test images" in first.messages
    assert not [msg for msg in first.messages if msg.startswith("resuming")]
    assert sorted(r.cls for r in archive.iter_images()) == [0, 1, 2, 3]
    prompts = json.loads(archive.read_member("prompts.json"))
    assert prompts["classnames"] == ["circle", "square", "triangle", "cross"] and len(prompts["templates"]) == 7
    original = path.read_bytes()

    again = RecordingReporter()
    build(cfg, again)
    assert again.stage_names[1:] == ["write archive"]
    assert "fit: done earlier, reusing the fitted projector" in again.messages
    work = tmp_path / "work"
    assert [msg for msg in again.messages if msg.startswith("resuming")] == [
        f"resuming the build in {work}: scan, fit, select, update done earlier"]  # said once
    assert path.read_bytes() == original

    changed = RecordingReporter()
    build(config(tmp_path, teachers_dir, update_lr=0.05), changed)
    assert changed.stage_names[1:] == ["update images", "write archive"]
    assert [msg for msg in changed.messages if msg.startswith("resuming")] == [
        f"resuming the build in {work}: scan, fit, select done earlier"]
    assert path.read_bytes() != original


def test_refine_trains_the_lora_on_the_archive_views_and_skips_when_done(tmp_path, teachers_dir):
    plain = build(config(tmp_path, teachers_dir), RecordingReporter())
    plain_lora = open_archive(plain).read_member("lora.safetensors")

    cfg = config(tmp_path, teachers_dir, out=str(tmp_path / "refined.hellopack"), refine_steps=6, refine_lr=0.05)
    first = RecordingReporter()
    path = build(cfg, first)
    assert first.stage_names[1:] == ["refine projector on the archive's views", "fidelity", "write archive"]
    refined = [m for m in first.messages if m.startswith("refine: agreement on unseen training views")]
    assert len(refined) == 1 and "held-out images" in refined[0]
    archive = open_archive(path)
    archive.verify()
    m = archive.manifest
    assert m["build"]["refine_steps"] == 6 and m["build"]["refine_lr"] == 0.05
    assert set(m["fidelity"]) == {"agreement", "kl", "projector_top1", "teacher_top1", "images", "eval"}
    # same fit, same images: only the LoRA factors differ from the unrefined archive
    assert archive.read_member("lora.safetensors") != plain_lora
    assert archive.read_member("images.tar") == open_archive(plain).read_member("images.tar")
    marker = json.loads((tmp_path / "work" / "refine.done.json").read_text())["result"]
    assert marker["steps"] == 6 and 0.0 <= marker["views_agreement_after"] <= 1.0 and marker["kept"] == "refined"

    original = path.read_bytes()
    again = RecordingReporter()
    build(cfg, again)
    assert again.stage_names[1:] == ["write archive"]
    assert "refine: done earlier, reusing the refined projector" in again.messages
    assert path.read_bytes() == original  # deterministic, and the reused factors are the refined ones


def _refine_lin(lr: float, steps: int, lam: float, start_at_teacher: bool):
    """Refine a linear 'projector' towards a linear 'teacher' on 12 random 8-px images; (student, start, result).

    ``start_at_teacher``: the student is a copy of the teacher (100 % agreement before), else a fresh one.
    """
    import copy

    import torch
    from torch import nn

    from hellopack.distill.refine import RefineParams, refine_projector
    from hellopack.progress import NULL
    from hellopack.train.augment import AugmentConfig

    class Lin(nn.Module):  # the smallest "projector": a LoRA-free linear map with the projector's API
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Linear(3 * 8 * 8, 3)

        def forward(self, x):
            return 10 * self.w(x.flatten(1))  # logits of CLIP-like scale

        def trainable_parameters(self):
            return list(self.parameters())

    torch.manual_seed(0)
    teacher = Lin().eval()
    student = copy.deepcopy(teacher) if start_at_teacher else Lin()
    start = [p.detach().clone() for p in student.parameters()]
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    params = RefineParams(steps=steps, lr=lr, weight_decay=0.0, batch_size=12, lam=lam, seed=0)
    res = refine_projector(student, teacher, images, torch.arange(12) % 3,
                           AugmentConfig(size=8, num_classes=3, mix="none"), params, torch.device("cpu"), NULL)
    return student, start, res


def test_refine_raises_agreement_on_the_views_it_trains_on():
    student, _, res = _refine_lin(lr=0.01, steps=300, lam=0.0, start_at_teacher=False)
    # measured: 34 % of unseen views before, 81 % after (same architecture, so the teacher is reachable)
    assert res["views_agreement_before"] < 0.45 and res["views_agreement_after"] >= 0.75
    assert res["kept"] == "refined"
    assert all(not p.requires_grad for p in student.parameters())


def test_a_refine_that_lowers_view_agreement_is_undone():
    import torch

    student, start, res = _refine_lin(lr=10.0, steps=50, lam=0.1, start_at_teacher=True)
    # measured: 100 % of unseen views before (the student is the teacher), 7.3 % after 50 steps at lr 10
    assert res["views_agreement_before"] == 1.0 and res["views_agreement_after"] < 0.5
    assert res["kept"] == "fit" and res["steps"] == 50
    assert all(torch.equal(a, b) for a, b in zip(start, student.parameters()))  # the fitted factors, bit for bit


def test_a_refine_whose_loss_is_not_finite_stops_and_is_undone():
    import torch

    student, start, res = _refine_lin(lr=1e30, steps=50, lam=0.1, start_at_teacher=True)
    # the first step overflows the weights; the second step's loss is not finite, so it never trains
    assert res == {"steps": 1, "final_loss": None, "views_agreement_before": 1.0, "views_agreement_after": None,
                   "kept": "fit"}
    assert all(torch.equal(a, b) for a, b in zip(start, student.parameters()))


def test_build_keeps_the_fitted_projector_when_refine_makes_it_worse(tmp_path, teachers_dir):
    plain = open_archive(build(config(tmp_path, teachers_dir), RecordingReporter()))
    cfg = config(tmp_path, teachers_dir, out=str(tmp_path / "refined.hellopack"), refine_steps=4, refine_lr=1e30)
    rec = RecordingReporter()
    path = build(cfg, rec)
    assert "refine: undone, its loss was not finite at step 2 of 4; the archive keeps the fitted projector " \
           "(try a smaller --refine-lr than 1e+30)" in rec.messages
    assert "fidelity" not in rec.stage_names[1:]  # nothing new to measure: the fit's fidelity stands
    archive = open_archive(path)
    assert archive.read_member("lora.safetensors") == plain.read_member("lora.safetensors")
    assert archive.manifest["fidelity"] == plain.manifest["fidelity"]
    marker = json.loads((tmp_path / "work" / "refine.done.json").read_text())["result"]
    assert (marker["kept"], marker["fidelity"], marker["steps"]) == ("fit", None, 1)

    original = path.read_bytes()
    again = RecordingReporter()
    build(cfg, again)
    assert "refine: done earlier, reusing the fitted projector" in again.messages
    assert path.read_bytes() == original


class StopIn(RecordingReporter):
    """Raises after ``n`` advances of stage ``name``, like a kill in the middle of that stage."""

    def __init__(self, name: str, n: int) -> None:
        super().__init__()
        self.name, self.n = name, n
        self.advances: list[int] = []

    def stage(self, name, total=None, unit="it"):
        super().stage(name, total, unit)
        outer = self

        class S(Stage):
            def advance(self, k=1, **metrics):
                if name == outer.name:
                    outer.advances.append(k)
                    if len(outer.advances) == outer.n:
                        raise KeyboardInterrupt

        return S()


@pytest.mark.slow
def test_interrupted_update_continues_where_it_stopped(tmp_path, teachers_dir):
    cfg = config(tmp_path, teachers_dir, eval_batch_size=1, workdir=str(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        build(cfg, StopIn("update images", 3))
    assert not Path(cfg.out).exists()
    rerun = StopIn("update images", 0)
    build(cfg, rerun)
    assert rerun.stage_names[1:] == ["update images", "write archive"]
    assert rerun.advances == [2] + [1] * 14  # 16 patches (4 images x 2 x 2), two done before the stop
    interrupted = Path(cfg.out).read_bytes()
    build(config(tmp_path, teachers_dir, eval_batch_size=1, workdir=str(tmp_path / "b")))
    assert Path(cfg.out).read_bytes() == interrupted


def test_allow_short_takes_what_exists_and_no_update_only_downsamples(tmp_path, teachers_dir):
    rec = RecordingReporter()
    path = build(config(tmp_path, teachers_dir, ipc=4, n_real=16, allow_short=True, update=False), rec)
    m = open_archive(path).manifest
    assert m["images"]["count"] == 12 and m["images"]["ipc"] == 4  # 12 crops per class fill 3 images of 4 patches
    assert any(n.startswith("allow-short: 4 classes have fewer images than needed ('circle' 12/16") for n in rec.messages)
    assert "downsample patches" in rec.stage_names and "update images" not in rec.stage_names


def test_bad_input_is_one_clear_error(tmp_path, teachers_dir):
    with pytest.raises(HellopackError) as e:
        build(config(tmp_path, teachers_dir, n_real=3))
    assert str(e.value) == "--n-real 3 is smaller than ipc x factor^2 = 4 crops per class; raise --n-real to at least 4"
    with pytest.raises(HellopackError, match="output folder '.*nowhere' does not exist"):
        build(config(tmp_path, teachers_dir, out=str(tmp_path / "nowhere" / "x.hellopack")))
    with pytest.raises(HellopackError, match="factor 3 does not divide the image size 32"):
        build(config(tmp_path, teachers_dir, factor=3))
    with pytest.raises(HellopackError, match="no weak teachers given; pass --teacher ARCH:CHECKPOINT"):
        build(config(tmp_path, teachers_dir, teachers_dir=None))
    with pytest.raises(HellopackError, match="unknown open_clip model 'hellopack-tiny-r'; did you mean: hellopack-tiny-rn"):
        build(config(tmp_path, teachers_dir, base="hellopack-tiny-r"))
    with pytest.raises(HellopackError) as e:
        build(config(tmp_path, teachers_dir, ipc=4, n_real=16))
    assert str(e.value) == ("class 'circle' (index 0) has 12 images but --ipc x factor^2 needs 16; add images, "
                            "lower --ipc/--factor, or pass --allow-short to take what exists")
    five = SyntheticConfig(num_classes=5, per_class=12, test_per_class=4, image_size=32)
    with pytest.raises(HellopackError, match="teacher convnet:.* has 4 classes but the dataset has 5"):
        build(config(tmp_path, teachers_dir, synthetic=five, workdir=str(tmp_path / "w5")))
    assert not (tmp_path / "out.hellopack").exists()


DRIVER = textwrap.dedent("""
    import json, sys
    from hellopack.distill import BuildConfig, build
    from hellopack.data import SyntheticConfig
    from hellopack.progress import Reporter

    class Print(Reporter):
        def info(self, message):
            print("INFO", message, flush=True)

    kw = json.loads(sys.argv[1])
    kw["synthetic"] = SyntheticConfig(**kw["synthetic"])
    print("DONE", build(BuildConfig(**kw), Print()), flush=True)
""")


def child_args(tmp: Path, teachers_dir: Path, name: str, **kw) -> str:
    cfg = config(tmp, teachers_dir, out=str(tmp / f"{name}.hellopack"), workdir=str(tmp / f"{name}.work"), **kw)
    d = cfg.to_dict()
    d["synthetic"] = asdict(SYN)
    return json.dumps(d)


@pytest.mark.slow
def test_sigkill_during_fit_resumes_to_identical_bytes(tmp_path, teachers_dir):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    kw = dict(fit_epochs=4, fit_checkpoint_every=1)
    args = child_args(tmp_path, teachers_dir, "killed", **kw)
    ckpt = tmp_path / "killed.work" / "fit" / "fit-state.safetensors"
    proc = subprocess.Popen([sys.executable, str(driver), args], env=CHILD_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert ckpt.exists(), "the fit never wrote a checkpoint"
    assert not (tmp_path / "killed.work" / "fit.done.json").exists(), "the kill came after the fit"
    assert not (tmp_path / "killed.hellopack").exists()

    resumed = subprocess.run([sys.executable, str(driver), args], env=CHILD_ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "INFO fit: resuming at step" in resumed.stdout
    clean = subprocess.run([sys.executable, str(driver), child_args(tmp_path, teachers_dir, "clean", **kw)],
                           env=CHILD_ENV, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert (tmp_path / "killed.hellopack").read_bytes() == (tmp_path / "clean.hellopack").read_bytes()


@pytest.mark.slow
def test_two_process_gloo_torchrun_build_writes_one_archive(tmp_path, teachers_dir):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", str(driver),
                          child_args(tmp_path, teachers_dir, "ddp", refine_steps=2)],
                         env=CHILD_ENV, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("DONE") == 2
    assert out.stdout.count("INFO wrote") == 1  # only rank 0 reports and writes
    archives = sorted(p.name for p in tmp_path.glob("*.hellopack"))
    assert archives == ["ddp.hellopack"]
    archive = open_archive(tmp_path / "ddp.hellopack")
    assert archive.verify().images_checked == 4
    # refine runs on rank 0 alone and measures every held-out image itself (no collective to wait on)
    assert archive.manifest["fidelity"]["images"] == 16
    assert out.stdout.count("INFO refine: agreement") == 1
    fit = json.loads((tmp_path / "ddp.work" / "fit.done.json").read_text())["result"]
    assert fit["fidelity"]["images"] == 16  # the fit's fidelity: both ranks' held-out shares all-reduced


def test_webp_build_is_byte_identical_and_stores_what_downstream_saw(tmp_path, teachers_dir):
    """--image-format webp: the same command twice gives the same archive bytes, and the pixels every later
    stage used (DistilledImages.image) are exactly what the archive decodes to."""
    import hashlib

    from hellopack.archive.images import Codec, encoder_identity
    from hellopack.distill.images import DistilledImages

    paths = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        cfg = config(tmp_path / run, teachers_dir, image_format="webp", image_quality=80)
        paths.append(build(cfg, RecordingReporter()))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digests[0] == digests[1]
    a = open_archive(paths[0])
    assert a.verify().images_checked == 4
    images = a.manifest["images"]
    assert (images["format"], images["encoding"], images["quality"], images["encoder"]) == (
        "webp", "webp", 80, encoder_identity("webp"))
    assert a.manifest["build"]["image_format"] == "webp" and a.manifest["build"]["image_quality"] == 80
    # the update's patches, laid out and encoded as the build does (ipc 1, factor 2: class c's image is
    # patches 4c..4c+3): the archive holds exactly those bytes, and DistilledImages.image (what refine,
    # fidelity and every later stage see) is exactly what the archive decodes to
    from hellopack.distill.select import Chosen

    patches = np.load(tmp_path / "a" / "work" / "update" / "patches.npy")
    distilled = DistilledImages(Chosen([["k"] * 4] * 4, [[0] * 4] * 4, [[0.0] * 4] * 4), patches, 1, 2,
                                Codec("webp", 80))
    records = list(a.decoded_images())
    assert len(records) == len(distilled) == 4
    for i, (rec, arr) in enumerate(records):
        assert rec.data == distilled.encoded(i)
        assert np.array_equal(distilled.image(i).permute(1, 2, 0).numpy(), arr)
        assert not np.array_equal(distilled.pixels(i).permute(1, 2, 0).numpy(), arr)  # lossy: it differs
