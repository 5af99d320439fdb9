"""Turn bad input into one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer

from hellopack.archive import ArchiveError
from hellopack.errors import HellopackError

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2


def fail(message: str) -> "typer.Exit":
    print(f"hellopack: error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_BAD_INPUT)


def friendly_errors(fn: F) -> F:
    """Decorate a command: library errors become one stderr line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HellopackError as e:
            raise fail(str(e)) from None
        except ArchiveError as e:
            # "file": the archive file itself could not be read or written (e.g. a full disk): not damage.
            raise fail(e.defect if e.where == "file" else f"damaged archive: {e}") from None
        except KeyboardInterrupt:
            print("hellopack: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
