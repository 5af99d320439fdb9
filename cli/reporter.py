"""Render library progress with rich (the library itself never imports rich)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hellopack.progress import Reporter, Stage
from hellopack.textsafe import printable

# Progress and messages go to stderr so stdout stays clean for --json.
console = Console(stderr=True)
LOG_EVERY_S = 30.0  # a progress line at most this often when stderr is not a terminal (a log file)


class _RichStage(Stage):
    def __init__(self, progress: Progress, name: str, total: int | None, unit: str) -> None:
        self._progress = progress
        self._unit = unit
        self._start = time.perf_counter()
        self._done = 0
        self._task = progress.add_task(name, total=total, rate="", info="")

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self._done += n
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        self._progress.update(self._task, advance=n, rate=f"{self._done / elapsed:,.1f} {self._unit}/s", info=info)

    def close(self) -> None:
        self._progress.stop_task(self._task)


class RichReporter(Reporter):
    """One live rich display for the whole command; each stage is a bar with rate and ETA."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),  # narrow: counts, rate and ETA fit an 80-column terminal
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._started = False

    def __enter__(self) -> "RichReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        # Started with the first bar: bad input caught before any stage prints only its error line
        # (a stopped empty display still writes a blank line to a non-terminal stderr).
        if not self._started:
            self._progress.start()
            self._started = True
        return _RichStage(self._progress, name, total, unit)

    def info(self, message: str) -> None:  # messages may quote archive or folder strings: escaped
        self._progress.console.print(printable(message, limit=None), markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self._progress.console.print(f"warning: {printable(message, limit=None)}", markup=False, highlight=False, style="bold yellow")


def _stamp(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {printable(message, limit=None)}\n")
    sys.stderr.flush()


class _PlainStage(Stage):
    def __init__(self, name: str, total: int | None, unit: str, every: float) -> None:
        self.name, self.total, self.unit, self.every = name, total, unit, every
        self.done, self.metrics = 0, {}
        self.t0 = self.last = time.perf_counter()
        _stamp(f"{name}: started" + (f" ({total:,} {unit})" if total else ""))

    def _line(self, now: float) -> str:
        dt = max(now - self.t0, 1e-9)
        parts = [f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        parts.append(f"{self.done / dt:,.1f} {self.unit}/s")
        if self.total and self.done:
            parts.append(f"eta {(self.total - self.done) * dt / self.done:,.0f} s")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.metrics.items()]
        return f"{self.name}: " + ", ".join(parts)

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        self.metrics = metrics or self.metrics
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            _stamp(self._line(now))

    def close(self) -> None:
        dt = time.perf_counter() - self.t0
        if not self.done:
            _stamp(f"{self.name}: done in {dt:,.1f} s")
            return
        _stamp(f"{self.name}: done, {self.done:,} {self.unit} in {dt:,.1f} s ({self.done / max(dt, 1e-9):,.1f} "
               f"{self.unit}/s)")


class PlainReporter(Reporter):
    """stderr is a file or a pipe: timestamped lines, flushed as they happen, progress every ``every`` s."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every

    def __enter__(self) -> "PlainReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        return _PlainStage(name, total, unit, self.every)

    def info(self, message: str) -> None:
        _stamp(message)

    def warn(self, message: str) -> None:
        _stamp(f"warning: {message}")


class QuietReporter(Reporter):
    """--quiet / --json: no bars; warnings still reach stderr."""

    def __enter__(self) -> "QuietReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def info(self, message: str) -> None:
        pass  # only warnings reach --quiet's stderr, through warn()

    def warn(self, message: str) -> None:
        print(f"warning: {printable(message, limit=None)}", file=sys.stderr)


def make_reporter(quiet: bool) -> RichReporter | PlainReporter | QuietReporter:
    """Bars on a terminal, timestamped lines in a log file, warnings only with --quiet."""
    if quiet:
        return QuietReporter()
    return RichReporter() if console.is_terminal else PlainReporter()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
