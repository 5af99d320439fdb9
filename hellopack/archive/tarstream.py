"""images.tar: a deterministic ustar tar in WebDataset layout (KEY.cls then KEY.png|jpg|webp).

Writing uses :mod:`tarfile` header encoding. Reading is a strict streaming parser of exactly
what the writer emits (plain ustar, regular files, no path components), because the stdlib
reader silently accepts pax/GNU extensions, links and paths that an archive must never carry.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from hellopack.archive.format import IMAGE_EXTS, IMAGES, IMAGE_KEY_RE, MAX_CLS_BYTES, MAX_IMAGE_BYTES, ArchiveError

BLOCK = 512
_CLS_RE = re.compile(rb"0|[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class ImageRecord:
    key: str
    cls: int
    ext: str
    data: bytes


def _pad(n: int) -> int:
    return -n % BLOCK


def entry_header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, 0, 0o644, 0, 0, "", ""
    ti.type = tarfile.REGTYPE
    return ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict")


def tar_size(entries: Iterable[tuple[str, int]]) -> int:
    """Exact byte size of the tar holding files of these (name, size)."""
    return sum(BLOCK + n + _pad(n) for _, n in entries) + 2 * BLOCK


def tar_chunks(files: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """Yield the tar byte stream for (name, data) pairs in the given order."""
    for name, data in files:
        yield entry_header(name, len(data))
        yield data
        if _pad(len(data)):
            yield b"\0" * _pad(len(data))
    yield b"\0" * (2 * BLOCK)


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    parts, got = [], 0
    while got < n:
        b = src.read(n - got)
        if not b:
            raise ArchiveError(IMAGES, f"ends inside {what} (truncated tar)")
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _octal(field: bytes, what: str) -> int:
    s = field.rstrip(b"\0 ").lstrip(b" ")
    if not s or not all(48 <= c <= 55 for c in s):
        raise ArchiveError(IMAGES, f"tar header has an invalid {what} field")
    return int(s, 8)


def _entries(src: BinaryIO) -> Iterator[tuple[str, bytes]]:
    while True:
        hdr = _read_exact(src, BLOCK, "a tar header")
        if hdr == b"\0" * BLOCK:
            _read_exact(src, BLOCK, "the end-of-archive marker")  # second zero block
            if src.read(1):
                raise ArchiveError(IMAGES, "has data after the tar end-of-archive marker")
            return
        stored = hdr[148:156]
        if _octal(stored, "checksum") != sum(hdr[:148]) + 8 * 32 + sum(hdr[156:]):
            raise ArchiveError(IMAGES, "tar header checksum mismatch (corrupt)")
        if hdr[257:263] != b"ustar\0" or hdr[263:265] != b"00":
            raise ArchiveError(IMAGES, "tar entry is not plain ustar")
        raw_name = hdr[:100].split(b"\0", 1)[0]
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise ArchiveError(IMAGES, "tar entry name is not ASCII") from None
        shown = repr(name)[:80]
        if "/" in name or ".." in name or any(hdr[345:500]):
            raise ArchiveError(IMAGES, f"tar entry {shown} has a path (only plain file names are allowed)")
        if hdr[156:157] not in (b"0", b"\0"):
            raise ArchiveError(IMAGES, f"tar entry {shown} is not a regular file")
        size = _octal(hdr[124:136], "size")
        if size > MAX_IMAGE_BYTES:
            raise ArchiveError(IMAGES, f"tar entry {shown} is {size} bytes, over the {MAX_IMAGE_BYTES}-byte "
                                       "per-image limit")
        data = _read_exact(src, size, f"tar entry {shown}")
        _read_exact(src, _pad(size), f"tar entry {shown}")
        yield name, data


def iter_records(src: BinaryIO, num_classes: int) -> Iterator[ImageRecord]:
    """Parse the tar stream into (key, cls, ext, data); every defect is an ArchiveError."""
    pending: tuple[str, int] | None = None
    last_key = ""
    for name, data in _entries(src):
        key, dot, ext = name.partition(".")
        shown = repr(name)[:80]
        if not dot or IMAGE_KEY_RE.fullmatch(key) is None or ext not in ("cls",) + IMAGE_EXTS:
            raise ArchiveError(IMAGES, f"tar entry {shown} is not KEY.cls or KEY.png|jpg|webp")
        if ext == "cls":
            if pending is not None:
                raise ArchiveError(IMAGES, f"sample {pending[0]!r} has a .cls but no image")
            if key <= last_key:
                raise ArchiveError(IMAGES, f"sample {key!r} is duplicated or out of key order")
            if len(data) > MAX_CLS_BYTES or _CLS_RE.fullmatch(data) is None or int(data) >= num_classes:
                raise ArchiveError(IMAGES, f"{key}.cls is not a class index in 0..{num_classes - 1}")
            pending = (key, int(data))
            last_key = key
            continue
        if pending is None or pending[0] != key:
            raise ArchiveError(IMAGES, f"image {shown} has no {key}.cls before it")
        yield ImageRecord(key, pending[1], ext, data)
        pending = None
    if pending is not None:
        raise ArchiveError(IMAGES, f"sample {pending[0]!r} has a .cls but no image")
