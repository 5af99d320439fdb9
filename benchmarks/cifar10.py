"""CIFAR-10 end to end on CPU: weak teachers, archives, students with hard / teacher / projector labels.

    python benchmarks/cifar10.py            # full run (about 2.3 h on an idle 2-core CPU)
    python benchmarks/cifar10.py --quick    # about 25 min: first training shard, fewer epochs, 1 seed, fewer rows
    python benchmarks/cifar10.py --estimate # print the plan and the time estimate, run nothing

Data: the real CIFAR-10 WebDataset shards in ../shared/data/cifar10 relative to the repo (or
--data DIR); when they are absent the benchmark says so and exits 0. Every stage calls the
library (hellopack.distill.teach, hellopack.pretrain, hellopack.distill.build, hellopack.train)
and caches its result under benchmarks/.cache/cifar10/, keyed by its settings, so a rerun skips
finished work and a killed run continues (a killed `teach` stage restarts).

Stages:
 (a) a weak-teacher trajectory (`teach`), test top-1 of every kept checkpoint;
 (b) archives at IPC 10 and 50 on the base named by --base (default: the tiny random-init
     open_clip "hellopack-tiny-rn": this machine has no CLIP weights), or --clip-weights FILE;
 (c) a second base pretrained with SimCLR (`pretrain-base`) on the TRAINING images only, its
     linear probe, and archives built on it;
 (d) ConvNet-3 and CIFAR-stem ResNet-18 students (`train`) with hard labels, the teachers'
     labels (online, RDED protocol), and each projector's labels; final-epoch test top-1;
 (e) label fidelity vs LoRA rank (encoder and head ranks) on the same teachers, on each base and
     on the random-init tiny ViT "hellopack-tiny-vit" (LoRA on its patch embedding and on every
     block's attention and MLP; --sweep-only runs the teachers and this ViT row alone);
 (f) per row: archive size, label payload, and the soft-label files the teacher row needs.
Results: benchmarks/results/cifar10.{json,md} (--quick: cifar10-quick.{json,md}; --sweep-only:
cifar10[-quick]-sweep-vit.{json,md}).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hellopack.precision import AUTOCAST_ENV
from hellopack.threads import prepare_process, usable_cpus

if __name__ == "__main__":
    prepare_process()  # before torch loads OpenMP: waiting threads sleep (hellopack.threads), as the CLI does

import torch  # noqa: E402

from hellopack.progress import Reporter, Stage  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10"
CACHE = HERE / ".cache" / "cifar10"
RESULTS = HERE / "results"
CLASSES = 10
LABEL_ROWS = ("hard", "teacher", "projector", "projector-simclr", "projector-refine")
OBSERVER_ROW = "projector-simclr-projobs"  # the SimCLR archive selected with --observer projector (IPC 10)
ROW_TITLES = {"hard": "hard labels", "teacher": "teachers (online)", "projector": "projector, random-init base",
              "projector-simclr": "projector, SimCLR base", "projector-refine": "projector, SimCLR base + refine",
              OBSERVER_ROW: "projector, SimCLR base, crops scored by the projector"}
# label row -> the archive it trains on (hard and teacher rows use the random-init base's images)
ROW_ARCHIVE = {"hard": "given", "teacher": "given", "projector": "given", "projector-simclr": "simclr",
               "projector-refine": "simclr-refine", OBSERVER_ROW: "simclr-projobs"}
PRETRAINED_ROWS = ("projector-simclr", "projector-refine", OBSERVER_ROW)
STUDENT_TITLES = {"convnet": "ConvNet-3", "resnet18_cifar": "ResNet-18 (CIFAR stem)"}
BASE_TITLES = {"given": "Random-init base", "simclr": "SimCLR base", "tiny-vit": "Random-init tiny ViT base"}
# Bases only the rank sweep fits (random init): kind -> open_clip model name. A ViT tower is adapted on
# its patch embedding and every block's attention in-projection, out_proj and MLP (issue 16).
SWEEP_BASES = {"tiny-vit": "hellopack-tiny-vit"}
# Published RDED anchors (DESIGN.md section 5), top-1 %.
ANCHORS = {("convnet", 10): 50.2, ("convnet", 50): 68.4, ("resnet18_cifar", 10): 37.1, ("resnet18_cifar", 50): 62.1}
REFINE_LR = 0.01  # measured on the quick run's SimCLR archive: 300 steps 24.3 -> 32.6 %, 800 steps -> 36.3 %
CODEC_QUALITY = 90  # --codecs: the lossy encodings' quality (above BuildConfig.image_quality's 85: the kinder case)
CODECS = ("png", "webp-lossless", "webp", "jpeg")
SOFT_LABEL_EPOCHS = 300  # the heavy-label methods' protocol, for the storage comparison


# ---- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    mode: str
    train_shards: int | None  # None: all training shards; N: the first N (10,000 images each)
    teacher_arch: str
    teach_epochs: int
    keep_every: int
    pretrain_epochs: int
    probe_train: int
    probe_test: int
    fit_epochs: int
    ipcs: tuple[int, ...]
    # (arch, ipc) -> (epochs, seeds, label rows)
    students: dict[tuple[str, int], tuple[int, int, tuple[str, ...]]]
    encoder_ranks: tuple[int, ...]
    head_ranks: tuple[int, ...]  # capped at min(classes, embed_dim) when run
    sweep_fit_epochs: int
    sweep_train_shards: int | None = None  # the rank sweep's fits read only the first N training shards
    sweep_extra_bases: tuple[str, ...] = ("tiny-vit",)  # SWEEP_BASES the rank sweep also fits
    fit_batch_size: int = 32  # small batches: the fit is step-limited on CPU budgets (see the notes)
    refine_steps: int = 800  # the "+ refine" archives: LoRA refined on the archive's own training views
    n_real: int = 300
    m_crops: int = 5


FULL = Plan(
    mode="full", train_shards=None, teacher_arch="convnet_w64", teach_epochs=6, keep_every=2,
    pretrain_epochs=6, probe_train=50_000, probe_test=10_000, fit_epochs=2, ipcs=(10, 50),
    students={("convnet", 10): (150, 3, (*LABEL_ROWS, OBSERVER_ROW)), ("convnet", 50): (30, 2, LABEL_ROWS),
              ("resnet18_cifar", 10): (60, 1, LABEL_ROWS),
              ("resnet18_cifar", 50): (12, 1, ("hard", "teacher", "projector-simclr", "projector-refine"))},
    encoder_ranks=(2, 4, 8, 16), head_ranks=(8, 16, 32, 64, 128), sweep_fit_epochs=1, sweep_train_shards=1,
)
QUICK = Plan(
    mode="quick", train_shards=1, teacher_arch="convnet_w64", teach_epochs=3, keep_every=2,
    pretrain_epochs=3, probe_train=5_000, probe_test=2_000, fit_epochs=2, ipcs=(10, 50),
    students={("convnet", 10): (50, 1, (*LABEL_ROWS, OBSERVER_ROW)), ("convnet", 50): (10, 1, ("hard", "projector")),
              ("resnet18_cifar", 10): (10, 1, ("hard", "projector"))},
    encoder_ranks=(2, 8), head_ranks=(16,), sweep_fit_epochs=2, fit_batch_size=128, refine_steps=300,
)

# CPU milliseconds per image on one thread of this machine (measured with time.process_time
# while other jobs shared it, so on the safe side); wall time on an idle machine = sum / SPEEDUP.
COST_MS = {
    "decode": 1.0,  # JPEG decode + augmentation, per training image read
    "train": {"convnet": 5.0, "convnet_w64": 2.1, "convnet_w32": 0.85, "resnet18_cifar": 31.0},
    "eval": {"convnet": 2.1, "convnet_w64": 0.92, "convnet_w32": 0.4, "resnet18_cifar": 9.7},
    "fit": {"hellopack-tiny-rn": 4.0, "hellopack-tiny-rn32": 1.1},  # LoRA forward + backward
    "label": {"hellopack-tiny-rn": 1.85, "hellopack-tiny-rn32": 0.4},  # projector forward
    "simclr": {"hellopack-tiny-rn": 3.2, "hellopack-tiny-rn32": 1.15},  # per view, incl. augmentation
}
SPEEDUP = 1.6  # two threads on two cores vs one thread
# COST_MS is fp32. Under bf16 autocast (--autocast bf16, the default) the 2026-12-07 full run's stages took
# 136.5 min summed over its workers against the fp32 model's 244 min of one-thread time: 0.56.
BF16_FACTOR = 0.56
TEST_IMAGES = 10_000


def cost(kind: str, name: str = "") -> float:
    table = COST_MS[kind]
    if not isinstance(table, dict):
        return table / 1000
    return table.get(name, max(table.values())) / 1000  # unknown models: assume the dearest known one


def student_batch(ipc: int) -> int:
    """The batch size build writes into the recipe (RDED's rule, BuildConfig.resolved_train_batch_size)."""
    from hellopack.train.protocol import batch_size

    return batch_size(ipc, CLASSES)


def images_seen(ipc: int, epochs: int) -> int:
    n = ipc * CLASSES
    b = student_batch(ipc)
    return epochs * (n // b) * b


def estimate(plan: Plan, base: str, pretrain: bool) -> dict[str, float]:
    """Seconds per stage on an idle machine, from COST_MS."""
    n = 10_000 * plan.train_shards if plan.train_shards else 50_000
    teachers = len(kept_epochs(plan))
    t_cost = cost("eval", plan.teacher_arch)
    fit_img = cost("fit", base) + teachers * t_cost + cost("decode")
    fidelity = TEST_IMAGES * (cost("label", base) + teachers * t_cost + cost("decode"))
    select = CLASSES * plan.n_real * (plan.m_crops * cost("label", base) + 2 * cost("decode"))
    bases = 2 if pretrain else 1
    sweep_bases = bases + len(plan.sweep_extra_bases)  # their fit cost: the dearest known base (cost())
    refine = (plan.refine_steps * min(100, CLASSES * max(plan.ipcs)) * (fit_img - cost("decode")) + fidelity
              ) * len(plan.ipcs) if pretrain else 0.0
    sweep_points = len(sweep_points_for(plan, 10))
    reused = 1 if plan.sweep_fit_epochs == plan.fit_epochs and not plan.sweep_train_shards else 0
    n_sweep = min(n, 10_000 * plan.sweep_train_shards) if plan.sweep_train_shards else n
    est = {
        "teach": plan.teach_epochs * n * (cost("train", plan.teacher_arch) + cost("decode"))
        + teachers * TEST_IMAGES * (t_cost + cost("decode")),
        "pretrain": (plan.pretrain_epochs * 2 * n * cost("simclr", base)
                     + 2 * (plan.probe_train + plan.probe_test) * (cost("label", base) + cost("decode"))
                     ) if pretrain else 0.0,
        "build": bases * (plan.fit_epochs * n * fit_img + fidelity) + bases * len(plan.ipcs) * select + refine,
        "rank sweep": bases * (sweep_points - reused) * (plan.sweep_fit_epochs * n_sweep * fit_img + fidelity)
        + (sweep_bases - bases) * sweep_points * (plan.sweep_fit_epochs * n_sweep * fit_img + fidelity),
        "students": 0.0,
    }
    for (arch, ipc), (epochs, seeds, rows) in plan.students.items():
        for row in rows:
            if row in PRETRAINED_ROWS and not pretrain:
                continue
            label = {"hard": 0.0, "teacher": teachers * t_cost}.get(row, cost("label", base))
            per_run = (images_seen(ipc, epochs) * (cost("train", arch) + label)
                       + TEST_IMAGES * (cost("eval", arch) + cost("decode")))
            est["students"] += seeds * per_run
    return {k: v / SPEEDUP for k, v in est.items()}


def sweep_only_estimate(plan: Plan, est: dict[str, float]) -> dict[str, float]:
    """--sweep-only: the teachers, and the rank sweep's share that its extra bases take."""
    per_base = est["rank sweep"] / max(1, 2 + len(plan.sweep_extra_bases))  # at most: every point refitted
    return {"teach": est["teach"], "rank sweep": per_base * len(plan.sweep_extra_bases)}


def kept_epochs(plan: Plan) -> list[int]:
    """The checkpoints `teach` keeps (TeachConfig.kept_epochs)."""
    from hellopack.distill.teach import TeachConfig

    return TeachConfig(recipe="cifar10", out="-", epochs=plan.teach_epochs, keep_every=plan.keep_every).kept_epochs()


def sweep_points_for(plan: Plan, cap: int, encoder_cap: int | None = None) -> list[tuple[int, int]]:
    """(encoder rank, head rank) points: encoder ranks at the capped head rank, head ranks at encoder 8.
    ``encoder_cap``: the base's largest encoder rank (an archive's rank cannot exceed its smallest layer's
    smaller side: 8 on hellopack-tiny-rn, whose stem has 8 outputs), so rank 16 is no point there."""
    heads = sorted({min(r, cap) for r in plan.head_ranks})
    encoders = sorted({min(r, encoder_cap or r) for r in plan.encoder_ranks})
    points = [(r, cap) for r in encoders] + [(min(8, encoder_cap or 8), h) for h in heads]
    return list(dict.fromkeys(points))


# ---- plumbing ------------------------------------------------------------------------------------

def key_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


LOG_PREFIX = ""  # "w1 " in a worker process


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {LOG_PREFIX}{msg}", flush=True)


class _LogStage(Stage):
    def __init__(self, name: str, total: int | None, unit: str) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.done, self.t0, self.last, self.metrics = 0, time.perf_counter(), time.perf_counter(), {}

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        self.metrics = metrics
        now = time.perf_counter()
        if now - self.last >= 120:  # a line every two minutes on long stages
            self.last = now
            of = f"/{self.total:,}" if self.total else ""
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            log(f"  {self.name}: {self.done:,}{of} {self.unit} ({now - self.t0:.0f} s) {shown}")

    def close(self) -> None:
        dt = time.perf_counter() - self.t0
        if dt >= 5:
            log(f"  {self.name}: {self.done:,} {self.unit} in {dt:.0f} s")


class LogReporter(Reporter):
    """Plain log lines (the benchmark's output is a log, not a live display)."""

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        return _LogStage(name, total, unit)

    def info(self, message: str) -> None:
        log(f"  {message}")


class Busy(Exception):
    """A stage another worker process is computing (raised only by a Cache that does not wait)."""


class Cache:
    """JSON records of finished stages: records/<name>-<key>.json."""

    def __init__(self, root: Path, wait: bool = True) -> None:
        self.root = root
        self.wait = wait  # False (--worker-id): a stage another process is computing raises Busy at once
        self.seconds: dict[str, float] = {}  # record file -> wall time of the run that made it
        self.ran = 0  # stages computed (not cached) by this invocation
        (root / "records").mkdir(parents=True, exist_ok=True)

    def runs(self, this: dict | None = None) -> list[dict]:
        """The invocations that computed stages in this cache (appending ``this`` when given)."""
        log_file = self.root / "runs.jsonl"
        if this is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(this, sort_keys=True) + "\n")
        if not log_file.is_file():
            return []
        return [json.loads(ln) for ln in log_file.read_text().splitlines() if ln.strip()]

    def path(self, name: str, key: str) -> Path:
        return self.root / "records" / f"{name}-{key}.json"

    def get(self, name: str, key: str) -> dict | None:
        p = self.path(name, key)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, name: str, key: str, value: dict) -> dict:
        from hellopack.fsutil import atomic_write_bytes

        atomic_write_bytes(self.path(name, key), (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())
        return value

    def run(self, name: str, key: str, fn: Callable[[], dict]) -> dict:
        # One lock per stage: two benchmark processes sharing a cache (say one with --no-pretrain started
        # early on the second core) never compute the same stage twice; the second waits, then reads it.
        with open(self.path(name, key).with_suffix(".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(name) from None
            done = self.get(name, key)
            if done is not None:
                log(f"{name}: cached ({self.path(name, key).name})")
            else:
                t0 = time.perf_counter()
                done = fn()
                done.setdefault("wall_seconds", round(time.perf_counter() - t0, 1))
                self.put(name, key, done)
                self.ran += 1
        self.seconds[self.path(name, key).name] = done["wall_seconds"]
        return done


def relative_paths(obj: Any) -> Any:
    """Results name paths relative to the repository (``../shared/...``, ``benchmarks/.cache/...``), never
    this machine's absolute layout."""
    if isinstance(obj, dict):
        return {k: relative_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v) for v in obj]
    if isinstance(obj, str):
        for root, name in ((str(REPO), "."), (str(REPO.parent), "..")):
            if obj.startswith(root + os.sep):
                return name + obj[len(root):]
    return obj


def find_data(data: Path) -> str | None:
    """Why the shards cannot be used, or None when they can."""
    if not data.is_dir():
        return f"CIFAR-10 shards not found at '{data}'"
    names = [p.name for p in data.iterdir()]
    if not any(n.startswith("train-") and n.endswith(".tar") for n in names):
        return f"'{data}' holds no train-*.tar shards"
    if not any(n.startswith("test-") and n.endswith(".tar") for n in names):
        return f"'{data}' holds no test-*.tar shards (the 10k test images are needed)"
    return None


def data_view(data: Path, shards: int | None, cache: Path) -> Path:
    """The data folder, or a folder of symlinks to its first ``shards`` training shards and its test shards."""
    if shards is None:
        return data
    view = cache / f"data-{shards}shard"
    view.mkdir(parents=True, exist_ok=True)
    train = sorted(p for p in data.iterdir() if p.name.startswith("train-") and p.name.endswith(".tar"))[:shards]
    keep = train + sorted(p for p in data.iterdir() if p.name.startswith("test-") or p.name == "classes.txt")
    for p in keep:
        link = view / p.name
        if not link.is_symlink():
            link.symlink_to(p.resolve())
    return view


def train_images(data: Path) -> int:
    from hellopack.data import open_source

    return int(open_source("cifar10", str(data), split="train").num_samples or 0)


def data_identity(data: Path) -> list:
    return sorted((p.name, p.stat().st_size) for p in data.iterdir() if p.name.endswith(".tar"))


# ---- stages --------------------------------------------------------------------------------------

@dataclass
class Ctx:
    plan: Plan
    data: Path  # the (possibly reduced) data folder every stage reads
    data_id: list
    cache: Cache
    reporter: Reporter
    base: str
    clip_weights: str | None
    clip_tag: str | None
    fit_lr: float
    pretrain: bool
    simclr_fit_lr: float = 0.003
    reverse_students: bool = False
    out: dict = field(default_factory=dict)


def stage_teacher(ctx: Ctx) -> dict:
    from hellopack.distill.teach import TeachConfig, teach

    p = ctx.plan
    settings = {"data": ctx.data_id, "arch": p.teacher_arch, "epochs": p.teach_epochs, "keep": p.keep_every, "seed": 0}
    key = key_of(settings)
    folder = ctx.cache.root / f"teacher-{key}"
    log(f"(a) weak teachers: {p.teacher_arch}, {p.teach_epochs} epochs, keeping every {p.keep_every}")

    def run() -> dict:
        traj = teach(TeachConfig(recipe="cifar10", out=str(folder), data_dir=str(ctx.data), arch=p.teacher_arch,
                                 epochs=p.teach_epochs, keep_every=p.keep_every, seed=0, device="cpu"), ctx.reporter)
        return {"folder": str(folder), "arch": traj["arch"], "epochs": p.teach_epochs, "keep_every": p.keep_every,
                "eval": traj["eval"], "checkpoints": traj["checkpoints"], "settings": settings}

    rec = ctx.cache.run("teacher", key, run)
    rec["key"] = key
    return rec


def base_identity(ctx: Ctx) -> dict:
    return dict(_base_identity(ctx.base, ctx.clip_tag, ctx.clip_weights))


@functools.lru_cache(maxsize=None)  # a worker asks for it on every try of every job: load the model once
def _base_identity(name: str, clip_tag: str | None, clip_weights: str | None) -> dict:
    from hellopack.models.base import load_base

    base = load_base(name, clip_tag, clip_weights)
    return {"name": base.name, "pretrained": base.pretrained, "custom": base.custom, "fingerprint": base.fingerprint,
            "bytes": base.bytes, "embed_dim": base.embed_dim, "image_size": base.image_size,
            "weights": clip_weights, "kind": "given weights" if clip_weights else "random init"}


def encoder_cap(kind: str, ctx: Ctx) -> int:
    """The largest encoder rank of a base kind (hellopack.models.lora.max_encoder_rank)."""
    name = SWEEP_BASES.get(kind, ctx.base)
    return _encoder_cap(name, None if kind in SWEEP_BASES else ctx.clip_tag,
                        None if kind in SWEEP_BASES else ctx.clip_weights)


@functools.lru_cache(maxsize=None)
def _encoder_cap(name: str, clip_tag: str | None, clip_weights: str | None) -> int:
    from hellopack.models.base import load_base
    from hellopack.models.lora import max_encoder_rank

    return max_encoder_rank(load_base(name, clip_tag, clip_weights).model.visual)


def probe_sources(ctx: Ctx):
    from hellopack.data import open_source

    return open_source("cifar10", str(ctx.data), split="train"), open_source("cifar10", str(ctx.data), split="test")


def stage_probe_given(ctx: Ctx, ident: dict) -> dict:
    """Linear probe of the given (random-init) base, for comparison with the SimCLR base."""
    from hellopack.models.base import load_base
    from hellopack.pretrain import linear_probe

    p = ctx.plan
    key = key_of({"data": ctx.data_id, "base": ident["fingerprint"], "n": [p.probe_train, p.probe_test]})

    def run() -> dict:
        train_src, test_src = probe_sources(ctx)
        base = load_base(ctx.base, ctx.clip_tag, ctx.clip_weights)
        return linear_probe(base, train_src, test_src, p.probe_train, p.probe_test, reporter=ctx.reporter)

    return ctx.cache.run("probe-given", key, run)


def stage_pretrain(ctx: Ctx) -> dict:
    from hellopack.pretrain import PretrainConfig, pretrain

    p = ctx.plan
    settings = {"data": ctx.data_id, "config": ctx.base, "epochs": p.pretrain_epochs, "batch": 256, "seed": 0,
                "probe": [p.probe_train, p.probe_test]}
    key = key_of(settings)
    out = ctx.cache.root / f"base-simclr-{key}.safetensors"
    log(f"(c) SimCLR base: {ctx.base}, {p.pretrain_epochs} epochs on the training images only")

    def run() -> dict:
        res = pretrain(PretrainConfig(recipe="cifar10", out=str(out), data_dir=str(ctx.data), config=ctx.base,
                                      epochs=p.pretrain_epochs, batch_size=256, probe_train=p.probe_train,
                                      probe_test=p.probe_test, resume=True, seed=0, device="cpu"), ctx.reporter)
        return {"path": str(out), "fingerprint": res["fingerprint"], "bytes": res["bytes"], "config": ctx.base,
                "epochs": p.pretrain_epochs, "images": res["images"], "objective": res["objective"],
                "pretrain_seconds": res["seconds"], "probe": res["probe"], "final_loss": res["history"][-1]["loss"],
                "settings": settings}

    rec = ctx.cache.run("pretrain", key, run)
    rec["key"] = key
    return rec


def archive_facts(path: Path) -> dict:
    from hellopack.archive import open_archive

    a = open_archive(path)
    stored = {m.name: m.stored_size for m in a.members}
    m = a.manifest
    return {"path": str(path), "bytes": path.stat().st_size, "images": m["images"]["count"], "ipc": m["images"]["ipc"],
            "payload_bytes": stored["lora.safetensors"] + stored["prompts.json"],
            "lora_bytes": stored["lora.safetensors"], "prompts_bytes": stored["prompts.json"],
            "images_bytes": stored.get("images.tar"), "lora_parameters": m["lora"]["parameters"],
            "rank_encoder": m["lora"]["rank_encoder"], "rank_head": m["lora"]["rank_head"],
            "fidelity": m.get("fidelity"), "manifest_base": m["base"]}


def stage_build(ctx: Ctx, teacher: dict, base_kind: str, weights: str | None, base_key: str, ipc: int,
                rank_encoder: int, rank_head: int, fit_epochs: int, n_real: int, m_crops: int, tag: str,
                refine_steps: int = 0, observer: str = "teacher", image_format: str | None = None,
                extra: dict | None = None) -> dict:
    from hellopack.distill import BuildConfig, build

    batch = ctx.plan.fit_batch_size
    fit_lr = ctx.simclr_fit_lr if base_kind == "simclr" else ctx.fit_lr
    fit_settings = {"data": ctx.data_id, "teachers": teacher["key"], "base": base_key, "re": rank_encoder,
                    "rh": rank_head, "fit_epochs": fit_epochs, "fit_lr": fit_lr, "seed": 0,
                    **({"fit_batch": batch} if batch != 128 else {})}  # 128: keys of earlier runs stay valid
    fit_key = key_of(fit_settings)
    settings = {**fit_settings, "ipc": ipc, "n_real": n_real, "m_crops": m_crops, "observer": observer,
                **({"refine_steps": refine_steps, "refine_lr": REFINE_LR} if refine_steps else {}),
                **({"image_format": image_format, "image_quality": CODEC_QUALITY} if image_format else {}),
                **(extra or {})}
    key = key_of(settings)
    kind = f"{base_kind}-refine" if refine_steps else base_kind
    kind += "-projobs" if observer == "projector" else ""
    kind += f"-{image_format}" if image_format else ""
    out = ctx.cache.root / "archives" / f"{tag}-{kind}-ipc{ipc}-{key}.hellopack"

    def run() -> dict:
        out.parent.mkdir(parents=True, exist_ok=True)
        # One work folder per fit: the IPC 10 and IPC 50 builds share the (long) projector fit.
        cfg = BuildConfig(recipe="cifar10", out=str(out), data_dir=str(ctx.data),
                          workdir=str(ctx.cache.root / f"fit-{fit_key}"), ipc=ipc, teachers_dir=teacher["folder"],
                          base=SWEEP_BASES.get(base_kind, ctx.base),
                          pretrained=ctx.clip_tag if base_kind == "given" else None,
                          clip_weights=weights, rank_encoder=rank_encoder, rank_head=rank_head,
                          fit_epochs=fit_epochs, fit_lr=fit_lr, fit_batch_size=batch, n_real=n_real,
                          m_crops=m_crops, refine_steps=refine_steps, refine_lr=REFINE_LR if refine_steps else None,
                          observer=observer, seed=0, device="cpu",
                          # the teachers' logits by batch content: the sweep's fits and fidelity, and every
                          # build's held-out images, see the same batches (changes no archive byte)
                          teacher_cache=str(ctx.cache.root / "teacher-logits"),
                          **({"image_format": image_format, "image_quality": CODEC_QUALITY} if image_format else {}),
                          **(extra or {}))
        t0 = time.perf_counter()
        build(cfg, ctx.reporter)
        return {**archive_facts(out), "build_seconds": round(time.perf_counter() - t0, 1), "settings": settings,
                "fit_key": fit_key, "refine": _refine_record(cfg)}

    rec = ctx.cache.run(f"build-{tag}-{kind}-ipc{ipc}", key, run)
    rec["key"] = key
    return rec


def _refine_record(cfg) -> dict | None:
    """The refine stage's marker (views agreement before/after) from the build's work folder."""
    if not cfg.refine_steps:
        return None
    marker = Path(cfg.workdir) / "refine.done.json"
    return json.loads(marker.read_text())["result"] if marker.is_file() else None


def stage_student(ctx: Ctx, arch: str, ipc: int, row: str, epochs: int, seed: int, archive: dict,
                  teacher: dict, weights: str | None, val_images: int | None = None) -> dict:
    from hellopack.distill.teach import load_trajectory
    from hellopack.train import TrainConfig, train

    settings = {"archive": archive["key"], "arch": arch, "row": row, "epochs": epochs, "seed": seed,
                "teachers": teacher["key"] if row == "teacher" else None,
                **({"val_images": val_images} if val_images else {})}
    key = key_of(settings)
    out = ctx.cache.root / "students" / f"{arch}-ipc{ipc}-{row}-s{seed}-{key}"

    def run() -> dict:
        specs = tuple(load_trajectory(teacher["folder"])) if row == "teacher" else None
        cfg = TrainConfig(archive=archive["path"], arch=arch, out=str(out), val=str(ctx.data), epochs=epochs,
                          labels="teacher" if row == "teacher" else "hard" if row == "hard" else "projector",
                          teacher=specs, clip_weights=weights if row.startswith("projector") else None,
                          seeds=1, seed=seed, eval_every=epochs, eval_batch_size=500, device="cpu", resume=True,
                          val_images=val_images)
        res = train(cfg, ctx.reporter)
        return {"top1": res["top1"], "top5": res["top5"], "images_evaluated": res["images_evaluated"],
                "evaluated_on": res["evaluated_on"], "train_seconds": res["timing"]["train_seconds"],
                "recipe": res["recipe"], "settings": settings}

    rec = ctx.cache.run(f"student-{arch}-ipc{ipc}-{row}-s{seed}", key, run)
    log(f"    {STUDENT_TITLES.get(arch, arch)} IPC {ipc} {row} seed {seed}: top-1 {rec['top1']:.2f}%")
    return rec


# ---- the run -------------------------------------------------------------------------------------

def base_of(ctx: Ctx, kind: str) -> tuple[str, str | None, str]:
    """(kind, weights, base key) of a main base: "given" (the --base) or "simclr" (pretrained here)."""
    if kind == "given":
        return ("given", ctx.clip_weights, key_of(base_identity(ctx)))
    simclr = stage_pretrain(ctx)
    return ("simclr", simclr["path"], simclr["key"])


def head_cap(ctx: Ctx) -> int:
    return min(CLASSES, base_identity(ctx)["embed_dim"])


def archive_names(ctx: Ctx) -> list[tuple[str, int]]:
    """The main archives in build order. One base's builds share one work folder (the IPC 10 and 50 builds
    share the long projector fit; the refined archive follows its plain twin), so they run one after another."""
    plan, names = ctx.plan, []
    for kind in ("given", "simclr") if ctx.pretrain else ("given",):
        for ipc in plan.ipcs:
            names.append((kind, ipc))
            if kind == "simclr":
                names.append(("simclr-refine", ipc))
                if any(OBSERVER_ROW in rows and i == ipc for (_, i), (_, _, rows) in plan.students.items()):
                    names.append(("simclr-projobs", ipc))  # the same fit, crops scored by the projector
    return names


def main_archive(ctx: Ctx, name: str, ipc: int) -> dict:
    """One main archive (cached); first the archive before it on the same work folder."""
    order = [n for n in archive_names(ctx) if n[0].split("-")[0] == name.split("-")[0]]
    at = order.index((name, ipc))
    if at:
        main_archive(ctx, *order[at - 1])
    kind, _, variant = name.partition("-")
    _, weights, bkey = base_of(ctx, kind)
    plan = ctx.plan
    return stage_build(ctx, stage_teacher(ctx), kind, weights, bkey, ipc, 8, head_cap(ctx), plan.fit_epochs,
                       plan.n_real, plan.m_crops, "main", refine_steps=plan.refine_steps if variant == "refine" else 0,
                       observer="projector" if variant == "projobs" else "teacher")


def student_jobs(ctx: Ctx) -> list[tuple[str, int, str, int, int]]:
    """(arch, ipc, row, epochs, seeds) of every student row the plan trains."""
    return [(arch, ipc, row, epochs, seeds) for (arch, ipc), (epochs, seeds, rows) in ctx.plan.students.items()
            for row in rows if ctx.pretrain or row not in PRETRAINED_ROWS]


def student_run(ctx: Ctx, arch: str, ipc: int, row: str, epochs: int, seed: int) -> dict:
    kind = ROW_ARCHIVE[row]
    weights = base_of(ctx, kind.split("-")[0])[1]
    return stage_student(ctx, arch, ipc, row, epochs, seed, main_archive(ctx, kind, ipc), stage_teacher(ctx), weights)


def run_all(ctx: Ctx) -> dict:
    from hellopack.archive import label_storage_from_counts

    plan, res = ctx.plan, ctx.out
    teacher = stage_teacher(ctx)
    res["teacher"] = teacher
    for c in teacher["checkpoints"]:
        log(f"    epoch {c['epoch']}: test top-1 {c['val_top1']:.2%}")

    ident = base_identity(ctx)
    cap = head_cap(ctx)
    res["bases"] = {"given": {**ident, "probe": stage_probe_given(ctx, ident)}}
    log(f"    {ident['name']} ({ident['kind']}) linear probe: {res['bases']['given']['probe']['top1']:.2%}")
    bases = [base_of(ctx, "given")]
    if ctx.pretrain:
        simclr = stage_pretrain(ctx)
        res["bases"]["simclr"] = simclr
        log(f"    SimCLR base linear probe: {simclr['probe']['top1']:.2%}, pretraining {simclr['pretrain_seconds']:.0f} s")
        bases.append(base_of(ctx, "simclr"))

    log(f"(b) archives: IPC {', '.join(map(str, plan.ipcs))}; LoRA rank 8 on every conv, head rank {cap}; "
        f"fit {plan.fit_epochs} epoch(s), batch {plan.fit_batch_size}, lr {ctx.fit_lr} (SimCLR base "
        f"{ctx.simclr_fit_lr}); SimCLR base also "
        f"refined {plan.refine_steps} steps on its archive's views")
    archives: dict[tuple[str, int], dict] = {}
    for name, ipc in archive_names(ctx):
        a = archives[(name, ipc)] = main_archive(ctx, name, ipc)
        f = a["fidelity"]
        log(f"    {name} IPC {ipc}: agreement {f['agreement']:.2%}, KL {f['kl']:.3f}, projector top-1 "
            f"{f['projector_top1']:.2%}, payload {a['payload_bytes']:,} B, {a['build_seconds']:.0f} s")
    res["archives"] = [{"base": k, **a} for (k, _), a in archives.items()]

    res["rank_sweep"] = run_sweep(ctx, teacher, bases + sweep_extra(ctx), archives, cap)

    log("(d) students")
    students = []
    jobs = student_jobs(ctx)
    # --reverse-students: a second process sharing the cache takes the student runs from the other end
    for arch, ipc, row, epochs, seeds in (reversed(jobs) if ctx.reverse_students else jobs):
        kind = ROW_ARCHIVE[row]
        archive = archives[(kind, ipc)]
        order = range(seeds - 1, -1, -1) if ctx.reverse_students else range(seeds)
        runs = sorted((student_run(ctx, arch, ipc, row, epochs, s) for s in order),
                      key=lambda r: r["settings"]["seed"])
        top1 = [r["top1"] for r in runs]
        soft = label_storage_from_counts(CLASSES, archive["images"], epochs, archive["payload_bytes"])
        soft300 = label_storage_from_counts(CLASSES, archive["images"], SOFT_LABEL_EPOCHS, archive["payload_bytes"])
        students.append({
            "arch": arch, "ipc": ipc, "labels": row, "archive_base": kind, "epochs": epochs, "seeds": seeds,
            "top1_per_seed": top1, "top1_mean": statistics.fmean(top1),
            "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
            "batch_size": runs[0]["recipe"]["batch_size"], "loss": runs[0]["recipe"]["loss"],
            "protocol": runs[0]["recipe"].get("protocol"),
            "train_seconds": sum(r["train_seconds"] for r in runs),
            "archive_bytes": archive["bytes"], "label_payload_bytes": archive["payload_bytes"],
            "soft_label_bytes": soft.total_bytes, "soft_label_bytes_300_epochs": soft300.total_bytes,
        })
    res["students"] = students
    res["targets"] = targets(students)
    return res


def sweep_extra(ctx: Ctx) -> list[tuple[str, None, str]]:
    """(kind, weights, base key) of the plan's SWEEP_BASES: random init, so the key is the model's fingerprint."""
    return [(kind, None, key_of(base_identity(replace(ctx, base=SWEEP_BASES[kind], clip_tag=None, clip_weights=None))))
            for kind in ctx.plan.sweep_extra_bases]


def sweep_context(ctx: Ctx) -> Ctx:
    """The rank sweep's data: the first sweep_train_shards training shards when the plan says so."""
    plan = ctx.plan
    if plan.sweep_train_shards and plan.train_shards is None:
        view = data_view(ctx.data, plan.sweep_train_shards, ctx.cache.root)
        return replace(ctx, data=view, data_id=data_identity(view))
    return ctx


def sweep_point(ctx: Ctx, teacher: dict, base: tuple[str, str | None, str], re_: int, rh: int, cap: int,
                main: Callable[[], dict] | None) -> dict:
    """One rank point's archive; ``main`` gives the main archive when it is this point (same fit, same data)."""
    plan, sweep_ctx = ctx.plan, sweep_context(ctx)
    kind, weights, bkey = base
    if (re_, rh) == (8, cap) and plan.sweep_fit_epochs == plan.fit_epochs and sweep_ctx is ctx and main:
        return main()
    return stage_build(sweep_ctx, teacher, kind, weights, bkey, 1, re_, rh, plan.sweep_fit_epochs, 1, 1,
                       "rank")


def run_sweep(ctx: Ctx, teacher: dict, bases: list[tuple[str, str | None, str]],
              archives: dict[tuple[str, int], dict], cap: int) -> list[dict]:
    """(e): one fit per (base, rank point); a point equal to a main archive reuses it."""
    plan, res = ctx.plan, ctx.out
    res["rank_sweep_train_images"] = train_images(sweep_context(ctx).data)
    log(f"(e) label fidelity vs rank (fit {plan.sweep_fit_epochs} epoch(s) on {res['rank_sweep_train_images']:,} "
        "training images), on each base")
    sweep = []
    for base in bases:
        kind = base[0]
        # cap: min(classes, embed_dim) of the main base; the encoder ranks this base's layers allow
        for re_, rh in sweep_points_for(plan, cap, encoder_cap(kind, ctx)):
            main = (lambda k=kind: archives[(k, plan.ipcs[0])]) if (kind, plan.ipcs[0]) in archives else None
            a = sweep_point(ctx, teacher, base, re_, rh, cap, main)
            f = a["fidelity"]
            sweep.append({"base": kind, "rank_encoder": re_, "rank_head": a["rank_head"],
                          "lora_parameters": a["lora_parameters"], "payload_bytes": a["payload_bytes"],
                          "fit_epochs": plan.sweep_fit_epochs, **f})
            log(f"    {kind} base, encoder {re_}, head {a['rank_head']}: agreement {f['agreement']:.2%}, "
                f"KL {f['kl']:.3f}, {a['payload_bytes']:,} B")
    return sweep


def run_sweep_only(ctx: Ctx) -> dict:
    """The teachers and the rank sweep on the plan's SWEEP_BASES alone (no main archives, no students)."""
    res = ctx.out
    teacher = stage_teacher(ctx)
    res["teacher"] = teacher
    bases = sweep_extra(ctx)
    res["bases"] = {kind: {"name": SWEEP_BASES[kind], "kind": "random init"} for kind, _, _ in bases}
    res["rank_sweep"] = run_sweep(ctx, teacher, bases, {}, CLASSES)  # both bases embed 64 > 10 classes
    return res


def sweep_markdown(res: dict) -> str:
    """The --sweep-only results: the rank sweep table of (e)."""
    plan, m = res["plan"], res["machine"]
    t = res["teacher"]
    tops = ", ".join(f"{100 * c['val_top1']:.2f} %" for c in t["checkpoints"])
    lines = [f"# CIFAR-10 rank sweep on the tiny ViT ({res['mode']} plan, --sweep-only)", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {m['cpus']} CPU cores, no GPU, torch {m['torch']} with {m['threads']} threads, load average "
             f"{m['load_start']:.1f} at the start and {m['load_end']:.1f} at the end; {res['wall_seconds'] / 60:.1f} "
             "min in all.", "",
             f"Teachers: {t['arch']}, {t['epochs']} epochs on {res['train_images']:,} training images, checkpoints of "
             f"epochs {', '.join(str(c['epoch']) for c in t['checkpoints'])} (test top-1 {tops}).", "",
             f"Fit {plan['sweep_fit_epochs']} epoch(s) on {res['rank_sweep_train_images']:,} training images; "
             "agreement, KL and projector top-1 on the 10,000 test images. LoRA on the patch embedding and on every "
             "block's attention in-projection (`mha_in_proj`), `out_proj`, `mlp.c_fc` and `mlp.c_proj`.", "",
             "| base | encoder rank | head rank | LoRA numbers | label payload (fp16) | agreement | KL | projector top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rank_sweep"]:
        lines.append(f"| {r['base']} | {r['rank_encoder']} | {r['rank_head']} | {r['lora_parameters']:,} | "
                     f"{r['payload_bytes']:,} B | {100 * r['agreement']:.2f} % | {r['kl']:.3f} | "
                     f"{100 * r['projector_top1']:.2f} % |")
    return "\n".join(lines + [""])


def targets(students: list[dict]) -> list[dict]:
    """Issue 5/8 targets at IPC 10 and the published RDED anchors."""
    by = {(s["arch"], s["ipc"], s["labels"]): s["top1_mean"] for s in students}
    out = []
    for arch, title in STUDENT_TITLES.items():
        hard, teacher = by.get((arch, 10, "hard")), by.get((arch, 10, "teacher"))
        for row in ("projector", *PRETRAINED_ROWS):
            p = by.get((arch, 10, row))
            if p is None:
                continue
            if teacher is not None:
                out.append({"what": f"{title} IPC 10: {ROW_TITLES[row]} within 3 points of the teacher row",
                            "value": p - teacher, "need": -3.0, "holds": p - teacher >= -3.0})
            if hard is not None:
                out.append({"what": f"{title} IPC 10: {ROW_TITLES[row]} at least 10 points above hard labels",
                            "value": p - hard, "need": 10.0, "holds": p - hard >= 10.0})
    for (arch, ipc), anchor in ANCHORS.items():
        for row in ("teacher", "projector", *PRETRAINED_ROWS):
            v = by.get((arch, ipc, row))
            if v is not None:
                out.append({"what": f"{STUDENT_TITLES[arch]} IPC {ipc}: {ROW_TITLES[row]} vs RDED's published {anchor}",
                            "value": v - anchor, "need": 0.0, "holds": v >= anchor})
    return out


# ---- reporting -----------------------------------------------------------------------------------

def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:,.2f} {unit}"
    return f"{n:,.0f} B"


def _rded(res: dict) -> bool:
    """Results from runs under RDED's protocol (hellopack 0.2): their students record the protocol."""
    return any(st.get("protocol") == "rded" for st in res["students"])


def _observer_text(res: dict) -> str:
    return "; crops scored by the teachers, `-projobs`: by the projector" if _rded(res) else ""


def _chooser_text(res: dict) -> str:
    return "its teachers" if _rded(res) else "its projector"


def _recipe_text(res: dict) -> str:
    if not _rded(res):
        return ("AdamW lr 1e-3, cosine, MSE to the soft labels + 0.1 CE (hard rows: CE), CutMix, crops of at least "
                "half the image.")
    batches = ", ".join(f"{b} at IPC {i}" for i, b in sorted({(st["ipc"], st["batch_size"]) for st in res["students"]}))
    return ("RDED's evaluation: AdamW lr 1e-3 (RDED's for ConvNets and ResNets), decay 0.01 on weight matrices only, "
            f"the per-epoch half cosine that ends at half the lr, batch {batches}, MSE to the soft labels + 0.1 CE "
            "(hard rows: CE), CutMix, flip, and at factor 1 no crop (RDED's scale (1/factor, 1)).")


def _run_text(r: dict, m: dict) -> str:
    """One invocation: its stages, wall time, and the load average it found (the idleness it ran in)."""
    own = r.get("workers", 1) > 1  # at its end the load average counts its own workers
    end = (f" and {r['load_end']:.1f} at its end{' (its own workers included)' if own else ''}"
           if r.get("load_end") is not None else "")
    busy = r["load_start"] > 0.75 * m["cpus"] or (not own and (r.get("load_end") or 0) > 0.75 * m["cpus"])
    return (f"Run started {r['started']}: {r['stages_run']} stages in {r['wall_seconds'] / 60:.1f} min, load average "
            f"{r['load_start']:.1f} at its start{end}{' (other jobs shared the cores)' if busy else ''}"
            f"{'; ' + r['note'] if r.get('note') else ''}.")


def markdown(res: dict) -> str:
    plan, m = res["plan"], res["machine"]
    simclr_lr = f" (SimCLR base: lr {res['simclr_fit_lr']})" if res["bases"].get("simclr") else ""
    lines = [f"# CIFAR-10 benchmark ({res['mode']} run)", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {m['cpus']} CPU cores ({m['processor'] or m['machine']}), no GPU, torch {m['torch']} with "
             + (f"{m['workers']} worker processes of 1 thread each" if m.get("workers", 1) > 1
                else f"{m['threads']} threads")
             + (f", every stage under {m['autocast']} autocast" if m.get("autocast") == "bf16" else "")
             + f". The stages took {res['stage_seconds'] / 60:.1f} min in total when they ran"
             + (" (summed over the workers, which ran side by side)" if m.get("workers", 1) > 1 else "") + "; the "
             f"estimate for an idle machine is {res['estimate_seconds'] / 60:.0f} min. "
             + " ".join(_run_text(r, m) for r in res["runs"])
             + (f" From scratch: {sum(r['wall_seconds'] for r in res['runs']) / 60:.1f} min of wall time over these "
                f"{len(res['runs'])} invocations." if len(res["runs"]) > 1 else ""),
             "", f"Data: `{res['data']}` ({res['train_images']:,} training images"
             f"{', its first training shard' if plan['train_shards'] else ''}; every accuracy and fidelity below is "
             "on the 10,000 CIFAR-10 test images, which nothing trains on).", ""]
    t = res["teacher"]
    lines += ["## (a) Weak teachers", "",
              f"`hellopack.distill.teach`: {t['arch']}, {t['epochs']} epochs (SGD, cosine, crop + flip), checkpoints of "
              f"epochs {', '.join(str(c['epoch']) for c in t['checkpoints'])} kept; {t['wall_seconds'] / 60:.1f} min.", "",
              "| checkpoint | test top-1 |", "| --- | --- |"]
    lines += [f"| epoch {c['epoch']} | {100 * c['val_top1']:.2f} % |" for c in t["checkpoints"]]
    g = res["bases"]["given"]
    lines += ["", "## Bases", "",
              "| base | what | linear probe (test top-1) | time |", "| --- | --- | --- | --- |",
              f"| {g['name']} | {'weights ' + str(g['weights']) if g['weights'] else 'random init (seeded): no CLIP weights on this machine'}"
              f" | {100 * g['probe']['top1']:.2f} % | - |"]
    s = res["bases"].get("simclr")
    if s:
        lines.append(f"| {s['config']} + SimCLR | `hellopack.pretrain`, {s['epochs']} epochs on the {s['images']:,} "
                     f"training images (no labels, no test images), final loss {s['final_loss']:.3f} | "
                     f"{100 * s['probe']['top1']:.2f} % | {s['pretrain_seconds'] / 60:.1f} min |")
    pr = g["probe"]
    lines += ["", f"Linear probe: {pr['method']}, fitted on {pr['train_images']:,} training images, scored on "
              f"{pr['test_images']:,} test images.", ""]
    lines += ["## (b, c) Archives", "",
              f"`hellopack.distill.build` with the teachers above (target: mean of their logits), LoRA rank 8 on every conv "
              f"and a full-rank head, fit {plan['fit_epochs']} epoch(s) at batch {plan.get('fit_batch_size', 128)} and "
              f"lr {res['fit_lr']}{simclr_lr}, RDED selection "
              f"({plan['n_real']} real images x {plan['m_crops']} crops per class{_observer_text(res)}), factor 1 "
              "(no image update at 32 px). "
              "Fidelity on the test images. The IPC-10 build includes the projector fit; the IPC-50 build reuses it. "
              f"`simclr-refine`: the SimCLR archive with `--refine-steps {plan.get('refine_steps', 0)}` and `--refine-lr "
              f"{res.get('refine_lr')}` (the LoRA trained on the archive's own images under the student's augmentation, "
              "batches of at most 100; same images); 'views' is the agreement on unseen augmented views of the archive "
              "images before and after (undone: the build restored the fitted factors).", "",
              "| base | IPC | archive | images | label payload | LoRA numbers | agreement | KL | projector top-1 | teachers' top-1 | views | build time |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in res["archives"]:
        f, r = a["fidelity"], a.get("refine")
        views = "-"
        if r:
            after = ("loss not finite" if r["views_agreement_after"] is None
                     else f"{100 * r['views_agreement_after']:.1f} %")
            views = (f"{100 * r['views_agreement_before']:.1f} % → {after}"
                     + (" (undone)" if r.get("kept") == "fit" else ""))
        lines.append(f"| {a['base']} | {a['ipc']} | {size(a['bytes'])} | {size(a['images_bytes'])} | {a['payload_bytes']:,} B "
                     f"| {a['lora_parameters']:,} | {100 * f['agreement']:.2f} % | {f['kl']:.3f} | "
                     f"{100 * f['projector_top1']:.2f} % | {100 * f['teacher_top1']:.2f} % | {views} | "
                     f"{a['build_seconds'] / 60:.1f} min |")
    lines += ["", "## (d, f) Students", "",
              "`hellopack.train.train`, final-epoch top-1 on the test images (mean ± sample std over seeds). Recipe from "
              f"the archive: {_recipe_text(res)} Hard and teacher rows train on the random-init base's archive; each "
              f"projector row on its own archive ({_chooser_text(res)} chose the images). Soft labels the teacher row "
              "would store: epochs x images x 10 classes x 2 B + 41 B of augmentation record per view.", "",
              "| student | IPC | labels | epochs | seeds | top-1 % | archive | label payload | soft labels (these epochs) | soft labels (300 epochs) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for st in res["students"]:
        acc = f"{st['top1_mean']:.2f}" + (f" ± {st['top1_std']:.2f}" if st["top1_std"] is not None else "")
        payload = "0 (hard labels)" if st["labels"] == "hard" else (
            "- (needs the stored labels)" if st["labels"] == "teacher" else f"{st['label_payload_bytes']:,} B")
        lines.append(f"| {STUDENT_TITLES.get(st['arch'], st['arch'])} | {st['ipc']} | {ROW_TITLES[st['labels']]} | "
                     f"{st['epochs']} | {st['seeds']} | {acc} | {size(st['archive_bytes'])} | {payload} | "
                     f"{size(st['soft_label_bytes'])} | {size(st['soft_label_bytes_300_epochs'])} |")
    swept = sorted({r.get("base", "given") for r in res["rank_sweep"]}, key=["given", "simclr", "tiny-vit"].index)
    lines += ["", "## (e) Label fidelity vs LoRA rank", "",
              f"{' and '.join(BASE_TITLES[b] for b in swept)}, same teachers, fit {plan['sweep_fit_epochs']} "
              f"epoch(s) on {res.get('rank_sweep_train_images', res['train_images']):,} training images; ranks above "
              "min(classes, embed_dim) are capped (a 10-class head has rank at most 10).", "",
              "| base | encoder rank | head rank | LoRA numbers | label payload (fp16) | agreement | KL | projector top-1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rank_sweep"]:
        lines.append(f"| {r.get('base', 'given')} | {r['rank_encoder']} | {r['rank_head']} | {r['lora_parameters']:,} | "
                     f"{r['payload_bytes']:,} B | {100 * r['agreement']:.2f} % | {r['kl']:.3f} | "
                     f"{100 * r['projector_top1']:.2f} % |")
    lines += ["", "## Targets", ""]
    for tg in res["targets"]:
        verdict = "holds" if tg["holds"] else f"MISSED by {abs(tg['value'] - tg['need']):.1f} points"
        lines.append(f"- {tg['what']}: {tg['value']:+.1f} points, {verdict}")
    lines += ["", "## Notes", "", *fidelity_notes(res), *res["notes"], ""]
    return "\n".join(lines)


def fidelity_notes(res: dict) -> list[str]:
    """What limits the projector rows, from this run's numbers."""
    out = []
    for base in ("given", "simclr"):
        a = next((a for a in res["archives"] if a["base"] == base), None)
        if a is None:
            continue
        f = a["fidelity"]
        probe = res["bases"][base]["probe"]["top1"]
        lr = res["simclr_fit_lr"] if base == "simclr" else res["fit_lr"]
        out.append(f"- {ROW_TITLES['projector' if base == 'given' else 'projector-simclr']}: the projector agrees with "
                   f"its teachers on {100 * f['agreement']:.1f} % of the test images (teachers' top-1 "
                   f"{100 * f['teacher_top1']:.1f} %, projector's {100 * f['projector_top1']:.1f} %) after "
                   f"{res['plan']['fit_epochs']} fit epoch(s) at lr {lr}; the base's linear probe is "
                   f"{100 * probe:.1f} %. Students trained on its labels cannot learn more than those labels hold: "
                   "this fidelity, not the student recipe, is what the projector rows' gap to the teacher row measures.")
    plain = {a["ipc"]: a for a in res["archives"] if a["base"] == "simclr"}
    for a in res["archives"]:
        r = a.get("refine")
        if a["base"] != "simclr-refine" or not r or a["ipc"] not in plain:
            continue
        head = f"- {ROW_TITLES['projector-refine']}, IPC {a['ipc']}: "
        moved = (head + f"the refine's loss stopped being finite after {r['steps']} steps"
                 if r["views_agreement_after"] is None else
                 head + f"{r['steps']} refine steps moved the projector's agreement with the teachers on unseen "
                 f"augmented views of the archive images from {100 * r['views_agreement_before']:.1f} % to "
                 f"{100 * r['views_agreement_after']:.1f} %")
        if r.get("kept") == "fit":
            out.append(f"{moved}, so the build undid the refine: this archive holds the fitted factors and its labels "
                       "are the SimCLR archive's.")
            continue
        out.append(f"{moved}, and on the test images from {100 * plain[a['ipc']]['fidelity']['agreement']:.1f} % to "
                   f"{100 * a['fidelity']['agreement']:.1f} %. The student only ever sees the first kind of image."
                   + (" This run predates the build's undo of a refine that lowers the views agreement: a build "
                      "now keeps the fitted projector here, and this row would equal the SimCLR row."
                      if "kept" not in r and r["views_agreement_after"] < r["views_agreement_before"] else ""))
    return out


NOTES = [
    "- Epochs are cut to fit about 2.5 h of CPU (the heavy-label protocol trains 300+ epochs on a GPU), so every "
    "student here is under-trained compared with the published anchors; the rows are comparable with each other "
    "(same images seen, same recipe), not with the papers.",
    "- The random-init base is a tiny open_clip ModifiedResNet with no prior: its projector can only learn what "
    "its LoRA factors capture from the teachers. The SimCLR row shows what a prior learned from the unlabeled "
    "training images adds. With real CLIP weights pass --clip-weights FILE (--base RN50 --clip-tag openai).",
    "- Published anchors come from RDED's full protocol (fully trained teachers, 300+ epochs); misses against "
    "them are expected on this budget and are stated, not hidden.",
]


def machine(threads: int) -> dict:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="about 25 minutes: first training shard, fewer epochs, 1 seed, fewer rows")
    ap.add_argument("--estimate", action="store_true", help="print the plan and the time estimate, run nothing")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the results .md from the results .json of this mode, run nothing")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 shards [../shared/data/cifar10]")
    ap.add_argument("--base", default="hellopack-tiny-rn", help="open_clip model name of the base")
    ap.add_argument("--clip-weights", default=None, help="weights file for --base (default: random init)")
    ap.add_argument("--clip-tag", default=None, help="open_clip pretrained tag the weights file holds, e.g. openai")
    ap.add_argument("--fit-lr", type=float, default=None, help="projector fit lr [0.01 random init, 1e-3 with weights]")
    ap.add_argument("--simclr-fit-lr", type=float, default=0.003,
                    help="projector fit lr on the SimCLR base [0.003; 0.01 was unstable over a 50k-image fit]")
    ap.add_argument("--reverse-students", action="store_true",
                    help="run the student stages last-first (a second process on the same cache shares the work)")
    ap.add_argument("--no-pretrain", action="store_true", help="skip the SimCLR base and its rows")
    ap.add_argument("--sweep-only", action="store_true",
                    help="only the teachers and the rank sweep on the tiny ViT base (results: *-sweep-vit.*)")
    ap.add_argument("--seeds", type=int, default=None, help="override the seeds of every student row")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the process that runs the plan [the usable CPUs; 1 per worker]")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes sharing the stages, one torch thread each (benchmarks/cifar10_workers.py) "
                         "[the usable CPUs; 1: one process]")
    ap.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--autocast", default="bf16", choices=("auto", "bf16", "off"),
                    help="hellopack --autocast for every stage [bf16: this CPU's bf16 instructions, as a GPU run]")
    ap.add_argument("--codecs", action="store_true",
                    help="only the image-codec rows: one IPC-10 archive content stored as each encoding, ConvNet-3 "
                         "students on each (results: cifar10-codecs.{json,md}; see benchmarks/cifar10_codecs.py)")
    ap.add_argument("--codec-epochs", type=int, default=50, help="--codecs: student epochs [50, the quick plan's]")
    ap.add_argument("--codec-fit-epochs", type=int, default=1, help="--codecs: projector fit epochs [1]")
    ap.add_argument("--codec-teach-epochs", type=int, default=2, help="--codecs: teacher epochs [2]")
    ap.add_argument("--codec-fit-images", type=int, default=None, help="--codecs: fit on the first N images [all]")
    ap.add_argument("--codec-val-images", type=int, default=None,
                    help="--codecs: fidelity and student top-1 on the first N test images [all 10,000]")
    ap.add_argument("--codec-labels", default="projector", choices=("hard", "projector"),
                    help="--codecs: the students' labels [projector]")
    ap.add_argument("--codec-n-real", type=int, default=300, help="--codecs: real images scored per class [300]")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    if args.codecs:
        sys.path.insert(0, str(HERE))
        from cifar10_codecs import run_codecs

        return run_codecs(args, sys.modules[__name__])
    plan = QUICK if args.quick else FULL
    stem = "cifar10" if plan.mode == "full" else "cifar10-quick"
    if args.render:
        res = json.loads((args.results / f"{stem}.json").read_text())
        (args.results / f"{stem}.md").write_text(markdown(res))
        print(f"wrote {args.results / f'{stem}.md'} from {stem}.json")
        return 0
    if args.seeds is not None:
        plan = replace(plan, students={k: (e, args.seeds, r) for k, (e, _, r) in plan.students.items()})
    pretrain = not args.no_pretrain
    fit_lr = args.fit_lr if args.fit_lr is not None else (1e-3 if args.clip_weights else 0.01)
    workers = 1 if args.sweep_only or args.worker_id else (args.workers or usable_cpus())
    if args.threads is None:
        args.threads = 1 if args.worker_id else usable_cpus()
    torch.set_num_threads(args.threads)
    if args.worker_id:
        global LOG_PREFIX
        LOG_PREFIX = f"w{args.worker_id} "

    est = estimate(plan, args.base, pretrain)
    if args.sweep_only:
        est = sweep_only_estimate(plan, est)
        stem += "-sweep-vit"
    if workers > 1:  # COST_MS is one thread's; N single-thread workers share the stages
        est = {k: v * SPEEDUP / workers for k, v in est.items()}
    if args.autocast == "bf16":
        est = {k: v * BF16_FACTOR for k, v in est.items()}
    total = sum(est.values())
    how = (f"{workers} workers x 1 torch thread" if workers > 1 else f"{args.threads} torch threads") + \
        (", bf16 autocast" if args.autocast == "bf16" else "")
    print(f"CIFAR-10 benchmark, {plan.mode} run. Estimated time on an idle {os.cpu_count()}-core CPU "
          f"({how}): {total / 60:.0f} min from scratch (finished stages are cached and skipped)")
    for k, v in est.items():
        print(f"  {k:<11} {v / 60:6.1f} min")
    print(f"Plan: teachers {plan.teacher_arch} x {plan.teach_epochs} epochs (keep every {plan.keep_every}); "
          f"SimCLR {plan.pretrain_epochs if pretrain else 0} epochs; fit {plan.fit_epochs} epoch(s) at lr {fit_lr}; "
          f"IPC {', '.join(map(str, plan.ipcs))}; rank sweep encoder {plan.encoder_ranks}, head {plan.head_ranks}")
    for (arch, ipc), (epochs, seeds, rows) in plan.students.items():
        print(f"  students {arch} IPC {ipc}: {epochs} epochs x {seeds} seed(s): {', '.join(rows)}")
    sys.stdout.flush()
    if args.estimate:
        return 0

    why = find_data(args.data)
    if why is not None:
        print(f"skipped: {why}; pass --data DIR (WebDataset shards train-*.tar, test-*.tar)")
        return 0

    os.environ[AUTOCAST_ENV] = args.autocast  # every stage, and the workers, read it (hellopack.precision)
    t0, wall_start = time.perf_counter(), time.time()
    started = time.strftime("%Y-%m-%d %H:%M")
    load_start = os.getloadavg()[0]
    root = args.cache / plan.mode if plan.mode == "quick" else args.cache
    # bf16 stages are other numbers than fp32 ones (the stage keys do not name the precision): their own cache
    cache = Cache(root / "bf16" if args.autocast == "bf16" else root, wait=not args.worker_id)
    data = data_view(args.data.resolve(), plan.train_shards, cache.root)
    ctx = Ctx(plan=plan, data=data, data_id=data_identity(data), cache=cache, reporter=LogReporter(),
              base=args.base, clip_weights=args.clip_weights, clip_tag=args.clip_tag, fit_lr=fit_lr, pretrain=pretrain,
              simclr_fit_lr=args.simclr_fit_lr, reverse_students=args.reverse_students)
    res = ctx.out
    res.update({"mode": plan.mode, "command": " ".join(["python benchmarks/cifar10.py",
                                                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
                "data": str(args.data), "train_images": train_images(data),
                "fit_lr": fit_lr, "simclr_fit_lr": args.simclr_fit_lr, "refine_lr": REFINE_LR, "plan": {**asdict(plan), "students": [
                    {"arch": a, "ipc": i, "epochs": e, "seeds": s, "rows": list(r)}
                    for (a, i), (e, s, r) in plan.students.items()]},
                "estimate_seconds": round(total), "estimate_by_stage": {k: round(v) for k, v in est.items()}})
    sys.path.insert(0, str(HERE))
    if args.worker_id:  # a worker computes stages; the parent gathers the results
        from cifar10_workers import work

        work(sys.modules[__name__], ctx)
        return 0
    if workers > 1:
        from cifar10_workers import spawn

        sweep_context(ctx)  # make the sweep's data folder before two processes would race to make it
        spawn(sys.argv[1:] if argv is None else argv, workers)
        log(f"workers done after {(time.perf_counter() - t0) / 60:.1f} min; gathering the results")
    run_sweep_only(ctx) if args.sweep_only else run_all(ctx)
    ran = sum(1 for p in (cache.root / "records").glob("*.json") if p.stat().st_mtime >= wall_start)
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    res["stage_seconds"] = round(sum(cache.seconds.values()), 1)
    res["machine"] = {**machine(args.threads), "workers": workers, "autocast": args.autocast, "load_start": load_start,
                      "load_end": os.getloadavg()[0]}
    this = {"started": started, "wall_seconds": res["wall_seconds"], "stages_run": ran, "workers": workers,
            "load_start": load_start, "load_end": res["machine"]["load_end"]}
    res["runs"] = cache.runs(this if ran else None)
    res["notes"] = NOTES
    args.results.mkdir(parents=True, exist_ok=True)
    res = relative_paths(res)
    text = sweep_markdown(res) if args.sweep_only else markdown(res)
    (args.results / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (args.results / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
