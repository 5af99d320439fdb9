"""One prepared GPU check (issue 16, part 4): correctness and throughput on the user's real path.

    python benchmarks/gpu_check.py                                  # one CUDA GPU, RN50, 224 px, batch 256
    python benchmarks/gpu_check.py --device cpu --tiny --out-dir D  # the dry run tests/test_gpu_check.py runs

Sections, in one process, each time-boxed (a failing section records its error; the next runs):

- setup: open_clip RN50 with seeded random weights saved as a state-dict file and loaded as
  ``--clip-weights FILE --pretrained openai`` (``--tiny``: the shipped hellopack-tiny-rn config, its
  weights file loaded as a custom base); a ResNet-18 teacher with random weights written the way
  torchvision's train.py writes checkpoints; a small synthetic archive built with the library
  (or ``--archive`` with its ``--clip-weights``).
- correctness: the archive's projector labels its images and augmented views on the CPU in fp32
  and on the device with bf16 autocast and channels_last (forced on a CPU dry run), eagerly and
  through ``torch.compile``: top-1 agreement (target >= 99 %), max |softmax difference|, mean KL.
- throughput at 224 px, batch 256 (``--tiny``: 32 px, batch 8): merged and unmerged projector
  labels/s (1000 classes), a ResNet-18 online teacher's labels/s, a student step/s with labels on
  the fly against labels read from memory for resnet18 and swin_v2_t (target: at most 1.5x), and
  images/s through each build stage with the library's own functions (fit_projector, score_crops,
  update_patches).
- torchrun: ``torchrun --nproc_per_node=1`` build and train on synthetic data (NCCL on cuda, gloo on cpu).

Writes ``OUT_DIR/gpu.json`` and ``OUT_DIR/gpu.md`` (default benchmarks/results), prints the
markdown table, and exits 1 only when a correctness target fails (or could not be measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AGREEMENT_TARGET = 0.99
STEP_RATIO_TARGET = 1.5


@dataclass(frozen=True)
class Plan:
    base: str
    pretrained: str | None
    size: int
    batch: int
    classes: int  # throughput head (ImageNet-1K)
    archive_classes: int
    per_class: int
    views: int  # augmented views per archive image in the correctness check
    reps: int  # timed repeats per throughput measurement (after one warm-up)
    update_steps: int
    students: tuple[str, ...] = ("resnet18", "swin_v2_t")


FULL = Plan("RN50", "openai", 224, 256, 1000, 10, 24, 8, 10, 10)
TINY = Plan("hellopack-tiny-rn", None, 32, 8, 10, 4, 8, 4, 2, 2)
BUDGET = {"setup": 150, "correctness": 180, "models": 60, "projector": 30, "teacher": 20, "student": 90, "build stages": 60,
          "torchrun": 150}  # seconds per section; the full check stays under 6 min on one GPU


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_box(seconds: int) -> Iterator[None]:
    """Raise SectionTimeout in this (main) thread after ``seconds``."""
    def fire(signum: int, frame: Any) -> None:
        raise SectionTimeout(f"time box of {seconds} s exceeded")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Clock:
    """The whole check's deadline (``--max-seconds``) and the per-section budgets scaled by ``slack``."""

    def __init__(self, max_seconds: float, slack: float) -> None:
        self.end = time.perf_counter() + max_seconds if max_seconds > 0 else float("inf")
        self.slack = slack

    def box(self, name: str) -> int:
        return max(1, int(min(BUDGET[name] * self.slack, self.end - time.perf_counter())))


CLOCK = Clock(0, 1.0)


def section(results: dict, name: str, fn: Callable[[], dict]) -> dict | None:
    t0 = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        if CLOCK.end - t0 < 5:
            raise SectionTimeout("skipped: the check's --max-seconds ran out")
        with time_box(CLOCK.box(name)):
            out = fn()
        plain = {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool, dict, list, type(None)))}
        results[name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1), **plain}
    except BaseException as e:  # noqa: BLE001 - a failing section records its error and the check goes on
        if isinstance(e, KeyboardInterrupt):
            raise
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        results[name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 1), "error": line,
                         "trace": traceback.format_exc()[-2000:]}
        out = None
    print(f"[gpu_check] {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'trace'})}", flush=True)
    return out


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rate(fn: Callable[[], object], items: int, reps: int, dev: torch.device) -> float:
    """Items per second over ``reps`` timed calls after one warm-up call."""
    fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return items * reps / (time.perf_counter() - t0)


# ---- setup ----------------------------------------------------------------------------------------

def save_random_base(plan: Plan, path: Path) -> Path:
    """open_clip ``plan.base`` with seeded random weights, written as a state-dict file (no download)."""
    import open_clip
    from safetensors.torch import save_file

    import hellopack.models.base  # noqa: F401 - registers the tiny configs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(plan.base, pretrained=None)
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    return path


def save_reference_teacher(path: Path, num_classes: int, seed: int = 0) -> Path:
    """A random ResNet-18 saved the way torchvision's references/classification/train.py saves one."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet18(num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 0,
                "args": argparse.Namespace(model="resnet18", lr=0.1, epochs=90)}, path)
    return path


def setup(plan: Plan, args: argparse.Namespace, tmp: Path, dev: torch.device) -> dict:
    from hellopack.data import SyntheticConfig
    from hellopack.distill import BuildConfig, build

    weights = Path(args.clip_weights) if args.clip_weights else save_random_base(plan, tmp / f"{plan.base}.safetensors")
    teacher = save_reference_teacher(tmp / "model_0.pth", plan.archive_classes)
    archive = args.archive
    t0 = time.perf_counter()
    if archive is None:
        syn = SyntheticConfig(num_classes=plan.archive_classes, per_class=plan.per_class, test_per_class=4,
                              image_size=plan.size)
        archive = str(build(BuildConfig(
            recipe="synthetic", out=str(tmp / "check.hellopack"), synthetic=syn, teachers=(f"resnet18:{teacher}",),
            base=plan.base, pretrained=plan.pretrained, clip_weights=str(weights), templates="simple",
            ipc=2, factor=2, n_real=plan.per_class, m_crops=3, fit_epochs=1, fit_batch_size=min(64, plan.batch),
            update_steps=plan.update_steps, eval_batch_size=plan.batch, device=str(dev), fidelity_images=16)))
    return {"weights": str(weights), "teacher": str(teacher), "archive": str(archive),
            "build_seconds": round(time.perf_counter() - t0, 1)}


# ---- correctness ----------------------------------------------------------------------------------

def views(images_u8: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """The images plus ``n - 1`` seeded random-resized-crop + flip views of each, float in [0, 1]."""
    from torchvision.transforms import v2

    g = torch.Generator().manual_seed(seed)
    size = images_u8.shape[-1]
    aug = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    out = [images_u8]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        out += [torch.stack([aug(im) for im in images_u8]) for _ in range(n - 1)]
    return torch.cat(out).float() / 255


def label(model: torch.nn.Module, x: torch.Tensor, dev: torch.device, batch: int, fast: bool) -> torch.Tensor:
    """Logits in batches; ``fast``: bf16 autocast + channels_last as the library uses them on CUDA (forced on CPU)."""
    from hellopack import device as devices
    from hellopack.train.labelers import ProjectorLabeler

    outs = []
    for lo in range(0, len(x), batch):
        xb = x[lo:lo + batch].to(dev)
        if fast and dev.type == "cuda":  # the training path itself
            outs.append(ProjectorLabeler(model, dev)(xb.contiguous(memory_format=torch.channels_last)).float().cpu())
            continue
        with torch.inference_mode(), devices.autocast(dev, enabled=fast):
            xb = xb.contiguous(memory_format=devices.memory_format(dev, force=fast))
            outs.append(model(xb).float().cpu())
    return torch.cat(outs)


def compare(ref: torch.Tensor, got: torch.Tensor) -> dict:
    p, q = F.softmax(ref, 1), F.softmax(got, 1)
    kl = (p * (F.log_softmax(ref, 1) - F.log_softmax(got, 1))).sum(1)
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    return {"agreement": round(agree, 6), "softmax_max_abs_diff": float((p - q).abs().max()),
            "kl_mean": float(kl.mean()), "pass": agree >= AGREEMENT_TARGET}


def correctness(plan: Plan, env: dict, dev: torch.device, compile_: bool) -> dict:
    from hellopack.archive import open_archive
    from hellopack.train.labelers import projector_from_archive
    from hellopack.train.loop import load_archive_images

    archive = open_archive(env["archive"])
    m = archive.manifest
    images, _ = load_archive_images(archive, int(m["images"]["size"]), len(m["classes"]))
    x = views(images, plan.views)
    cpu_model = projector_from_archive(archive, env["weights"], device="cpu")
    ref = label(cpu_model, x, torch.device("cpu"), plan.batch, fast=False)
    fast_model = projector_from_archive(archive, env["weights"], device=dev).to(memory_format=torch.channels_last)
    out: dict[str, Any] = {"images": len(x), "eager": compare(ref, label(fast_model, x, dev, plan.batch, True))}
    if compile_:
        t0 = time.perf_counter()
        compiled = torch.compile(fast_model)
        out["compiled"] = compare(ref, label(compiled, x, dev, plan.batch, True))
        out["compiled"]["compile_and_run_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ---- throughput -----------------------------------------------------------------------------------

def throughput_models(plan: Plan, env: dict, dev: torch.device) -> dict:
    from hellopack.models.base import load_base
    from hellopack.distill.config import BuildConfig
    from hellopack.models.projector import Projector
    from hellopack.models.students import build_student

    base = load_base(plan.base, plan.pretrained, env["weights"])
    torch.manual_seed(0)
    head = F.normalize(torch.randn(plan.classes, base.embed_dim), dim=-1)  # the head's values do not change the cost
    rank_head = BuildConfig(recipe="synthetic", out="x").resolved_rank_head(plan.classes, base.embed_dim)  # build's rule
    proj = Projector(base, [f"class {i}" for i in range(plan.classes)], ["a photo of a {}."], rank_encoder=8,
                     rank_head=rank_head, head=head)
    with torch.no_grad():
        for mod in proj.lora_modules().values():
            mod.lora_B.normal_(0.0, 1e-3)  # as after a fit
    mf = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    teacher = build_student("resnet18", plan.classes, plan.size, base.mean, base.std)
    return {"base": base, "projector": proj.to(dev, memory_format=mf),
            "merged": proj.merged().to(dev, memory_format=mf).eval(),
            "teacher": teacher.to(dev, memory_format=mf).eval().requires_grad_(False), "mf": mf}


def batch_on(plan: Plan, dev: torch.device, mf: torch.memory_format) -> torch.Tensor:
    return torch.rand(plan.batch, 3, plan.size, plan.size, generator=torch.Generator().manual_seed(1)).to(
        dev).contiguous(memory_format=mf)


def projector_rates(plan: Plan, ms: dict, dev: torch.device) -> dict:
    from hellopack.train.labelers import ProjectorLabeler

    x = batch_on(plan, dev, ms["mf"])
    merged = rate(lambda: ProjectorLabeler(ms["merged"], dev)(x), plan.batch, plan.reps, dev)
    unmerged = rate(lambda: ProjectorLabeler(ms["projector"], dev)(x), plan.batch, plan.reps, dev)
    return {"merged_labels_per_s": round(merged, 1), "unmerged_labels_per_s": round(unmerged, 1)}


def teacher_rate(plan: Plan, ms: dict, dev: torch.device) -> dict:
    from hellopack.train.labelers import TeacherLabeler

    x = batch_on(plan, dev, ms["mf"])
    return {"resnet18_labels_per_s": round(rate(lambda: TeacherLabeler([ms["teacher"]], dev)(x), plan.batch,
                                                plan.reps, dev), 1)}


def student_rates(plan: Plan, ms: dict, dev: torch.device) -> dict:
    """Steps/s as hellopack.train.loop._step does them: labeler, student under autocast, loss, AdamW."""
    from hellopack import device as devices
    from hellopack.models.students import build_student
    from hellopack.train.labelers import ProjectorLabeler
    from hellopack.train.losses import student_loss

    x = batch_on(plan, dev, ms["mf"])
    hard = F.one_hot(torch.randint(0, plan.classes, (plan.batch,)), plan.classes).float().to(dev)
    labeler = ProjectorLabeler(ms["merged"], dev)
    bank = labeler(x).repeat(2, 1)  # labels read from memory (what heavy-label methods keep)
    idx = torch.arange(plan.batch, device=dev)
    out: dict[str, Any] = {}
    for arch in plan.students:
        torch.manual_seed(3)
        student = build_student(arch, plan.classes, plan.size, ms["base"].mean, ms["base"].std)
        student = student.to(dev, memory_format=ms["mf"]).train()
        opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.01)

        def step(soft_fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
            def run() -> object:
                soft = soft_fn()
                with devices.autocast(dev):
                    logits = student(x)
                loss = student_loss(logits, soft, hard, loss="mse", beta=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss
            return run

        fly = rate(step(lambda: labeler(x)), 1, plan.reps, dev)
        mem = rate(step(lambda: bank[idx]), 1, plan.reps, dev)
        ratio = mem / fly  # time per step on the fly / time per step from memory
        out[arch] = {"steps_per_s_on_the_fly": round(fly, 3), "steps_per_s_from_memory": round(mem, 3),
                     "time_ratio": round(ratio, 3), "pass": ratio <= STEP_RATIO_TARGET}
    return out


def stage_rates(plan: Plan, ms: dict, dev: torch.device, tmp: Path) -> dict:
    """Images/s through the build's stages, with the library's own stage functions."""
    from hellopack import device as devices
    from hellopack.distill.fit import FitParams, Numerics, fit_projector
    from hellopack.distill.select import score_crops
    from hellopack.distill.teachers import TeacherEnsemble
    from hellopack.distill.update import update_patches
    from hellopack.progress import NULL

    proj, mf = ms["projector"], ms["mf"]
    teachers = TeacherEnsemble([ms["teacher"]])
    g = torch.Generator().manual_seed(4)
    x = torch.rand(plan.batch, 3, plan.size, plan.size, generator=g)
    y = torch.randint(0, plan.classes, (plan.batch,), generator=g)
    crops = (x * 255).round().to(torch.uint8)

    def fit(steps: int, key: str) -> float:
        params = FitParams(epochs=1, lr=1e-4, weight_decay=0.0, batch_size=plan.batch, lam=0.1,
                           checkpoint_every=10**9, steps_per_epoch=steps, numerics=Numerics(mf))
        sync(dev)
        t0 = time.perf_counter()
        fit_projector(proj, teachers, lambda e: [(x, y)] * steps, params, tmp / f"fit-{key}", key, dev, NULL)
        sync(dev)
        return time.perf_counter() - t0

    fit(1, "warm")
    fit_rate = plan.batch * plan.reps / fit(plan.reps, "timed")

    def observer(v: torch.Tensor) -> torch.Tensor:
        with devices.autocast(dev):
            return teachers(v)

    score_rate = rate(lambda: score_crops(observer, crops, y, dev, mf, factor=2), plan.batch, plan.reps, dev)

    def features(v: torch.Tensor) -> torch.Tensor:
        with devices.autocast(dev):
            return proj.image_features(v)

    steps = plan.update_steps
    patch_steps = rate(lambda: update_patches(features, crops, 2, steps, 0.01, dev), plan.batch * steps,
                       max(1, plan.reps // 5), dev)
    return {"fit_images_per_s": round(fit_rate, 1), "score_crops_per_s": round(score_rate, 1),
            "score_images_per_s_at_5_crops": round(score_rate / 5, 1),
            "update_patch_steps_per_s": round(patch_steps, 1),
            "update_images_per_s_at_100_steps": round(patch_steps / 100, 2)}


# ---- torchrun -------------------------------------------------------------------------------------

def torchrun(plan: Plan, env: dict, dev: torch.device, tmp: Path, deadline: float) -> dict:
    work = tmp / "torchrun"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "hellopack_cli").symlink_to(REPO / "cli")  # `-m hellopack_cli` without installing
    cfg = work / "build.toml"
    cfg.write_text(f"eval_batch_size = {plan.batch}\n[synthetic]\nnum_classes = {plan.archive_classes}\n"
                   f"per_class = {plan.per_class}\ntest_per_class = 4\nimage_size = {plan.size}\n")
    child = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work / "pkg"), str(REPO), os.environ.get("PYTHONPATH", "")]),
             "OMP_NUM_THREADS": "1" if dev.type == "cpu" else os.environ.get("OMP_NUM_THREADS", "4")}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "hellopack_cli"]
    archive = work / "ddp.hellopack"
    build = run + ["build", "synthetic", "--config", str(cfg), "--out", str(archive), "--teacher",
                   f"resnet18:{env['teacher']}", "--base", plan.base, "--pretrained", plan.pretrained or "none",
                   "--clip-weights", env["weights"], "--templates", "simple", "--ipc", "1", "--factor", "2",
                   "--n-real", "4", "--m-crops", "3", "--fit-epochs", "1", "--fit-batch-size", str(min(64, plan.batch)),
                   "--update-steps", "2", "--fidelity-images", "8", "--device", str(dev), "-q"]
    train = run + ["train", str(archive), "--arch", "resnet18", "--epochs", "1", "--clip-weights", env["weights"],
                   "--device", str(dev), "--out", str(work / "run"), "-q"]
    out: dict[str, Any] = {"backend": "nccl" if dev.type == "cuda" else "gloo"}
    for name, argv in (("build", build), ("train", train)):
        t0 = time.perf_counter()
        # its own process group: a time-out ends torchrun and the workers it started, not torchrun alone
        proc = subprocess.Popen(argv, env=child, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=max(5, deadline - time.perf_counter() - 5))
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            tail = (stderr.strip() or stdout.strip()).splitlines()[-5:]
            raise RuntimeError(f"torchrun {name} exited {proc.returncode}: {' | '.join(tail)[:600]}")
    result = json.loads((work / "run" / "result.json").read_text())
    out["train_world_size"] = result["timing"]["world_size"]
    out["train_steps"] = result["timing"]["steps"]
    return out


# ---- report ---------------------------------------------------------------------------------------

def markdown(res: dict) -> str:
    meta = res["meta"]
    lines = [f"# GPU check ({'tiny dry run' if meta['tiny'] else 'RN50, 224 px, batch 256'})", "",
             f"`{meta['command']}` on {meta['device_name']}, torch {meta['torch']}, {meta['date']}.", "",
             "| section | measure | value | target |", "|---|---|---|---|"]

    def row(sec: str, what: str, value: Any, target: str = "") -> None:
        lines.append(f"| {sec} | {what} | {value} | {target} |")

    for name, s in res["sections"].items():
        if not s.get("ok"):
            row(name, "error", f"`{s.get('error', '')}`", "")
            continue
        if name == "correctness":
            for mode in ("eager", "compiled"):
                if mode in s:
                    c = s[mode]
                    row(name, f"{mode}: top-1 agreement, CPU fp32 vs device bf16 + channels_last ({s['images']} images)",
                        f"{c['agreement']:.2%}", f">= 99 % {'PASS' if c['pass'] else 'FAIL'}")
                    row(name, f"{mode}: max abs softmax diff / mean KL",
                        f"{c['softmax_max_abs_diff']:.2e} / {c['kl_mean']:.2e}")
        elif name == "student":
            for arch, v in s.items():
                if isinstance(v, dict):
                    row(name, f"{arch} steps/s on the fly / from memory (time ratio)",
                        f"{v['steps_per_s_on_the_fly']} / {v['steps_per_s_from_memory']} ({v['time_ratio']}x)",
                        f"<= 1.5x {'PASS' if v['pass'] else 'MISS'}")
        else:
            for k, v in s.items():
                if k not in ("ok", "seconds", "trace", "weights", "teacher", "archive") and not isinstance(v, dict):
                    row(name, k, v)
        row(name, "seconds", s["seconds"])
    lines += ["", f"Correctness targets: {'PASS' if res['correctness_pass'] else 'FAIL'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny base, 32 px, batch 8 (the CPU dry run)")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--archive", default=None, help="check this archive instead of building one")
    p.add_argument("--clip-weights", default=None, help="the base weights file of --archive")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="deadline for the whole check (default: 360, none with --tiny)")
    args = p.parse_args(argv)
    plan = TINY if args.tiny else FULL
    global CLOCK
    # a shared CPU runs the tiny dry run: generous boxes there, the GPU check keeps its 6 minutes
    CLOCK = Clock(args.max_seconds if args.max_seconds is not None else (0 if args.tiny else 360),
                  5.0 if args.tiny else 1.0)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    res: dict[str, Any] = {"meta": {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "tiny": args.tiny, "plan": asdict(plan),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, "sections": {}}
    sec = res["sections"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as d:
        tmp = Path(d)
        env = section(sec, "setup", lambda: setup(plan, args, tmp, dev))
        if env is not None:
            section(sec, "correctness", lambda: correctness(plan, env, dev, not args.no_compile))
            models = section(sec, "models", lambda: throughput_models(plan, env, dev))
            if models is not None:
                section(sec, "projector", lambda: projector_rates(plan, models, dev))
                section(sec, "teacher", lambda: teacher_rate(plan, models, dev))
                section(sec, "student", lambda: student_rates(plan, models, dev))
                section(sec, "build stages", lambda: stage_rates(plan, models, dev, tmp))
            del models
            section(sec, "torchrun", lambda: torchrun(plan, env, dev, tmp, time.perf_counter() + CLOCK.box("torchrun")))
    c = sec.get("correctness", {})
    res["correctness_pass"] = bool(c.get("ok")) and all(c[m]["pass"] for m in ("eager", "compiled") if m in c)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    (out / "gpu.md").write_text(md)
    print(md)
    return 0 if res["correctness_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
