"""One way to show a stranger's string (archive text, folder names, server replies) on a terminal.

Archives, folders and HTTP servers are written by others: a class name holding ``ESC ] 0 ; ... BEL``
retitles the terminal, ``ESC [ 2 J`` clears it, a newline forges a second error line and a bidi
override reorders what the reader sees. :func:`printable` renders any such string as inert text,
one line, bounded in length; every error and every `inspect` field that interpolates such a
string goes through it (and the CLI's error printer applies it to whole messages, last).
"""

from __future__ import annotations

import unicodedata

DEFAULT_LIMIT = 200  # characters of one interpolated string; an error line stays readable
ELLIPSIS = "…"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# explicit bidi embeddings/overrides/isolates and marks (Trojan Source, CVE-2021-42574)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str | None:
    """The escaped form of one character, or None when it may be shown as is."""
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    if o < 0x20 or 0x7F <= o <= 0x9F:  # C0, DEL, C1 (0x9b is a one-byte CSI on some terminals)
        return f"\\x{o:02x}"
    if ch in _BIDI or 0xD800 <= o <= 0xDFFF or unicodedata.category(ch) in ("Zl", "Zp", "Cc"):
        return f"\\u{o:04x}"  # bidi controls, lone surrogates (unencodable), U+2028/U+2029 line breaks
    return None


def printable(value: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as one line of inert text: control characters escaped (``\\x1b``, ``\\n``), C1
    controls, bidi overrides and lone surrogates escaped, at most ``limit`` characters of the
    original kept (then ``…``). ``limit=None`` keeps everything (whole error messages)."""
    s = value if isinstance(value, str) else str(value)
    cut = limit is not None and len(s) > limit
    if cut:
        s = s[: max(limit - 1, 0)]  # type: ignore[operator]
    out = []
    for ch in s:
        esc = _escape(ch)
        out.append(ch if esc is None else esc)
    return "".join(out) + (ELLIPSIS if cut else "")


def is_printable(text: str) -> bool:
    """True when :func:`printable` would leave ``text`` unchanged (no limit)."""
    return all(_escape(ch) is None for ch in text)
