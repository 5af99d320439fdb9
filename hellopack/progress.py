"""Progress reporting without a UI dependency.

The library reports through a :class:`Reporter`; the CLI passes one that renders
with rich, tests pass :data:`NULL` or a recording one.
"""

from __future__ import annotations

from typing import Any


class Stage:
    """One long-running stage: call :meth:`advance` as work completes."""

    def advance(self, n: int = 1, **metrics: Any) -> None:  # noqa: D401 - protocol
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reporter:
    """Base reporter: does nothing. Subclass to render or record."""

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        return Stage()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        """Something the user should act on (shown even with --quiet); ``message`` has no "warning:" prefix."""
        self.info(f"warning: {message}")


class RecordingReporter(Reporter):
    """Keeps every stage (name, total, unit) and message: for tests and scripts that check progress."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None, str]] = []
        self.messages: list[str] = []

    @property
    def stage_names(self) -> list[str]:
        return [name for name, _, _ in self.stages]

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Stage:
        self.stages.append((name, total, unit))
        return Stage()

    def info(self, message: str) -> None:
        self.messages.append(message)


NULL = Reporter()
