"""Strict JSON for archive members: no duplicate keys, no NaN or Infinity.

RFC 8259 leaves both to the reader; Python's json accepts them, so the manifest and
prompts.json readers pass these hooks to ``json.loads``. Each reader quotes keys its own way.
"""

from __future__ import annotations

from typing import Any, Callable

Pairs = list[tuple[str, Any]]


def duplicates_refused(quote: Callable[[str], str]) -> Callable[[Pairs], dict]:
    """An ``object_pairs_hook`` that raises ValueError("duplicate key <quote(key)>") on a repeated key."""
    def hook(pairs: Pairs) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {quote(k)}")
            out[k] = v
        return out

    return hook


def reject_constant(name: str) -> Any:
    """A ``parse_constant`` hook: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")
