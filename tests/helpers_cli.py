"""Run `hellopack ...` in real child processes, cheaply, and kill them at chosen points.

Starting Python and importing torch + open_clip takes ~5 s; a fault-injection test needs
dozens of runs. ``CliServer`` starts ONE helper process (``python tests/helpers_cli.py``)
that imports everything once and then, per request, forks a child that runs the CLI
(``hellopack_cli.app:app``) with its own stdout/stderr files and exits with the CLI's exit
code, exactly like ``python -m hellopack_cli ...`` would. Each child is a fresh process
for everything that matters (disk state, file descriptors, RNG, torch threads): nothing is
computed in the server before the fork.

A ``kill`` spec makes the child SIGKILL itself at one point (no cleanup, no atexit, like
``kill -9`` or the OOM killer). Kinds:

- ``{"kind": "stage", "name": NAME, "n": N}``: at the N-th ``advance`` of the reporter
  stage whose name starts with NAME (N = 0: when the stage starts);
- ``{"kind": "mark", "stage": STAGE}``: when the build is about to write STAGE's marker;
- ``{"kind": "write", "suffix": SUFFIX, "after": BYTES}``: when a file written through an
  atomic writer (archive or hellopack.fsutil) whose final name ends with SUFFIX has
  received BYTES bytes (its temporary file then holds a prefix of the data);
- ``{"kind": "rename", "suffix": SUFFIX}``: just before the atomic rename onto a final
  name ending with SUFFIX (the temporary file is complete and fsynced).

Every run's reporter is ``--quiet``'s (warnings still go to stderr) and also prints
``STAGE name``, ``ADV name n`` and ``INFO message`` lines on stdout for the test to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Result:
    exit: int | None  # exit code, None when killed by a signal
    signal: int | None
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def lines(self, prefix: str) -> list[str]:
        return [ln[len(prefix):] for ln in self.stdout.splitlines() if ln.startswith(prefix)]

    def describe(self) -> str:
        return f"exit={self.exit} signal={self.signal}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


class CliServer:
    """The client side: ``run(argv, kill=None, cwd=...) -> Result``."""

    def __init__(self, scratch: Path, timeout: float = 180.0) -> None:
        self.scratch = scratch
        self.timeout = timeout
        self._n = 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, start_new_session=True)

    def run(self, argv: list[str], kill: dict[str, Any] | None = None, cwd: Path | None = None) -> Result:
        self._n += 1
        out, err = self.scratch / f"run{self._n}.out", self.scratch / f"run{self._n}.err"
        req = {"argv": [str(a) for a in argv], "kill": kill, "cwd": str(cwd or self.scratch),
               "stdout": str(out), "stderr": str(err)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.close(force=True)
            raise TimeoutError(f"`hellopack {' '.join(req['argv'])}` took over {self.timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI server died (exit {self.proc.poll()})")
        status = json.loads(line)
        return Result(status["exit"], status["signal"], out.read_text(errors="replace"),
                      err.read_text(errors="replace"))

    def close(self, force: bool = False) -> None:
        if self.proc.poll() is None:
            if force:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Close our ends too: a pipe left to the garbage collector warns (ResourceWarning) inside
        # whichever later test happens to trigger the collection (the fuzz harness fails on it).
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()


# ---- the server side (runs in the helper process) -----------------------------------------

def _serve() -> None:
    # Import everything a command needs once; each forked child then starts in milliseconds.
    import torch  # noqa: F401
    import hellopack.distill.fit  # noqa: F401
    import hellopack.distill.pipeline  # noqa: F401
    import hellopack.data  # noqa: F401
    import hellopack.models.base  # noqa: F401
    import hellopack.models.projector  # noqa: F401
    import hellopack.train.loop  # noqa: F401
    import hellopack_cli.app  # noqa: F401

    reply = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)  # never returns
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        reply.write(json.dumps({"exit": code, "signal": sig}) + "\n")
        reply.flush()


def _child(req: dict[str, Any]) -> None:
    code = 1
    try:
        os.chdir(req["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        import torch

        torch.set_num_threads(1)
        _install(req.get("kill"))
        from hellopack_cli.app import app

        app(args=req["argv"], prog_name="hellopack")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die(where: str) -> None:
    print(f"KILL {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill: dict[str, Any] | None) -> None:
    from hellopack_cli import build_cmd, reporter, train_cmd
    from hellopack.progress import Stage

    class HookReporter(reporter.QuietReporter):
        def __init__(self) -> None:
            self.count = 0

        def info(self, message: str) -> None:
            super().info(message)
            print(f"INFO {message}", flush=True)

        def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
            print(f"STAGE {name}", flush=True)
            hit = bool(kill) and kill["kind"] == "stage" and name.startswith(kill["name"])
            if hit and kill["n"] == 0:
                _die(f"start of {name}")
            outer = self

            class S(Stage):
                def advance(self, n: int = 1, **metrics: Any) -> None:
                    print(f"ADV {name} {n}", flush=True)
                    if hit:
                        outer.count += 1
                        if outer.count == kill["n"]:
                            _die(f"advance {outer.count} of {name}")

            return S()

    for mod in (build_cmd, train_cmd):
        mod.make_reporter = lambda quiet: HookReporter()
    if not kill:
        return
    if kill["kind"] == "mark":
        from hellopack.distill.stages import WorkDir

        mark = WorkDir.mark

        def killing_mark(self: Any, stage: str, key: str, result: Any) -> None:
            if stage == kill["stage"]:
                _die(f"before the {stage} marker")
            mark(self, stage, key, result)

        WorkDir.mark = killing_mark  # type: ignore[method-assign]
    elif kill["kind"] == "write":
        _kill_while_writing(kill["suffix"], int(kill["after"]))
    elif kill["kind"] == "rename":
        replace = os.replace

        def killing_replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            if os.fspath(dst).endswith(kill["suffix"]):
                _die(f"before renaming onto {os.fspath(dst)}")
            replace(src, dst, *a, **kw)

        os.replace = killing_replace  # type: ignore[assignment]
    elif kill["kind"] != "stage":
        raise ValueError(f"unknown kill kind {kill['kind']!r}")


def _kill_while_writing(suffix: str, after: int) -> None:
    """Wrap the atomic writers' file objects: die once ``after`` bytes went to a matching file."""
    import hellopack.archive.writer as archive_writer
    import hellopack.fsutil as fsutil

    class Dying:
        def __init__(self, f: Any) -> None:
            self._f, self._n = f, 0

        def write(self, data: Any) -> int:
            room = after - self._n
            if len(data) >= room:
                self._f.write(bytes(data)[:room])
                self._f.flush()
                os.fsync(self._f.fileno())
                _die(f"after {after} bytes of a *{suffix} file")
            self._n += len(data)
            return self._f.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

    def wrap(original: Any) -> Any:
        @contextlib.contextmanager
        def wrapped(path: Any) -> Any:
            with original(path) as f:
                yield Dying(f) if os.fspath(path).endswith(suffix) else f

        return wrapped

    archive_writer.atomic_output = wrap(archive_writer.atomic_output)
    fsutil.atomic_write = wrap(fsutil.atomic_write)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    _serve()
