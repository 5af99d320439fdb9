"""Stored soft labels at the projector's bytes: CIFAR-10 IPC 10, the equal-bytes comparison (issue 17).

    python benchmarks/label_budget.py                 # one process
    python benchmarks/label_budget.py --reverse &     # optional second process: takes the jobs from the other end
    python benchmarks/label_budget.py --render        # rewrite the .md from the .json

The archive, its teachers and its SimCLR base are the quick plan's (benchmarks/cifar10.py --quick: first
training shard, its cache under benchmarks/.cache/cifar10/quick; built here when missing). For budgets of
1x, 10x and 100x the archive's label payload, `hellopack labels record` stores the teachers' labels of the
exact views `train` draws (FKD's top-K fp16 per view, LPLD's random pruning of the rest); for each top-K
the kept fraction is the largest whose file fits the budget (exact bytes, hellopack.labels.record.plan).
ConvNet-3 tries every top-K at 1x and the best (mean over seeds) is what ResNet-18 gets. Every label
source is also trained on a random real subset of the same size (redrawn per seed, labels recorded for it
the same way), and ConvNet-3 / ResNet-18 on the 10,000 real training images with hard labels give
acc(real) for DD-Ranking's HLR; LRS per label source (hellopack.rank.scores, DD-Ranking 0.2.0's formula).
Results: benchmarks/results/label-budget.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cifar10 as C  # noqa: E402  (the quick plan's stages and cache)

STUDENTS = {"convnet": 50, "resnet18_cifar": 20}  # student -> epochs
REAL_EPOCHS = {"convnet": 5, "resnet18_cifar": 2}  # on the 10,000 training images, hard labels, seed 0
SEEDS = (0, 1, 2)
BUDGETS = (1, 10, 100)
TOP_KS = (1, 3, 10)
VAL_IMAGES = 2000


@dataclass(frozen=True)
class Job:
    arch: str
    images: str  # archive | random | full
    labels: str  # hard | projector | teacher | stored
    seed: int
    top_k: int = 0
    keep: float = 1.0

    @property
    def name(self) -> str:
        lab = f"stored-k{self.top_k}-keep{self.keep:.4f}" if self.labels == "stored" else self.labels
        return f"{self.arch}-{self.images}-{lab}-s{self.seed}"


def setup(threads: int):
    torch.set_num_threads(threads)
    plan = C.QUICK
    cache = C.Cache(C.CACHE / "quick")
    data = C.data_view(C.DEFAULT_DATA.resolve(), plan.train_shards, cache.root)
    ctx = C.Ctx(plan=plan, data=data, data_id=C.data_identity(data), cache=cache, reporter=C.LogReporter(),
                base="hellopack-tiny-rn", clip_weights=None, clip_tag=None, fit_lr=0.01, pretrain=True)
    teacher = C.stage_teacher(ctx)
    simclr = C.stage_pretrain(ctx)
    cap = min(C.CLASSES, C.base_identity(ctx)["embed_dim"])
    archive = C.stage_build(ctx, teacher, "simclr", simclr["path"], simclr["key"], 10, 8, cap, plan.fit_epochs,
                            plan.n_real, plan.m_crops, "main", refine_steps=plan.refine_steps)
    return ctx, teacher, simclr, archive


def train_config(ctx, teacher: dict, simclr: dict, archive: dict, job: Job, out: Path, labels_file: str | None = None):
    from hellopack.distill.teach import load_trajectory
    from hellopack.train import TrainConfig

    real = {"images": job.images, "data_dir": str(ctx.data), "data_recipe": "cifar10"} if job.images != "archive" else {}
    labels = {"hard": "hard", "projector": "projector", "teacher": "teacher"}.get(job.labels, f"stored:{labels_file}")
    epochs = REAL_EPOCHS[job.arch] if job.images == "full" else STUDENTS[job.arch]
    return TrainConfig(archive=archive["path"], arch=job.arch, out=str(out), val=str(ctx.data), epochs=epochs,
                       labels=labels, teacher=tuple(load_trajectory(teacher["folder"])) if job.labels == "teacher" else None,
                       clip_weights=simclr["path"] if job.labels == "projector" else None, seeds=1, seed=job.seed,
                       eval_every=epochs, eval_batch_size=500, device="cpu", resume=True, val_images=VAL_IMAGES, **real)


def record_config(ctx, teacher: dict, archive: dict, arch: str, images: str, seed: int, top_k: int, keep: float,
                  out: Path):
    from hellopack.labels.record import RecordConfig

    job = Job(arch, images, "teacher", seed)
    return RecordConfig(train_config(ctx, teacher, {}, archive, job, out.with_suffix(".run")), top_k=top_k,
                        out=str(out), keep=keep)


def fit_keep(ctx, teacher: dict, archive: dict, arch: str, top_k: int, budget: int) -> tuple[float, int] | None:
    """The largest kept fraction (whole steps) whose file fits ``budget`` bytes, and its bytes; None: none fits."""
    from hellopack.archive import open_archive
    from hellopack.labels import format as fmt
    from hellopack.labels.record import plan

    manifest = open_archive(archive["path"]).manifest

    def size(steps_kept: int, total: int) -> int:
        rc = record_config(ctx, teacher, archive, arch, "archive", 0, top_k, steps_kept / total, Path("/dev/null"))
        return fmt.file_bytes(plan(rc, manifest, rc.train.resolve(manifest))[0])

    rc = record_config(ctx, teacher, archive, arch, "archive", 0, top_k, 1.0, Path("/dev/null"))
    total = plan(rc, manifest, rc.train.resolve(manifest))[0]["steps_total"]
    lo, hi = 0, total  # largest s with size(s) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid, total) <= budget else (lo, mid - 1)
    return (lo / total, size(lo, total)) if lo else None


def run_job(ctx, teacher: dict, simclr: dict, archive: dict, job: Job) -> dict:
    from hellopack.labels.record import record
    from hellopack.train import train

    key = C.key_of({"archive": archive["key"], "job": job.name, "epochs": STUDENTS[job.arch], "val": VAL_IMAGES,
                    "real_epochs": REAL_EPOCHS[job.arch] if job.images == "full" else None})
    root = ctx.cache.root / "label-budget"

    def run() -> dict:
        labels_file, file_bytes = None, None
        if job.labels == "stored":
            labels_file = root / f"{job.name}-{key}.hplabels"
            rec = record(record_config(ctx, teacher, archive, job.arch, job.images, job.seed, job.top_k, job.keep,
                                       labels_file), ctx.reporter)
            file_bytes = rec["file_bytes"]
            assert file_bytes == labels_file.stat().st_size
        res = train(train_config(ctx, teacher, simclr, archive, job, root / f"{job.name}-{key}", str(labels_file)),
                    ctx.reporter)
        return {"top1": res["top1"], "job": job.__dict__, "stored_bytes": file_bytes,
                "train_seconds": res["timing"]["train_seconds"]}

    rec = ctx.cache.run(f"budget-{job.name}", key, run)
    C.log(f"    {job.name}: top-1 {rec['top1']:.2f} %")
    return rec


def budget_configs(ctx, teacher: dict, archive: dict, arch: str) -> dict[int, list[tuple[int, float, int]]]:
    """Budget multiple -> the (top_k, keep, bytes) candidates: the whole label set alone when it fits."""
    payload = archive["payload_bytes"]
    out: dict[int, list[tuple[int, float, int]]] = {}
    for m in BUDGETS:
        full = fit_keep(ctx, teacher, archive, arch, C.CLASSES, m * payload)
        if full is not None and full[0] == 1.0:
            out[m] = [(C.CLASSES, 1.0, full[1])]
            continue
        out[m] = [(k, *fk) for k in TOP_KS if (fk := fit_keep(ctx, teacher, archive, arch, k, m * payload))]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_all(ctx, teacher: dict, simclr: dict, archive: dict, reverse: bool) -> dict:
    from hellopack.rank.scores import RunAccuracies, summarize

    order = (lambda xs: list(reversed(xs))) if reverse else list
    configs = {arch: budget_configs(ctx, teacher, archive, arch) for arch in STUDENTS}
    first = [Job(a, "full", "hard", 0) for a in STUDENTS]
    first += [Job(a, i, lab, s) for a in STUDENTS for s in SEEDS for i, lab in
              (("archive", "hard"), ("archive", "projector"), ("archive", "teacher"), ("random", "projector"),
               ("random", "teacher"))]
    # ConvNet-3 tries every candidate of a budget the whole label set does not fit; every budget's only
    # candidate (the whole label set) runs for both students
    for a in STUDENTS:
        for m, cands in configs[a].items():
            if len(cands) == 1 or a == "convnet":
                first += [Job(a, "archive", "stored", s, k, keep) for k, keep, _ in cands for s in SEEDS]
    results = {j.name: run_job(ctx, teacher, simclr, archive, j) for j in order(list(dict.fromkeys(first)))}
    acc = lambda j: results[j.name]["top1"] / 100  # noqa: E731  (train reports percent)

    chosen: dict[str, dict[int, tuple[int, float, int]]] = {a: {} for a in STUDENTS}
    for m, cands in configs["convnet"].items():
        best = max(cands, key=lambda c: statistics.fmean(acc(Job("convnet", "archive", "stored", s, c[0], c[1]))
                                                         for s in SEEDS))
        chosen["convnet"][m] = best
        for a in STUDENTS:
            if a != "convnet":  # the other student: ConvNet-3's best top-K, with its own fitting keep
                rc = [c for c in configs[a][m] if c[0] == best[0]] or configs[a][m]
                chosen[a][m] = rc[0]
    second = [Job(a, i, "stored", s, k, keep) for a in STUDENTS for m, (k, keep, _) in chosen[a].items()
              for s in SEEDS for i in ("archive", "random")]
    results.update({j.name: run_job(ctx, teacher, simclr, archive, j) for j in order(list(dict.fromkeys(second)))})

    rows = []
    for a in STUDENTS:
        real = acc(Job(a, "full", "hard", 0))
        sources = [("hard", None, 0), ("projector", None, archive["payload_bytes"]), ("teacher", None, None)]
        sources += [(f"stored {m}x", c, c[2]) for m, c in chosen[a].items()]
        for name, c, nbytes in sources:
            lab = "stored" if c else name
            k, keep = (c[0], c[1]) if c else (0, 1.0)
            dist = [acc(Job(a, "archive", lab, s, k, keep)) for s in SEEDS]
            rand = None if name == "hard" else [acc(Job(a, "random", lab, s, k, keep)) for s in SEEDS]
            row = {"arch": a, "labels": name, "top_k": k or None, "keep": keep if c else None, "bytes": nbytes,
                   "distilled": dist, "random": rand}
            if rand is not None:
                hard = [acc(Job(a, "archive", "hard", s)) for s in SEEDS]
                row["scores"] = summarize([RunAccuracies(real, h, d, r) for h, d, r in zip(hard, dist, rand)])
            rows.append(row)
    candidates = [{"budget": m, "top_k": k, "keep": keep, "bytes": b,
                   "distilled": [acc(Job("convnet", "archive", "stored", s, k, keep)) for s in SEEDS]}
                  for m, cands in configs["convnet"].items() if len(cands) > 1 for k, keep, b in cands]
    return {"rows": rows, "candidates": candidates, "students": STUDENTS, "seeds": list(SEEDS), "val_images": VAL_IMAGES, "payload_bytes": archive["payload_bytes"],
            "real": {a: {"top1": acc(Job(a, "full", "hard", 0)), "epochs": REAL_EPOCHS[a]} for a in STUDENTS},
            "archive": {k: archive[k] for k in ("path", "bytes", "images", "payload_bytes", "fidelity")}}


def pct(values: list[float] | None) -> str:
    if not values:
        return "-"
    m, s = mean_std([100 * v for v in values])
    return f"{m:.2f} ± {s:.2f}"


def markdown(res: dict) -> str:
    p = res["payload_bytes"]
    out = ["# Stored soft labels at the projector's bytes (CIFAR-10, IPC 10)", "",
           f"Command: `{res['command']}`", "",
           f"Run: {res['started']}, {res['wall_seconds'] / 60:.1f} min wall, load average {res['load'][0]:.1f} at "
           f"the start and {res['load'][1]:.1f} at the end (2-core CPU, no GPU), code at {res['commit']}.", "",
           f"Archive: the quick plan's SimCLR-base archive with refine (benchmarks/cifar10.py --quick; 10,000 "
           f"training images), {res['archive']['images']} images, label payload {p:,} B (LoRA + prompts, "
           "compressed). Students: " + ", ".join(f"{C.STUDENT_TITLES.get(a, a)} {e} epochs" for a, e in
                                                 res["students"].items())
           + f", the archive's recipe, seeds {', '.join(map(str, res['seeds']))}, final-epoch top-1 on the first "
           f"{res['val_images']:,} CIFAR-10 test images (mean ± sample std). Stored "
           "labels: the teachers' labels of train's exact views, recorded by `hellopack labels record` (top-K "
           "fp16 log-probabilities per view, LPLD's random step pruning to fit the budget); bytes are the file's, "
           "exact. Random: IPC real images per class, redrawn per seed, with the same label source (stored labels "
           "recorded for that subset). acc(real): the same student on the 10,000 training images with hard labels, "
           + ", ".join(f"{a} {r['epochs']} epochs: {100 * r['top1']:.2f} %" for a, r in res["real"].items())
           + " (shortened: DD-Ranking caches a fully trained one). LRS: DD-Ranking 0.2.0's formula "
           "(hellopack.rank.scores), per seed, mean ± population std.", "",
           "| student | labels | top-K | kept | label bytes | vs payload | distilled top-1 % | random top-1 % | IOR | HLR | LRS |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        s = r.get("scores") or {}
        nbytes = "0" if r["labels"] == "hard" else "unbounded (online)" if r["bytes"] is None else f"{r['bytes']:,}"
        ratio = f"{r['bytes'] / p:.2f}x" if r["bytes"] else "-"
        f = (lambda k: f"{s[k]['mean']:+.4f}" if k in s else "-")  # noqa: E731
        lrs = f"{s['lrs']['mean']:.4f} ± {s['lrs']['std']:.4f}" if s else "-"
        kept = "-" if r["keep"] is None else f"{100 * r['keep']:.1f} %"
        out.append(f"| {C.STUDENT_TITLES.get(r['arch'], r['arch'])} | {r['labels']} | {r['top_k'] or '-'} | "
                   f"{kept} | {nbytes} | {ratio} | "
                   f"{pct(r['distilled'])} | {pct(r['random'])} | {f('ior')} | {f('hlr')} | {lrs} |")
    if res["candidates"]:
        out += ["", "ConvNet-3, every top-K at the budgets the whole label set does not fit (the best mean is "
                "the row above; ResNet-18 gets that top-K):", "",
                "| budget | top-K | kept | bytes | distilled top-1 % |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {c['budget']}x | {c['top_k']} | {100 * c['keep']:.1f} % | {c['bytes']:,} | {pct(c['distilled'])} |"
                for c in res["candidates"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import subprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reverse", action="store_true", help="take the jobs last-first (a second process)")
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the .json, run nothing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads [1: run two processes instead]")
    ap.add_argument("--results", type=Path, default=C.RESULTS)
    ap.add_argument("--smoke", action="store_true", help="ConvNet-3 only, 2 epochs, 2 seeds: check the plumbing")
    args = ap.parse_args(argv)
    stem = args.results / "label-budget"
    if args.smoke:
        global STUDENTS, REAL_EPOCHS, SEEDS, VAL_IMAGES
        STUDENTS, REAL_EPOCHS, SEEDS, VAL_IMAGES = {"convnet": 2}, {"convnet": 1}, (0, 1), 200
        stem = Path("/tmp") / "label-budget-smoke"
    if args.render:
        stem.with_suffix(".md").write_text(markdown(json.loads(stem.with_suffix(".json").read_text())))
        return 0
    if C.find_data(C.DEFAULT_DATA) is not None:
        print(f"skipped: {C.find_data(C.DEFAULT_DATA)}")
        return 0
    t0, started, load0 = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    # the code that runs is the code at the start (a commit made during the run is not it)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout
    ctx, teacher, simclr, archive = setup(args.threads)
    res = run_all(ctx, teacher, simclr, archive, args.reverse)
    res.update(command=" ".join(["python benchmarks/label_budget.py", *map(shlex.quote, argv or sys.argv[1:])]),
               started=started, wall_seconds=round(time.perf_counter() - t0, 1), load=[load0, os.getloadavg()[0]],
               commit=commit.strip())
    res = C.relative_paths(res)
    if not args.reverse:  # the first process writes the results
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
        stem.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
