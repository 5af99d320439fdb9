"""Which classes arrive at which step: a seeded permutation or a user's order file, cut into steps.

Step sizes differ by at most one; when the classes do not divide evenly the
first steps get the extra class (100 classes in 3 steps: 34, 33, 33).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from hellopack.errors import HellopackError


def seeded_order(num_classes: int, seed: int) -> list[int]:
    """A permutation of 0..C-1 that depends only on ``seed``."""
    return torch.randperm(num_classes, generator=torch.Generator().manual_seed(int(seed))).tolist()


def read_order(path: str | Path, classes: Sequence[dict[str, Any]]) -> list[int]:
    """Class indices from a file with one class per line: its index, name or source id.

    Blank lines and lines starting with ``#`` are ignored. Every class of the
    archive must appear exactly once.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HellopackError(f"--order file '{p}' does not exist; pass a file listing one class per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HellopackError(f"--order file '{p}' cannot be read ({e}); pass a UTF-8 text file") from None
    by_key: dict[str, int] = {}
    for i, c in enumerate(classes):
        for key in (c.get("name"), c.get("source_id")):
            if key:
                by_key.setdefault(str(key), i)
    seen_at: dict[int, int] = {}
    order: list[int] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        token = raw.strip()
        if not token or token.startswith("#"):
            continue
        index = _lookup(token, by_key, len(classes))
        if index is None:
            raise HellopackError(f"--order file '{p}' line {lineno}: '{token}' is not a class of the archive "
                                 f"(use an index 0..{len(classes) - 1}, a class name or a source id)")
        if index in seen_at:
            raise HellopackError(f"--order file '{p}' line {lineno}: class {index} ('{classes[index].get('name')}') "
                                 f"is listed again (first on line {seen_at[index]}); list every class exactly once")
        seen_at[index] = lineno
        order.append(index)
    missing = [i for i in range(len(classes)) if i not in seen_at]
    if missing:
        names = ", ".join(f"{i} ({classes[i].get('name')})" for i in missing[:5])
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise HellopackError(f"--order file '{p}' lists {len(order)} of the archive's {len(classes)} classes; "
                             f"missing {names}{more}; list every class exactly once")
    return order


def _lookup(token: str, by_key: dict[str, int], num_classes: int) -> int | None:
    # a name wins over an index, so a class literally named "3" is still reachable
    if token in by_key:
        return by_key[token]
    if token.isdecimal() and int(token) < num_classes:
        return int(token)
    return None


def split_steps(order: Sequence[int], steps: int) -> list[list[int]]:
    """Cut ``order`` into ``steps`` consecutive groups whose sizes differ by at most one."""
    n = len(order)
    if not 1 <= steps <= n:
        raise HellopackError(f"--steps {steps} must be between 1 and the archive's {n} classes")
    size, extra = divmod(n, steps)
    groups, start = [], 0
    for s in range(steps):
        end = start + size + (1 if s < extra else 0)
        groups.append(list(order[start:end]))
        start = end
    return groups
