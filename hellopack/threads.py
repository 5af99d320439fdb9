"""How many CPU threads torch uses, and how its idle threads wait: the process setup of a shared node.

``os.cpu_count()`` counts the machine's cores, not the ones a job may use: its affinity mask
(taskset, Slurm, a container's cpuset) and its cgroup CPU quota (``docker --cpus``, Kubernetes
limits) can both allow fewer. ``usable_cpus()`` takes the smaller of the two.

torch's bundled OpenMP (libgomp on Linux) makes a thread that reaches a barrier spin for about
3 ms before it sleeps. With other jobs on the same cores, the spinning threads take the CPU
the straggling thread needs: ``hellopack demo`` beside two busy processes used 5x its quiet CPU
time. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once (libgomp's spin count 0;
``GOMP_SPINCOUNT=0`` does the same, measured in benchmarks/results/contention.md);
``KMP_BLOCKTIME=0`` is the same for Intel's OpenMP. OpenMP reads these when it loads, so
``prepare_process`` runs at the CLI's entry, before anything imports torch. Nothing here imports torch
at module level: the CLI imports this module for ``--help``.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

from hellopack.errors import HellopackError

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Inside a container the job's own cgroup is mounted at the root; v1 names the cpu controller's folder these ways.
_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
# Set only where the user has not set them: an explicit value (OMP_WAIT_POLICY=ACTIVE on a dedicated node) wins.
QUIET_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadSettings:
    """``--threads``: None uses ``usable_cpus()`` (or OMP_NUM_THREADS when the user set it)."""

    threads: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota_cpus(quota: str, period: str) -> int | None:
    """ceil(quota / period), or None for no limit ("max", -1) or anything unreadable."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    # Rounded up (as the JVM, .NET and Go do): 1.5 CPUs of quota run two threads at 75 % each rather
    # than leave half a CPU unused; threads that sleep while they wait lose nothing to throttling.
    return math.ceil(q / p)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs the cgroup quota allows, rounded up; None when there is no quota or it cannot be read.

    cgroup v2: ``cpu.max`` holds "QUOTA PERIOD" or "max PERIOD". v1: ``cpu.cfs_quota_us`` (-1: none)
    and ``cpu.cfs_period_us`` in the cpu controller's folder.
    """
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2:
            found = _quota_cpus(*parts)
            if found is not None:
                return found
    for name in _V1_DIRS:
        quota, period = _read(root / name / "cpu.cfs_quota_us"), _read(root / name / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            found = _quota_cpus(quota, period)
            if found is not None:
                return found
    return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (os.cpu_count() where the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP_ROOT, affinity: int | None = None) -> int:
    """min(affinity mask, cgroup quota rounded up), at least 1."""
    cpus = affinity_cpus() if affinity is None else affinity
    limit = cgroup_cpu_limit(root)
    return max(1, cpus if limit is None else min(cpus, limit))


def check_threads(threads: int) -> int:
    if threads < 1:
        raise HellopackError(f"--threads must be at least 1 (got {threads}); leave it out to use the "
                             f"{usable_cpus()} CPUs this process may use")
    return threads


def prepare_process(environ: MutableMapping[str, str] = os.environ) -> None:
    """At a process entry, before torch loads: waiting threads sleep, and the thread count is
    ``usable_cpus()``. A variable the user set is left as it is."""
    for key, value in QUIET_WAIT.items():
        environ.setdefault(key, value)
    if "OMP_NUM_THREADS" not in environ:
        count = str(usable_cpus())
        for key in _COUNT_VARS:
            environ.setdefault(key, count)


def apply_threads(threads: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Use ``threads`` intra-op threads: through the environment when torch has not loaded yet
    (OpenMP reads it then; child processes inherit it), and torch.set_num_threads when it has."""
    check_threads(threads)
    for key in _COUNT_VARS:
        environ[key] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
