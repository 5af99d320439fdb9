"""Peak RSS of `build` from a large vs a small synthetic source (issue 3: target ratio <= 1.2).

    python benchmarks/build_memory.py [--small 2000] [--large 20000] [--classes 10] [--ipc 2]
                                      [--fit-epochs 1] [--base hellopack-tiny-rn] [--target 1.2]

Each build runs in a fresh subprocess (one torch thread, workers 0) with identical settings
except ``SyntheticConfig(per_class=...)``; its peak RSS is the child's own ``ru_maxrss``
taken by ``os.wait4`` (includes any process it waited for). The child also reports its RSS
after imports and after loading the base, so the data-dependent part of the peak is visible.
The teacher is a randomly initialised convnet_w32 (seed 0) saved as safetensors: memory
does not depend on how good it is, and training one would only add minutes.
Streaming is the point, so compute is kept small: tiny random-init base, 1 fit epoch, small
IPC and n_real. The large build's wall time is dominated by rendering the synthetic images
(every pass over the source draws them again) and the projector fit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    """Peak RSS of this process so far, MB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from hellopack.distill import BuildConfig, build
    from hellopack.data.synthetic import SyntheticConfig
    from hellopack.models.base import load_base  # noqa: F401  (import cost counted in the baseline)

    after_import = _rss_mb()
    data = SyntheticConfig(num_classes=args.classes, per_class=args.per_class, seed=0)
    cfg = BuildConfig(recipe="synthetic", out=str(Path(args.dir) / "out.hellopack"),
                      workdir=str(Path(args.dir) / "work"), synthetic=data, ipc=args.ipc,
                      teachers=(f"convnet_w32:{args.teacher}",), base=args.base, pretrained=None,
                      templates="simple", fit_epochs=args.fit_epochs, fit_lr=0.01, fit_batch_size=64,
                      n_real=args.n_real, m_crops=2, update_steps=args.update_steps, eval_batch_size=64,
                      seed=0, device="cpu", workers=0, train_epochs=1)
    t0 = time.perf_counter()
    build(cfg)
    wall = time.perf_counter() - t0
    print(json.dumps({"after_import_mb": after_import, "peak_mb": _rss_mb(), "build_s": wall,
                      "images": data.count("train")}))


def make_teacher(path: Path, classes: int) -> None:
    import torch

    from hellopack.models.students import build_student
    from hellopack.models.teachers import save_state_dict
    from hellopack.data.synthetic import SYNTHETIC_MEAN, SYNTHETIC_STD

    torch.manual_seed(0)
    model = build_student("convnet_w32", classes, 32, SYNTHETIC_MEAN, SYNTHETIC_STD)
    save_state_dict(model.net, path, metadata={"arch": "convnet_w32", "note": "random init (memory benchmark)"})


def run_one(args: argparse.Namespace, per_class: int, root: Path, teacher: Path) -> dict:
    d = root / f"pc{per_class}"
    d.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", "--per-class", str(per_class), "--dir", str(d),
           "--teacher", str(teacher), "--classes", str(args.classes), "--ipc", str(args.ipc),
           "--fit-epochs", str(args.fit_epochs), "--base", args.base, "--n-real", str(args.n_real),
           "--update-steps", str(args.update_steps)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = d / "child.out"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not a running max
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"build with per_class={per_class} failed (exit {proc.returncode}):\n{text[-3000:]}")
    report = json.loads(text.strip().splitlines()[-1])
    report.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, maxrss_mb=usage.ru_maxrss / 1024)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=2000, help="source images of the small build")
    p.add_argument("--large", type=int, default=20000, help="source images of the large build")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--ipc", type=int, default=2)
    p.add_argument("--n-real", type=int, default=20, help="real images scored per class (RDED)")
    p.add_argument("--update-steps", type=int, default=5)
    p.add_argument("--fit-epochs", type=int, default=1)
    p.add_argument("--base", default="hellopack-tiny-rn")
    p.add_argument("--target", type=float, default=1.2)
    p.add_argument("--workdir", default=None, help="where the builds run (default: a temporary folder)")
    # internal: one build in this process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--per-class", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--teacher", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    for n in (args.small, args.large):
        if n % args.classes:
            p.error(f"source sizes must be multiples of --classes {args.classes}, got {n}")

    with tempfile.TemporaryDirectory(prefix="hp-buildmem-", dir=args.workdir) as tmp:
        root = Path(tmp)
        teacher = root / "teacher-convnet_w32.safetensors"
        make_teacher(teacher, args.classes)
        print(f"build peak RSS vs source size: base {args.base} (random init), teacher convnet_w32 (random), "
              f"{args.classes} classes, IPC {args.ipc}, n_real {args.n_real}, fit_epochs {args.fit_epochs}, "
              f"update_steps {args.update_steps}; each build in a fresh subprocess, 1 torch thread, workers 0",
              flush=True)
        rows = []
        for n in (args.small, args.large):
            r = run_one(args, n // args.classes, root, teacher)
            rows.append(r)
            print(f"  {r['images']:>6} images: peak RSS {r['maxrss_mb']:7.1f} MB (after imports "
                  f"{r['after_import_mb']:.1f} MB), wall {r['wall_s']:6.1f} s, CPU {r['cpu_s']:6.1f} s",
                  flush=True)
    small, large = rows
    ratio = large["maxrss_mb"] / small["maxrss_mb"]
    growth = large["maxrss_mb"] - small["maxrss_mb"]
    print()
    print(f"{'source images':>14} {'peak RSS MB':>12} {'peak - imports MB':>18} {'wall s':>8} {'CPU s':>8}")
    for r in rows:
        print(f"{r['images']:>14} {r['maxrss_mb']:>12.1f} {r['maxrss_mb'] - r['after_import_mb']:>18.1f} "
              f"{r['wall_s']:>8.1f} {r['cpu_s']:>8.1f}")
    print(f"ratio large/small peak RSS: {ratio:.3f} ({growth:+.1f} MB for {large['images'] // small['images']}x "
          f"the images); wall ratio {large['wall_s'] / small['wall_s']:.2f}")
    print(f"{'PASS' if ratio <= args.target else 'MISS'}: peak RSS ratio {ratio:.3f} vs target <= {args.target}")


if __name__ == "__main__":
    main()
