"""Consumers of a fuzzed archive (issue 13): `train` (one step) and `inspect --grid`, in-process.

Every consumer must be as careful as the reader: on each mutated archive that ``open_archive``
accepts, the CLI must end cleanly, i.e. exit 0 or 2, no traceback, no control characters and at
most one line on stderr, no file outside its output folder, and after exit 2 nothing left in it.
``train`` runs one optimizer step (``--epochs 1`` on the two-image seeds, batch 2), hard labels
(the seeds' custom base cannot be loaded; the projector path still reads and checks prompts.json
and lora.safetensors first), convnet, CPU, in this process: the imports and the CLI are loaded once.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

from hellopack.archive import ArchiveError, open_archive

DRIVERS = ("train", "grid")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_RUNNER = None


def argv_for(driver: str, path: Path, out: Path) -> list[str]:
    if driver == "train":
        return ["train", str(path), "--arch", "convnet", "--labels", "hard", "--epochs", "1", "--device", "cpu",
                "--workers", "0", "-q", "--out", str(out / "run")]
    return ["inspect", str(path), "--grid", str(out / "sheet.png")]


def opens(path: Path) -> bool:
    try:
        open_archive(path)
    except ArchiveError:
        return False
    return True


def unclean(exit_code: int, stderr: str, exception: BaseException | None, left: list[str]) -> str | None:
    """Why a consumer's exit was not clean, or None."""
    if exception is not None and not isinstance(exception, SystemExit):
        return f"traceback {type(exception).__name__}: {str(exception).splitlines()[0][:120] if str(exception) else ''}"
    if exit_code not in (0, 2):
        return f"exit {exit_code}: {stderr[-160:]!r}"
    if _CONTROL.search(stderr):
        return f"control characters in stderr: {stderr[:160]!r}"
    if len(stderr.splitlines()) > 1:
        return f"{len(stderr.splitlines())} stderr lines: {stderr[:200]!r}"
    if exit_code == 2 and left:
        return "files left behind: " + ", ".join(left[:3])
    return None


def drive(driver: str, path: Path, out: Path, guarded: Callable, timeout: float, timeout_error: type) -> str | None:
    """Run one consumer on ``path`` with ``out`` as its (empty) output folder; the reason it was unclean, or None.
    ``guarded(timeout, allowed)`` is the fuzz harness's time cap and write watch."""
    global _RUNNER
    from rich.console import Console
    from typer.testing import CliRunner

    from hellopack_cli import inspect_cmd
    from hellopack_cli.app import app

    if _RUNNER is None:
        _RUNNER = CliRunner()
    inspect_cmd.stdout = Console()  # a fresh process each time, as far as the shared console goes
    try:
        with guarded(timeout, out) as writes:
            r = _RUNNER.invoke(app, argv_for(driver, path, out))
    except timeout_error:
        return "timeout"
    try:
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        if writes:
            return "wrote outside its output folder: " + "; ".join(writes[:3])
        return unclean(r.exit_code, r.stderr, r.exception, left)
    finally:
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def warm_up(driver: str, blob: bytes, workdir: Path, out: Path, guarded: Callable, timeout: float,
            timeout_error: type) -> None:
    """Run ``driver`` once on a valid seed without the write watch (torch creates its caches on first use);
    it must then run cleanly under the watch, or the harness is wrong, not the archive."""
    from typer.testing import CliRunner

    from hellopack_cli.app import app

    path = workdir / "case.hellopack"
    path.write_bytes(blob)
    r = CliRunner().invoke(app, argv_for(driver, path, out))
    if r.exit_code != 0:
        raise SystemExit(f"{driver} fails on a valid seed archive (exit {r.exit_code}): {r.stderr[-300:]}")
    for p in out.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    why = drive(driver, path, out, guarded, timeout, timeout_error)
    if why is not None:
        raise SystemExit(f"{driver} on a valid seed archive is not clean: {why}")
