"""What labelling on the fly costs (issue 4), measured side by side in one process.

    python benchmarks/labels_overhead.py [--threads 1] [--repeats 7] [--warmup 2] [--batch 32]
                                         [--rows rn50,tiny] [--step-arch resnet18] [--step-repeats 5]

Ratios (targets from issue 4):
  (a) merged projector forward / base image tower forward     target <= 1.05
      base image tower = the same open_clip ``visual`` at the same input size with the same
      resize + normalise (hellopack.models.common.ResizeNormalize); the merged projector is
      ``Projector(...).merged()`` (LoRA folded in) and adds the L2 norm and the linear head.
  (b) unmerged projector forward / merged projector forward   (what merging saves)
  (c) projector forward / ResNet-18 teacher forward            (the heavy-label methods' labeller)
      torchvision resnet18 at the archive's resolution; for 32-px data resnet18_cifar
      (3x3 stride-1 stem, no max-pool; hellopack.models.students).
  (d) student step with on-the-fly labels / the same step with labels read from memory
      on-the-fly = ProjectorLabeler (merged projector, inference mode) + student forward,
      MSE + 0.1 * CE, backward, AdamW step (as hellopack.train.loop does); from memory =
      the same with the soft labels indexed from a precomputed in-memory tensor.

Rows: "rn50" = open_clip RN50, random init (the architecture users run with the openai
weights; timing needs no weights), 1000 classes, 224 px; "tiny" = hellopack-tiny-rn32
(the demo's base), 10 classes, 32 px. The text head is a random unit-norm [C, d] matrix
(the head's values do not change the forward's cost; computing the real one for 1000
classes x 80 templates would only slow the benchmark). LoRA B factors are set to small
random values so the merged weights differ from the base's (as after a fit).

Timing: every model runs in the same process with the same torch thread count; after
warm-up, each repeat times every model once, back to back, in a rotating order, so a
change in machine load hits all of them alike. Each ratio is the median over repeats of
the per-repeat ratio; CPU time of the main thread (time.thread_time) is the headline when
--threads 1 (it does not count time the process waits for a shared core), wall time is
shown next to it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Row:
    key: str
    base: str
    classes: int
    size: int
    teacher: str  # student registry name of the ResNet-18 teacher
    label: str


ROWS = {
    "rn50": Row("rn50", "RN50", 1000, 224, "resnet18", "RN50 (random init), 1000 classes, 224 px"),
    "tiny": Row("tiny", "hellopack-tiny-rn32", 10, 32, "resnet18_cifar", "hellopack-tiny-rn32, 10 classes, 32 px"),
}
TARGETS = {"a": 1.05}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of one call."""
    c0, w0 = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[tuple[float, float]]]:
    """Per name, ``repeats`` (cpu, wall) samples; each repeat runs every fn once in a rotating order."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            out[n].append(timed(fns[n]))
    return out


def ratio(samples: dict[str, list[tuple[float, float]]], num: str, den: str, which: int) -> float:
    return statistics.median(a[which] / b[which] for a, b in zip(samples[num], samples[den]))


def med(samples: dict[str, list[tuple[float, float]]], name: str, which: int) -> float:
    return statistics.median(s[which] for s in samples[name])


def make_models(row: Row) -> dict[str, nn.Module]:
    from hellopack.models.base import load_base
    from hellopack.models.common import ResizeNormalize
    from hellopack.distill.config import BuildConfig
    from hellopack.models.projector import Projector
    from hellopack.models.students import build_student

    torch.manual_seed(0)
    base = load_base(row.base, pretrained=None)
    head = F.normalize(torch.randn(row.classes, base.embed_dim), dim=-1)
    rank_head = BuildConfig(recipe="synthetic", out="x").resolved_rank_head(row.classes, base.embed_dim)  # build's rule
    proj = Projector(base, [f"class {i}" for i in range(row.classes)], ["a photo of a {}."], rank_encoder=8,
                     rank_head=rank_head, head=head)
    with torch.no_grad():
        for m in proj.lora_modules().values():
            m.lora_B.normal_(0.0, 1e-3)  # as after a fit: merged weights differ from the base's
    proj.eval().requires_grad_(False)
    tower = nn.Sequential(ResizeNormalize(base.image_size, base.mean, base.std), base.model.visual).eval()
    teacher = build_student(row.teacher, row.classes, row.size, (0.5,) * 3, (0.25,) * 3).eval().requires_grad_(False)
    return {"tower": tower, "merged": proj.merged(), "unmerged": proj, "teacher": teacher}


def forwards(row: Row, models: dict[str, nn.Module], batch: int, repeats: int, warmup: int) -> dict:
    x = torch.rand(batch, 3, row.size, row.size, generator=torch.Generator().manual_seed(1))

    def fwd(m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return m(x)
        return run

    with torch.inference_mode():
        diff = (models["merged"](x) - models["unmerged"](x)).abs().max().item()
    samples = interleaved({n: fwd(m) for n, m in models.items()}, repeats, warmup)
    return {"samples": samples, "merge_maxdiff": diff}


def step_bench(row: Row, merged: nn.Module, arch: str, batch: int, repeats: int, warmup: int) -> dict:
    from hellopack.models.students import build_student
    from hellopack.train.labelers import ProjectorLabeler
    from hellopack.train.losses import student_loss

    device = torch.device("cpu")
    labeler = ProjectorLabeler(merged, device)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(batch, 3, row.size, row.size, generator=g)
    hard = F.one_hot(torch.randint(0, row.classes, (batch,), generator=g), row.classes).float()
    stored = labeler(x).clone()  # the precomputed labels (what heavy-label methods keep on disk/in memory)
    bank = stored.repeat(4, 1)  # a small "label file" to index into
    idx = torch.arange(batch) + batch

    students, opts = {}, {}
    for name in ("fly", "memory"):
        torch.manual_seed(3)
        s = build_student(arch, row.classes, row.size, (0.5,) * 3, (0.25,) * 3).train()
        students[name] = s
        opts[name] = torch.optim.AdamW(s.parameters(), lr=1e-3, weight_decay=0.01)

    def step(name: str, soft_fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            soft = soft_fn()
            loss = student_loss(students[name](x), soft, hard, loss="mse", beta=0.1)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            return loss.item()
        return run

    fns = {"fly": step("fly", lambda: labeler(x)), "memory": step("memory", lambda: bank[idx])}
    samples = interleaved(fns, repeats, warmup)
    return {"samples": samples, "arch": arch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every model")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rows", default="rn50,tiny", help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--step-arch", default=None,
                   help="student for (d) (default: resnet18 at 224 px, resnet18_cifar at 32 px)")
    p.add_argument("--step-repeats", type=int, default=5)
    p.add_argument("--no-step", action="store_true", help="skip (d)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    which = 0 if args.threads == 1 else 1  # headline: CPU time with one thread, else wall time
    unit = "CPU" if which == 0 else "wall"
    rows = [ROWS[k.strip()] for k in args.rows.split(",") if k.strip()]

    print(f"labels overhead: torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"{args.warmup} warm-up + {args.repeats} interleaved repeats (step: {args.step_repeats}), "
          f"median of per-repeat ratios; headline = {unit} time", flush=True)
    results = []
    for row in rows:
        t0 = time.perf_counter()
        models = make_models(row)
        fw = forwards(row, models, args.batch, args.repeats, args.warmup)
        s = fw["samples"]
        print(f"\n[{row.key}] {row.label}; teacher {row.teacher}; merged vs unmerged max |diff| "
              f"{fw['merge_maxdiff']:.2e}", flush=True)
        print(f"  median forward ms/batch ({unit}; wall): " + ", ".join(
            f"{n} {med(s, n, which) * 1e3:.1f}; {med(s, n, 1) * 1e3:.1f}" for n in s), flush=True)
        r = {"row": row, "a": (ratio(s, "merged", "tower", which), ratio(s, "merged", "tower", 1)),
             "b": (ratio(s, "unmerged", "merged", which), ratio(s, "unmerged", "merged", 1)),
             "c": (ratio(s, "merged", "teacher", which), ratio(s, "merged", "teacher", 1))}
        if not args.no_step:
            arch = args.step_arch or ("resnet18" if row.size >= 128 else "resnet18_cifar")
            st = step_bench(row, models["merged"], arch, args.batch, args.step_repeats, 1)
            ss = st["samples"]
            print(f"  median step ms ({arch} student, {unit}; wall): on-the-fly {med(ss, 'fly', which) * 1e3:.0f}; "
                  f"{med(ss, 'fly', 1) * 1e3:.0f}, from memory {med(ss, 'memory', which) * 1e3:.0f}; "
                  f"{med(ss, 'memory', 1) * 1e3:.0f}", flush=True)
            r["d"] = (ratio(ss, "fly", "memory", which), ratio(ss, "fly", "memory", 1))
            r["step_arch"] = arch
        print(f"  row time {time.perf_counter() - t0:.0f} s", flush=True)
        results.append(r)
        del models

    print()
    print(f"{'ratio':<68} {'row':<6} {unit:>7} {'wall':>7}  target")
    names = {"a": "(a) merged projector fwd / base image tower fwd",
             "b": "(b) unmerged / merged projector fwd",
             "c": "(c) projector fwd / ResNet-18 teacher fwd",
             "d": "(d) step, labels on the fly / labels from memory"}
    verdicts = []
    for k in ("a", "b", "c", "d"):
        for r in results:
            if k not in r:
                continue
            main_v, wall_v = r[k]
            target = TARGETS.get(k)
            mark = "" if target is None else f"<= {target}  {'PASS' if main_v <= target else 'MISS'}"
            label = names[k] + (f" [{r['row'].teacher}]" if k == "c" else "") + \
                (f" [{r['step_arch']}]" if k == "d" else "")
            print(f"{label:<68} {r['row'].key:<6} {main_v:>7.3f} {wall_v:>7.3f}  {mark}")
            if target is not None:
                verdicts.append(main_v <= target)
    print(f"\n{'PASS' if all(verdicts) else 'MISS'}: target (a) <= {TARGETS['a']} on every row")


if __name__ == "__main__":
    main()
