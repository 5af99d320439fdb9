"""Turn bad input into one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer

from hellopack.archive import ArchiveError
from hellopack.errors import HellopackError
from hellopack.textsafe import printable

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2
# The whole error line, last line of defence: messages quote archive, folder and server strings.
MAX_ERROR_CHARS = 4000


def fail(message: str) -> "typer.Exit":
    """Print one stderr line: control characters escaped (a stranger's string cannot drive the terminal
    or forge a second line), at most MAX_ERROR_CHARS characters."""
    print(f"hellopack: error: {printable(message, limit=MAX_ERROR_CHARS)}", file=sys.stderr)
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
