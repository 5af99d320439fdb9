"""`hellopack train`'s step time over a bare PyTorch loop doing the same work (issue 18 item 3).

    python benchmarks/train_overhead.py [--repeats 5] [--warmup 4] [--steps 16] [--threads N]
                                        [--out benchmarks/results/train_overhead.md]

The archive: 10 classes x 10 random-noise images of 32 px (written with ArchiveWriter, WebP
as build writes them), the demo's tiny random-init base `hellopack-tiny-rn32` with its LoRA
(encoder rank 2, head rank 4, small random values) and the recipe `build` writes for it
(BuildConfig.train_recipe: batch 50, AdamW, CutMix, MSE + 0.1 CE, crop scale (1, 1)).
Student: ConvNet-3 (`convnet`) at 32 px, CPU.

hellopack: `hellopack.train.train(TrainConfig(archive, arch="convnet", max_steps=W+N, ...))`; a
reporter records the time of each step's progress event, and the step time is the time
from step W's event to step W+N's, divided by N: the optimizer steps and everything `train`
does between them (the per-epoch checkpoint, its progress and bookkeeping), but not the
loading before or the final evaluation after.

Bare loop (`bare_loop` below, written plainly): the same images decoded once, the same
student, AdamW, Augmenter (hellopack.train.augment: crop, flip, CutMix, one generator per
step), merged projector labeler and loss, no checkpoints:
    for x, y in batches: views = aug(x); with no_grad: t = labeler(views); loss = ...; backward; step

Each repeat runs both, alternating which goes first, so machine noise hits both; the
headline is the median over repeats of the per-repeat wall-time ratio (target: at most 1.10);
the ratio of process CPU time per step is shown beside it (it does not count time spent
waiting for a core another job holds). The process starts as the CLI does
(hellopack.threads.prepare_process: passive OpenMP wait, the usable CPUs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hellopack.threads import prepare_process  # noqa: E402

prepare_process()  # as the CLI's entry does, before torch loads: passive OpenMP wait, usable CPUs

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hellopack.progress import Reporter, Stage  # noqa: E402

TARGET = 1.10
BASE = "hellopack-tiny-rn32"
CLASSES, IPC, SIZE = 10, 10, 32


def make_archive(path: Path) -> Path:
    """A tiny archive shaped like `build`'s at 32 px: noise images, fitted-looking LoRA, build's recipe."""
    from hellopack.archive import ArchiveWriter, canonical_json, encode_lora
    from hellopack.archive.images import Codec
    from hellopack.distill.config import BuildConfig
    from hellopack.models.base import load_base
    from hellopack.models.projector import Projector

    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(CLASSES)]
    templates = ["a photo of a {}."]
    base = load_base(BASE, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        proj = Projector(base, names, templates, rank_encoder=2, rank_head=4)
        with torch.no_grad():
            for m in proj.lora_modules().values():
                m.lora_B.normal_(0, 0.02)
    recipe = BuildConfig(recipe="synthetic", out=str(path)).train_recipe(1, SIZE, CLASSES, CLASSES * IPC)
    manifest = {
        "dataset": {"name": "overhead-synthetic", "recipe": "synthetic", "source": "benchmark",
                    "train_images": CLASSES * IPC},
        "classes": [{"index": i, "name": n, "source_id": n} for i, n in enumerate(names)],
        "images": {"count": CLASSES * IPC, "ipc": IPC, "factor": 1, "size": SIZE, "format": "webp",
                   "encoding": "webp", "quality": 90, "encoder": "benchmark",
                   "mean": [0.49] * 3, "std": [0.21] * 3},
        "base": {"kind": "open_clip", "name": BASE, "pretrained": None, "custom": False,
                 "fingerprint": base.fingerprint, "bytes": None, "image_size": base.image_size},
        "lora": proj.lora_layout("fp16").to_manifest(),
        "head": {"init": "text", "logit_scale": base.logit_scale, "embed_dim": base.embed_dim},
        "recipe": recipe,
        "seeds": {"build": 0},
    }
    codec = Codec("webp", 90)
    w = ArchiveWriter(manifest, "0.0.benchmark")
    w.add_member("lora.safetensors", encode_lora({k: v.numpy() for k, v in proj.lora_state_dict().items()}, "fp16"))
    w.add_member("prompts.json", canonical_json({"classnames": names, "templates": templates}))
    for i in range(CLASSES * IPC):
        w.add_image(f"c{i % CLASSES:04d}_{i:05d}", i % CLASSES, codec.encode(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
                    ext="webp")
    with w:
        return w.write(path)


class StepClock(Reporter):
    """Records the time of every progress event of the "train" stage (one per optimizer step)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []  # (wall, process CPU) after each step

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        clock = self

        class _S(Stage):
            def advance(self, n: int = 1, **metrics: object) -> None:
                if name == "train":
                    clock.times.append((time.perf_counter(), time.process_time()))

        return _S()


def hellopack_steps(archive: Path, work: Path, warmup: int, steps: int, seed: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of `hellopack train`, steps warmup+1 .. warmup+steps."""
    from hellopack.train import TrainConfig, train

    clock = StepClock()
    out = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    train(TrainConfig(archive=str(archive), arch="convnet", out=str(out), device="cpu", seed=seed,
                      epochs=1000, eval_every=1000, max_steps=warmup + steps), clock)
    t = clock.times
    return tuple((t[warmup + steps - 1][k] - t[warmup - 1][k]) / steps for k in (0, 1))  # type: ignore[return-value]


def bare_loop(archive: Path, warmup: int, steps: int, seed: int) -> tuple[float, float]:
    """The same work written plainly; wall and CPU seconds per step after ``warmup`` steps."""
    from hellopack.archive import open_archive
    from hellopack.models.students import build_student
    from hellopack.train.augment import AugmentConfig, Augmenter, step_generator
    from hellopack.train.labelers import projector_from_archive
    from hellopack.train.losses import student_loss

    a = open_archive(archive)
    r = a.manifest["recipe"]
    pairs = list(a.decoded_images())
    images = torch.from_numpy(np.stack([arr for _, arr in pairs])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([rec.cls for rec, _ in pairs])
    labeler = projector_from_archive(a)
    torch.manual_seed(seed)
    student = build_student("convnet", CLASSES, SIZE, a.manifest["images"]["mean"], a.manifest["images"]["std"])
    opt = torch.optim.AdamW(student.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    aug = Augmenter(AugmentConfig(size=SIZE, num_classes=CLASSES, crop_scale=tuple(r["crop_scale"]), factor=1,
                                  patch_shuffle=False, mix=r["mix"], mix_alpha=r["mix_alpha"]))
    bs = r["batch_size"]

    def batches():
        step = 0
        while True:
            perm = torch.randperm(len(images))
            for i in range(len(images) // bs):
                idx = perm[i * bs:(i + 1) * bs]
                yield step, images[idx], labels[idx]
                step += 1

    t0 = c0 = 0.0
    for step, x, y in batches():
        if step == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        if step == warmup + steps:
            return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
        views, hard = aug(x, y, step_generator(seed, step))
        with torch.no_grad():
            t = labeler(views)
        loss = student_loss(student(views), t, hard, loss=r["loss"], beta=r["beta"], temperature=r["temperature"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    raise AssertionError("unreachable")


def render(meta: dict, rows: list[dict]) -> str:
    ratios = [r["ratio"] for r in rows]
    med = statistics.median(ratios)
    lines = [
        "# `hellopack train` step time over a bare PyTorch loop (issue 18 item 3)",
        "",
        f"Command: `{meta['command']}`, {meta['date']}, commit {meta['commit']}, torch {meta['torch']} with "
        f"{meta['threads']} threads on {meta['cpus']} CPUs, Python {meta['python']}.",
        "",
        f"Archive: {CLASSES} classes x {IPC} images of {SIZE} px, base {BASE}, the recipe build writes "
        f"(batch {meta['batch']}, {meta['mix']}, loss {meta['loss']}); student ConvNet-3, CPU. "
        f"{meta['warmup']} warm-up steps, then {meta['steps']} timed steps, per run; the two runs of a repeat "
        "alternate which goes first. `hellopack train`'s time includes what it does between steps "
        "(the checkpoint after every epoch: 2 steps per epoch here).",
        "",
        "| repeat | hellopack train wall s/step | bare loop wall s/step | wall ratio | hellopack CPU s/step "
        "| bare CPU s/step | CPU ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {r['hellopack'][0]:.3f} | {r['bare'][0]:.3f} | {r['ratio']:.3f} | {r['hellopack'][1]:.3f} "
              f"| {r['bare'][1]:.3f} | {r['cpu_ratio']:.3f} |" for i, r in enumerate(rows)]
    lines += [
        "",
        f"Result: median wall-time ratio {med:.3f} (target <= {TARGET}: {'met' if med <= TARGET else 'NOT met'}); "
        f"median CPU-time ratio {statistics.median(r['cpu_ratio'] for r in rows):.3f}.",
        "",
        f"The machine was shared with other jobs: load average (1 min) {meta['load_start']:.2f} at the start, "
        f"{meta['load_end']:.2f} at the end.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_overhead.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hp-overhead-") as tmp:
        work = Path(tmp)
        archive = make_archive(work / "tiny.hellopack")
        for rep in range(args.repeats):
            order = ("hellopack", "bare") if rep % 2 == 0 else ("bare", "hellopack")
            got = {}
            for name in order:
                fn = hellopack_steps if name == "hellopack" else None
                got[name] = (fn(archive, work, args.warmup, args.steps, rep) if fn else
                             bare_loop(archive, args.warmup, args.steps, rep))
            row = {**got, "ratio": got["hellopack"][0] / got["bare"][0], "cpu_ratio": got["hellopack"][1] / got["bare"][1]}
            rows.append(row)
            print(f"repeat {rep + 1}: hellopack {row['hellopack'][0]:.3f} s/step, bare {row['bare'][0]:.3f} s/step, "
                  f"ratio {row['ratio']:.3f} (CPU time: {row['cpu_ratio']:.3f})", flush=True)
        from hellopack.archive import open_archive

        recipe = open_archive(archive).manifest["recipe"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    cmd = "python benchmarks/train_overhead.py" + "".join(
        f" --{k} {v}" for k, v in (("repeats", args.repeats), ("warmup", args.warmup), ("steps", args.steps),
                                   ("threads", args.threads)) if v is not None and v != ap.get_default(k))
    meta = {"command": cmd, "date": dt.date.today().isoformat(), "commit": commit or "unknown",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "warmup": args.warmup, "steps": args.steps,
            "batch": recipe["batch_size"], "mix": recipe["mix"], "loss": recipe["loss"],
            "load_start": load_start, "load_end": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(meta, rows), encoding="utf-8")
    print(f"median ratio {statistics.median(r['ratio'] for r in rows):.3f} (target <= {TARGET}); wrote {args.out}")


if __name__ == "__main__":
    main()
