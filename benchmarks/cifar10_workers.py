"""`benchmarks/cifar10.py --workers N`: N processes with one torch thread each share the plan's stages.

Why: on this 2-core machine two single-threaded processes train the small students faster than one
process with two threads (ConvNet-3 at batch 50: 4.5 ms per image each side by side against 3.6 ms per
image for one two-thread process, i.e. 2.25 ms per image of throughput), and most of the plan is independent runs.

How: each worker walks the same job list in priority order. Stages are cached under a file lock
(cifar10.Cache); a worker that finds a stage locked by the other gets ``Busy`` and moves on to the next
job, returning to the skipped ones later, so a long stage (the SimCLR pretraining) runs beside
everything that does not need it. When every worker is done, the parent runs the plan again in one
process: each stage is then a cached record, and that pass only gathers and writes the results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType

POLL_SECONDS = 5  # how often a worker with only busy jobs left looks again


def jobs(bench: ModuleType, ctx) -> list[tuple[str, Callable[[], object]]]:
    """(name, thunk) for every stage of the full or quick plan, the ones others wait on first."""
    plan = ctx.plan
    out: list[tuple[str, Callable[[], object]]] = [("teacher", lambda: bench.stage_teacher(ctx))]
    if ctx.pretrain:
        out.append(("pretrain", lambda: bench.stage_pretrain(ctx)))
    out.append(("probe", lambda: bench.stage_probe_given(ctx, bench.base_identity(ctx))))
    for name, ipc in bench.archive_names(ctx):
        out.append((f"archive {name} IPC {ipc}", lambda n=name, i=ipc: bench.main_archive(ctx, n, i)))
    cap = bench.head_cap(ctx)
    for kind in ("given", "simclr") if ctx.pretrain else ("given",):
        main = (lambda k=kind: bench.main_archive(ctx, k, plan.ipcs[0]))
        for re_, rh in bench.sweep_points_for(plan, cap, bench.encoder_cap(kind, ctx)):
            out.append((f"sweep {kind} {re_}/{rh}", lambda k=kind, r=re_, h=rh, m=main:
                        bench.sweep_point(ctx, bench.stage_teacher(ctx), bench.base_of(ctx, k), r, h, cap, m)))
    for base in bench.sweep_extra(ctx):
        for re_, rh in bench.sweep_points_for(plan, cap, bench.encoder_cap(base[0], ctx)):
            out.append((f"sweep {base[0]} {re_}/{rh}", lambda b=base, r=re_, h=rh:
                        bench.sweep_point(ctx, bench.stage_teacher(ctx), b, r, h, cap, None)))
    # the longest student runs first, so the last minutes are not one long run beside an idle worker
    runs = [(arch, ipc, row, epochs, seed) for arch, ipc, row, epochs, seeds in bench.student_jobs(ctx)
            for seed in range(seeds)]
    runs.sort(key=lambda r: -bench.images_seen(r[1], r[3]) * bench.cost("train", r[0]))
    for arch, ipc, row, epochs, seed in runs:
        out.append((f"student {arch} IPC {ipc} {row} seed {seed}",
                    lambda a=arch, i=ipc, r=row, e=epochs, s=seed: bench.student_run(ctx, a, i, r, e, s)))
    return out


def work(bench: ModuleType, ctx) -> None:
    """Run every job once; a job whose stage (or a stage it needs) another worker holds waits its turn."""
    pending = jobs(bench, ctx)
    while pending:
        for at, (name, job) in enumerate(pending):
            try:
                job()
            except bench.Busy:
                continue
            del pending[at]
            break  # back to the top: a finished stage may have freed the higher-priority jobs
        else:
            time.sleep(POLL_SECONDS)


def spawn(argv: list[str], workers: int) -> None:
    """Start ``workers`` copies of this benchmark as workers (one torch thread each) and wait for them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, sys.argv[0], *argv, "--worker-id", str(i), "--threads", "1"],
                              env=env) for i in range(1, workers + 1)]
    codes = [p.wait() for p in procs]
    for i, code in enumerate(codes, 1):
        if code != 0:  # the gathering pass computes whatever it left, in one process
            print(f"worker w{i} exited with {code}; the parent finishes its stages", file=sys.stderr, flush=True)
