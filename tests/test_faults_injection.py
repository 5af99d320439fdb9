"""Runs that die (issue 6, item 2): SIGKILL at every build stage, SIGKILL mid-epoch in train, a full disk.

What a user notices: rerunning the same `hellopack build` command after a kill -9 anywhere
writes an archive byte-identical to an uninterrupted run's (same seed, CPU) and redoes only
unfinished work; `hellopack train --resume` after a kill mid-epoch ends with bit-identical
weights; a full disk ends in one `hellopack: error: ...` line, exit 2, and no file under
the final name (nor a stray temporary file beside it).

The commands run in real child processes (tests/helpers_cli.py forks them from one
process that imported torch once) and kill themselves at a chosen point.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from helpers_build import build_argv, tiny_teacher, write_build_toml
from helpers_cli import CliServer
from test_train_kit import model_tensors, read_json, small_archive  # noqa: F401

ALL_STAGES = ["projector: text head (4 classes x 7 templates)", "fit projector", "fidelity", "select: score crops",
              "select: extract crops", "update images", "write archive"]
AFTER_FIT = [ALL_STAGES[0], *ALL_STAGES[3:]]
ENOSPC_LINE = "hellopack: error: cannot write '{name}' (No space left on device); free space or choose another path"


@dataclass(frozen=True)
class Built:
    teacher: Path
    toml: Path
    clean: Path  # the uninterrupted run's archive
    clean_work: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[CliServer]:
    s = CliServer(tmp_path_factory.mktemp("cli-logs"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory, server: CliServer) -> Built:
    """One uninterrupted build; eval batches of 4 and a fit checkpoint every 2 steps give kill points inside
    every stage (12 fit steps, 4 fidelity batches, 4 update chunks)."""
    root = tmp_path_factory.mktemp("clean")
    teacher = tiny_teacher(root / "teacher.safetensors")
    toml = write_build_toml(root / "build.toml", eval_batch_size=4, fit_checkpoint_every=2)
    out = root / "clean.hellopack"
    res = server.run(build_argv(out, teacher=teacher, config=toml))
    assert res.exit == 0, res.describe()
    assert res.lines("STAGE ") == ALL_STAGES
    return Built(teacher, toml, out, root / "clean.work")


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes left beside the outputs."""
    return sorted(p.name for p in folder.glob(".*.tmp"))


# ---- build: SIGKILL at 11 points over every stage, rerunning the same command after each ---------

# (where it dies, the kill, what the run that dies there must print on its way: resumed work)
KILL_CHAIN: list[tuple[str, dict[str, Any], list[str]]] = [
    ("data scan", {"kind": "mark", "stage": "scan"}, []),
    ("teachers", {"kind": "mark", "stage": "teachers"}, []),
    ("projector", {"kind": "stage", "name": "projector: text head", "n": 0}, []),
    ("fit, before the first checkpoint", {"kind": "stage", "name": "fit projector", "n": 1}, []),
    ("fit, mid-epoch after a checkpoint", {"kind": "stage", "name": "fit projector", "n": 5}, []),
    ("fidelity", {"kind": "stage", "name": "fidelity", "n": 1},
     ["INFO fit: resuming at step 4 (epoch 1, batch 4)", "ADV fit projector 4"]),
    ("crop scoring", {"kind": "stage", "name": "select: score crops", "n": 1},
     ["INFO fit: resuming at step 12 (epoch 3, batch 0)"]),  # fit done, its marker not yet written
    ("crop extraction", {"kind": "stage", "name": "select: extract crops", "n": 2},
     ["INFO fit: done earlier, reusing the fitted projector"]),
    ("image update", {"kind": "stage", "name": "update images", "n": 3}, []),  # #1 is advance(0): 2 of 4 chunks
    ("archive write", {"kind": "write", "suffix": ".hellopack", "after": 4096},
     ["ADV update images 8"]),  # the update kept its 2 finished chunks (8 of 16 patches)
    ("archive rename", {"kind": "rename", "suffix": ".hellopack"}, []),
]
# Which stages each run enters before it dies (or, last, finishes): finished stages are never redone.
CHAIN_STAGES = [
    [], [], [ALL_STAGES[0]], ALL_STAGES[:2], ALL_STAGES[:2], ALL_STAGES[:3], ALL_STAGES[:4], AFTER_FIT[:3],
    AFTER_FIT[:4], [ALL_STAGES[0], "update images", "write archive"], [ALL_STAGES[0], "write archive"],
    [ALL_STAGES[0], "write archive"],
]


@pytest.mark.slow
def test_sigkill_at_every_stage_then_rerun_writes_identical_bytes(built: Built, server: CliServer, tmp_path: Path):
    """One work directory, killed 11 times: each rerun of the same command continues the last one's work."""
    out = tmp_path / "killed.hellopack"
    argv = build_argv(out, teacher=built.teacher, config=built.toml)
    for (where, kill, lines), stages in zip(KILL_CHAIN, CHAIN_STAGES[:-1], strict=True):
        res = server.run(argv, kill=kill)
        assert res.killed, f"never reached the kill in {where}\n" + res.describe()
        assert res.lines("STAGE ") == stages, where
        for line in lines:
            assert line in res.stdout.splitlines(), f"{where}: {line!r} missing\n{res.describe()}"
        assert not out.exists(), where
        if where == "fit, before the first checkpoint":
            assert not (tmp_path / "killed.work" / "fit" / "fit-state.safetensors").exists()
    last = server.run(argv)
    assert last.exit == 0, last.describe()
    assert last.lines("STAGE ") == CHAIN_STAGES[-1]
    assert out.read_bytes() == built.clean.read_bytes()
    assert leftovers(tmp_path) == []  # the temporary archives cut short by the kills are gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.hellopack", "killed.work"]


# ---- train: SIGKILL mid-epoch (and between the two checkpoint files), then --resume -------------

TRAIN = ["--arch", "mobilenet_v3_small", "--epochs", "4", "--eval-every", "2", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def straight_run(small_archive: Path, server: CliServer, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("straight") / "run"
    res = server.run(["train", small_archive, *TRAIN, "--out", out])
    assert res.exit == 0, res.describe()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill,resumed_at", [
    ({"kind": "stage", "name": "train", "n": 5}, "at epoch 2/4 (step 4)"),  # step 5 of 8: inside epoch 3
    ({"kind": "rename", "suffix": "last.json"}, "at epoch 1/4 (step 2)"),  # tensors of epoch 1 written, JSON not
], ids=["mid-epoch", "between-checkpoint-files"])
def test_sigkill_during_train_then_resume_matches_straight_run(kill, resumed_at, small_archive: Path,  # noqa: F811
                                                               straight_run: Path, server: CliServer,
                                                               tmp_path: Path):
    out = tmp_path / "run"
    first = server.run(["train", small_archive, *TRAIN, "--out", out], kill=kill)
    assert first.killed, "the kill point was never reached\n" + first.describe()
    assert not (out / "result.json").exists()

    again = server.run(["train", small_archive, *TRAIN, "--out", out, "--resume"])
    assert again.exit == 0, again.describe()
    assert f"INFO resuming {out} {resumed_at}" in again.stdout.splitlines(), again.describe()
    a, b = model_tensors(straight_run), model_tensors(out)
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and bool((a[k] == b[k]).all()) for k in a), \
        [k for k in a if not bool((a[k] == b[k]).all())]
    ra, rb = read_json(straight_run / "result.json"), read_json(out / "result.json")
    assert (ra["top1"], ra["top5"], ra["timing"]["steps"]) == (rb["top1"], rb["top5"], rb["timing"]["steps"])
    assert leftovers(out / "checkpoints") == []


# ---- a full disk ------------------------------------------------------------------------------------

class _Full:
    """A file object that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, f: Any, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: Any) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_Full":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


class _Module:
    """A stand-in for a module (os, tempfile) with one attribute replaced."""

    def __init__(self, real: Any, **replaced: Any) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced[name] if name in self._replaced else getattr(self._real, name)


@pytest.mark.parametrize("where", ["archive file", "image spool"])
def test_injected_enospc_while_writing_the_archive(where: str, built: Built, tmp_path: Path, monkeypatch):
    """ENOSPC from the archive's own file, or from the temporary file the images are compressed into first."""
    import tempfile

    import hellopack.archive.atomic as atomic
    import hellopack.archive.writer as writer
    from hellopack_cli.app import app

    if where == "archive file":
        monkeypatch.setattr(atomic, "os", _Module(os, fdopen=lambda fd, mode: _Full(os.fdopen(fd, mode), 1000)))
    else:
        monkeypatch.setattr(writer, "tempfile", _Module(
            tempfile, TemporaryFile=lambda **kw: _Full(tempfile.TemporaryFile(**kw), 100)))
    out = tmp_path / "full.hellopack"
    # The finished work directory of the clean run: only the archive write is left to do.
    argv = build_argv(out, teacher=built.teacher, config=built.toml, workdir=built.clean_work)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    assert res.stderr.splitlines() == [ENOSPC_LINE.format(name=out.name)]
    assert os.listdir(tmp_path) == []  # no archive under the final name, no temporary file


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    except OSError as e:
        done = subprocess.CompletedProcess([], 1, "", str(e))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); "
                    "test_injected_enospc_while_writing_the_archive covers ENOSPC by injection")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill a tmpfs until ``leave`` bytes (rounded to pages) are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    with contextlib.suppress(OSError), open(folder / "filler2", "wb") as f:
        if leave == 0:
            f.write(b"\0" * 65536)  # whatever pages are left


@pytest.mark.slow
@pytest.mark.parametrize("free", [0, 12 * 1024], ids=["no-space", "12-KiB-free"])
def test_real_full_disk_at_the_archive(free: int, built: Built, server: CliServer, tmp_path: Path):
    """A 64-KiB tmpfs as the output folder (the archive is ~31 KB): exit 2, one line, nothing left behind."""
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk, free)
        before = sorted(os.listdir(disk))
        out = disk / "x.hellopack"
        res = server.run(build_argv(out, teacher=built.teacher, config=built.toml, workdir=built.clean_work))
        assert res.exit == 2, res.describe()
        assert res.stderr.splitlines() == [ENOSPC_LINE.format(name=out.name)], res.describe()
        assert sorted(os.listdir(disk)) == before


@pytest.mark.slow
def test_real_full_disk_in_the_work_directory(built: Built, server: CliServer, tmp_path: Path):
    """The work directory fills up while the selected crops are stored (a memory-mapped file): a clear
    error, not a SIGBUS; freeing space and rerunning then finishes with the same bytes."""
    with tmpfs(tmp_path / "disk", "320k") as disk:
        work = disk / "w"
        work.mkdir()
        for name in ("scan.done.json", "teachers.done.json", "fit.done.json"):
            shutil.copy(built.clean_work / name, work / name)
        shutil.copytree(built.clean_work / "fit", work / "fit")
        fill(disk, 16 * 1024)  # the crops need 49 KB
        out = tmp_path / "x.hellopack"
        argv = build_argv(out, teacher=built.teacher, config=built.toml, workdir=work)
        res = server.run(argv)
        assert res.exit == 2, res.describe()
        crops = work / "select" / "crops.npy"
        assert res.stderr.splitlines() == [f"hellopack: error: cannot write '{crops}': No space left on device; "
                                           "free space or pass another --workdir"], res.describe()
        assert not out.exists() and not crops.exists()
        (disk / "filler").unlink()
        again = server.run(argv)
        assert again.exit == 0, again.describe()
        assert again.lines("STAGE ") == AFTER_FIT
        assert out.read_bytes() == built.clean.read_bytes()
