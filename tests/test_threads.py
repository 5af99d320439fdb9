"""hellopack/threads.py: CPUs from affinity and cgroup quota, the wait policy at the CLI's entry, --threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellopack.errors import HellopackError
from hellopack.threads import (QUIET_WAIT, ThreadSettings, affinity_cpus, apply_threads, cgroup_cpu_limit,
                               check_threads, prepare_process, usable_cpus)
from hellopack_cli.app import app

REPO = Path(__file__).resolve().parents[1]


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str, folder: str = "cpu") -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "cpu.cfs_quota_us").write_text(quota)
    (root / folder / "cpu.cfs_period_us").write_text(period)
    return root


@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", None),       # no quota
    ("150000 100000\n", 2),       # 1.5 CPUs: rounded up
    ("100000 100000", 1),
    ("200000 100000", 2),
    ("1000 100000", 1),           # a sliver of one CPU is still one thread
    ("400000 50000", 8),
    ("", None), ("garbage", None), ("100000", None), ("0 100000", None), ("-1 100000", None),
    ("100000 0", None), ("1.5 1", None), ("100000 100000 7", None),
])
def test_cgroup_v2_cpu_max(tmp_path: Path, text: str, cpus: int | None) -> None:
    assert cgroup_cpu_limit(_v2(tmp_path, text)) == cpus


@pytest.mark.parametrize("quota, period, cpus", [
    ("-1", "100000", None), ("150000", "100000", 2), ("50000", "100000", 1), ("300000\n", "100000\n", 3),
    ("x", "100000", None), ("100000", "", None),
])
def test_cgroup_v1_cfs_quota(tmp_path: Path, quota: str, period: str, cpus: int | None) -> None:
    assert cgroup_cpu_limit(_v1(tmp_path, quota, period)) == cpus


def test_cgroup_v1_combined_controller_folder(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(_v1(tmp_path, "250000", "100000", folder="cpu,cpuacct")) == 3


def test_missing_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None
    _v1(tmp_path, "150000", "100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").unlink()  # half a v1 pair is no quota
    assert cgroup_cpu_limit(tmp_path) is None


def test_garbage_v2_falls_through_to_v1(tmp_path: Path) -> None:
    _v2(tmp_path, "garbage")
    assert cgroup_cpu_limit(_v1(tmp_path, "300000", "100000")) == 3


def test_binary_garbage_is_no_limit(tmp_path: Path) -> None:
    tmp_path.joinpath("cpu.max").write_bytes(b"\xff\xfe 100000")
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize("text, affinity, cpus", [
    ("150000 100000", 8, 2),   # quota below the mask
    ("800000 100000", 2, 2),   # mask below the quota
    ("max 100000", 3, 3),      # no quota: the mask
    ("garbage", 4, 4),         # unreadable quota: the mask
    ("max 100000", 0, 1),      # never below 1
])
def test_usable_cpus_is_the_smaller(tmp_path: Path, text: str, affinity: int, cpus: int) -> None:
    assert usable_cpus(_v2(tmp_path, text), affinity=affinity) == cpus


def test_affinity_is_this_process_mask() -> None:
    assert affinity_cpus() == len(os.sched_getaffinity(0))


def test_prepare_process_sets_only_what_the_user_left_unset() -> None:
    env: dict[str, str] = {}
    prepare_process(env)
    n = str(usable_cpus())
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}
    prepare_process(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7", "KMP_BLOCKTIME": "0"}


@pytest.mark.parametrize("bad", [0, -1])
def test_check_threads_refuses_below_one(bad: int) -> None:
    with pytest.raises(HellopackError) as e:
        check_threads(bad)
    assert str(e.value) == (f"--threads must be at least 1 (got {bad}); leave it out to use the "
                            f"{usable_cpus()} CPUs this process may use")


@pytest.fixture
def keep_threads(monkeypatch: pytest.MonkeyPatch):
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(key, "unset-by-test")  # monkeypatch restores the real value afterwards
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_threads_sets_torch_and_environment(keep_threads: None) -> None:
    apply_threads(1)
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"


def test_cli_threads_option(keep_threads: None) -> None:
    res = CliRunner().invoke(app, ["--threads", "1", "inspect", "--help"])
    assert res.exit_code == 0 and torch.get_num_threads() == 1
    res = CliRunner().invoke(app, ["inspect", "--help"], env={"HELLOPACK_THREADS": "1"})
    assert res.exit_code == 0 and os.environ["OMP_NUM_THREADS"] == "1"


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_cli_bad_threads_is_one_line_exit_2(bad: str) -> None:
    res = CliRunner().invoke(app, ["--threads", bad, "inspect", "x.hellopack"])
    assert res.exit_code == 2
    assert res.stderr == (f"hellopack: error: --threads must be at least 1 (got {bad}); leave it out to use "
                          f"the {usable_cpus()} CPUs this process may use\n")


def test_threads_help_default_comes_from_the_dataclass() -> None:
    assert ThreadSettings().threads is None  # None: usable_cpus(), the help's "[the CPUs this process may use ...]"


_ENTRY = ("import os, sys\n"
          "sys.argv = ['hellopack'] + sys.argv[1:]\n"
          "from hellopack_cli.app import main\n"
          "try:\n    main()\nexcept SystemExit:\n    pass\n"
          "import torch\n"
          "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('KMP_BLOCKTIME'), torch.get_num_threads())\n")


def _entry(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (*QUIET_WAIT, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                               "HELLOPACK_THREADS")}
    out = subprocess.run([sys.executable, "-c", _ENTRY, *args], capture_output=True, text=True, check=True,
                         env={**clean, **env, "PYTHONPATH": str(REPO)}, cwd=REPO)
    return out.stdout.strip().splitlines()[-1]


def test_entry_sets_passive_wait_and_usable_cpus_before_torch_loads() -> None:
    assert _entry("inspect", "--help") == f"PASSIVE 0 {usable_cpus()}"
    assert _entry("--threads", "1", "inspect", "--help") == "PASSIVE 0 1"
    assert _entry("inspect", "--help", OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1") == "ACTIVE 0 1"


def test_python_m_goes_through_main() -> None:
    assert (REPO / "cli" / "__main__.py").read_text() == "from .app import main\n\nmain()\n"
