"""Class names: the --classes file, display names from folder names, printable keys."""

from __future__ import annotations

import os
from pathlib import Path

from hellopack.data.types import ClassInfo
from hellopack.errors import HellopackError


def printable(name: str | bytes) -> str:
    """A str that is valid UTF-8 for any file name (undecodable bytes become \\xNN)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def display_name(source_id: str) -> str:
    """Folder names make CLIP prompts: 'golden_retriever' -> 'golden retriever'."""
    text = source_id.replace("_", " ").strip()
    return " ".join(text.split()) or source_id


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """One class name per line (line number = class index); trailing blank lines ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HellopackError(f"classes file '{path}' does not exist; "
                             f"pass a text file with one class name per line") from None
    except UnicodeDecodeError:
        raise HellopackError(f"classes file '{path}' is not UTF-8 text; "
                             f"save it as UTF-8, one class name per line") from None
    except OSError as e:
        raise HellopackError(f"cannot read classes file '{path}': {e.strerror or e}") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HellopackError(f"classes file '{path}' is empty; write one class name per line")
    for number, line in enumerate(lines, 1):
        if not line:
            raise HellopackError(f"classes file '{path}' has an empty line {number}; write one class name per line")
    return lines


def classes_from_names(names: list[str], source_ids: list[str] | None = None) -> list[ClassInfo]:
    ids = source_ids if source_ids is not None else [str(i) for i in range(len(names))]
    return [ClassInfo(i, n, s) for i, (n, s) in enumerate(zip(names, ids))]


def apply_classes_file(classes: list[ClassInfo], path: str | os.PathLike | None) -> list[ClassInfo]:
    """Replace display names with the file's (same count, same order); ids stay."""
    if path is None:
        return classes
    names = read_classes_file(path)
    if len(names) != len(classes):
        raise HellopackError(f"classes file '{path}' has {len(names)} names but the data has "
                             f"{len(classes)} classes; write one name per class, in class order")
    return [ClassInfo(c.index, n, c.source_id) for c, n in zip(classes, names)]
