"""A small name -> factory registry whose unknown names list close matches (timm style)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, TypeVar

from hellopack.errors import HellopackError

T = TypeVar("T")


def unknown_name_error(kind: str, name: str, valid: Iterable[str], hint: str = "") -> HellopackError:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    msg = f"unknown {kind} '{name}'"
    if close:
        msg += f"; did you mean: {', '.join(close)}?"
    else:
        shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
        msg += f"; valid: {shown}"
    if hint:
        msg += f" ({hint})"
    return HellopackError(msg)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
