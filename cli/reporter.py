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

# Progress and messages go to stderr so stdout stays clean for --json.
console = Console(stderr=True)


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
            BarColumn(),
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

    def info(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)


class QuietReporter(Reporter):
    """--quiet / --json: no bars; warnings still reach stderr."""

    def __enter__(self) -> "QuietReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def info(self, message: str) -> None:
        if message.lower().startswith(("warning", "skipped")):
            print(message, file=sys.stderr)


def make_reporter(quiet: bool) -> RichReporter | QuietReporter:
    return QuietReporter() if quiet else RichReporter()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
