"""Fuzz the archive reader with mutated valid archives (issue 6, item 1).

    python benchmarks/fuzz_archive.py [--cases 10000] [--seed 0] [--timeout-per-case 5]
                                      [--mem-cap-mib 1024] [--cli-every 10] [--subprocess 8]

Every case starts from a valid archive (spec/vectors/valid-minimal, valid-int8 and a
"rich" variant with fidelity, an extra member and jpg/webp images) and applies one mutator:
raw byte damage (bit flips, truncation at member boundaries and random offsets, inserted,
deleted and duplicated ranges, header fields) or a structured one that re-serialises the
archive with every hash, size and offset fixed up (so the damage reaches the deep checks):
duplicated, reordered, renamed, dropped members; oversized, negative and wrongly typed
table fields; wrongly typed manifest keys; hostile JSON; zstd frames that lie about their
size or expand past it; huge shapes, bad offsets and NaN/Inf in lora.safetensors; '..',
symlinks, devices, bad sizes and out-of-range .cls in images.tar; broken images.

Each case runs the library (open_archive, verify(decode_images=True), iter_images,
read_lora, read_prompts, decode_lora) and, for every --cli-every'th case, the CLI
`hellopack inspect ARCHIVE --verify` in-process; at the end a few cases run the CLI as a
subprocess. A case passes when it ends in ArchiveError (CLI: exit 2 and exactly one stderr
line carrying the library's message) or, for mutators that may yield a valid archive, is
accepted consistently. It fails on any other exception, a timeout (SIGALRM per case; a
faulthandler backstop kills the process on a hang inside C code), a file written anywhere
(audit hook on open/rename/remove/mkdir/...; the reader must not write at all), or an
ArchiveError whose message is not one short line. Memory is capped with RLIMIT_AS for the
whole process (a MemoryError is an escaped exception); peak RSS is reported.

Consumers (issue 13, --drivers, default train,grid; benchmarks/fuzz_drivers.py): on every case
that open_archive accepts, `hellopack train` (one step, --labels hard, convnet, CPU) and
`hellopack inspect --grid` run in-process; an unclean exit (a traceback, an exit code other than
0/2, control characters or more than one line on stderr, a file written outside the output
folder, or anything left in it after exit 2) fails the case. With drivers the memory cap is
RLIMIT_DATA (torch alone maps several GB of address space).

Exit status: 0 when no case failed, 1 otherwise. The same mutators drive
tests/test_fuzz_archive.py (hypothesis).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import faulthandler
import hashlib
import io
import json
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import zstandard

from hellopack.archive import ArchiveError, decode_lora, open_archive
from hellopack.archive.format import HEADER_SIZE, IMAGES, LORA, MAGIC, MAX_MANIFEST_BYTES, PROMPTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_drivers as fd  # noqa: E402  (beside this script)

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "spec" / "vectors"
BASE_FILES = ("valid-minimal.hellopack", "valid-int8.hellopack")

ERROR, ANY = "error", "any"  # what a mutation must lead to: an ArchiveError, or either outcome
MiB = 1 << 20

# ================================================================================================
# A re-serialisable model of an archive
# ================================================================================================

DROP = object()  # a member-table field set to DROP is removed from the entry


@dataclass
class Member:
    name: Any
    content: bytes  # decoded bytes
    encoding: str = "zstd"
    stored: bytes | None = None  # stored bytes; None: encode ``content``
    fields: dict = field(default_factory=dict)  # table entry overrides, applied after the fix-ups

    def set_content(self, data: bytes) -> None:
        self.content, self.stored = data, None


@dataclass
class Doc:
    manifest: dict  # everything but "members"
    members: list[Member]
    magic: bytes = MAGIC
    major: int = 1
    minor: int = 0
    flags: int = 0
    manifest_length: int | None = None  # header override (None: the real length)
    manifest_sha: bytes | None = None  # header override (None: the real hash)
    manifest_edit: Callable[[bytes], bytes] | None = None  # text edit; the header hash still matches
    tail: bytes = b""

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


_FRAMES: dict[tuple, bytes] = {}


def zstd_frame(data: bytes, *, content_size: bool = True, checksum: bool = True, level: int = 3) -> bytes:
    key = (hashlib.sha1(data).digest(), len(data), content_size, checksum, level)
    if key not in _FRAMES:
        if len(_FRAMES) > 4096:
            _FRAMES.clear()
        c = zstandard.ZstdCompressor(level=level, write_content_size=content_size, write_checksum=checksum,
                                     write_dict_id=False)
        _FRAMES[key] = c.compress(data)
    return _FRAMES[key]


def dumps_manifest(m: dict) -> bytes:
    """Canonical JSON; ASCII escapes when a string cannot be UTF-8 (lone surrogates)."""
    try:
        return json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(m, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def serialise(doc: Doc) -> bytes:
    """Lay members out back to back, fill offsets/sizes/hashes, then sign the manifest."""
    table, blobs, offset = [], [], 0
    for mem in doc.members:
        stored = mem.stored
        if stored is None:
            stored = zstd_frame(mem.content) if mem.encoding == "zstd" else mem.content
        entry = {"name": mem.name, "offset": offset, "stored_size": len(stored), "size": len(mem.content),
                 "sha256": hashlib.sha256(mem.content).hexdigest(),
                 "stored_sha256": hashlib.sha256(stored).hexdigest(), "encoding": mem.encoding}
        for k, v in mem.fields.items():
            if v is DROP:
                entry.pop(k, None)
            else:
                entry[k] = v
        table.append(entry)
        blobs.append(stored)
        offset += len(stored)
    raw = dumps_manifest({**doc.manifest, "members": table})
    if doc.manifest_edit is not None:
        raw = doc.manifest_edit(raw)
    length = len(raw) if doc.manifest_length is None else doc.manifest_length
    sha = hashlib.sha256(raw).digest() if doc.manifest_sha is None else doc.manifest_sha
    header = struct.pack("<8sHHIQ32s", doc.magic, doc.major, doc.minor, doc.flags, length, sha)
    return header + raw + b"".join(blobs) + doc.tail


def parse(blob: bytes) -> Doc:
    """Model of a *valid* archive (the seeds); stored bytes are kept so unchanged members stay identical."""
    magic, major, minor, flags, mlen, _ = struct.unpack_from("<8sHHIQ32s", blob)
    manifest = json.loads(blob[HEADER_SIZE:HEADER_SIZE + mlen])
    data = blob[HEADER_SIZE + mlen:]
    members = []
    for e in manifest.pop("members"):
        stored = data[e["offset"]:e["offset"] + e["stored_size"]]
        content = zstandard.ZstdDecompressor().decompress(stored) if e["encoding"] == "zstd" else stored
        members.append(Member(e["name"], content, e["encoding"], stored))
    return Doc(manifest, members, magic, major, minor, flags)


# ---- safetensors ------------------------------------------------------------------------------

def st_split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<Q", data)[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_join(header: dict | bytes, body: bytes, *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


# ---- ustar -------------------------------------------------------------------------------------

@dataclass
class Entry:
    name: bytes
    data: bytes
    typeflag: bytes = b"0"
    linkname: bytes = b""
    magic: bytes = b"ustar\x0000"
    prefix: bytes = b""
    mode: bytes = b"0000644"
    uid: bytes = b"0000000"
    mtime: bytes = b"00000000000"
    size_field: bytes | None = None  # raw 12-byte size field (None: octal of len(data))
    checksum_delta: int = 0  # added to the correct checksum
    pad: bool = True  # pad data to 512


def tar_header(e: Entry) -> bytes:
    h = bytearray(512)

    def put(off: int, width: int, value: bytes) -> None:
        h[off:off + width] = value[:width].ljust(width, b"\0")

    put(0, 100, e.name)
    put(100, 8, e.mode + b"\0")
    put(108, 8, e.uid + b"\0")
    put(116, 8, b"0000000\0")
    put(124, 12, e.size_field if e.size_field is not None else b"%011o\0" % len(e.data))
    put(136, 12, e.mtime + b"\0")
    h[148:156] = b" " * 8
    h[156:157] = e.typeflag[:1] or b"\0"
    put(157, 100, e.linkname)
    put(257, 8, e.magic)
    put(345, 155, e.prefix)
    h[148:156] = b"%06o\0 " % ((sum(h) + e.checksum_delta) % 0o1000000)
    return bytes(h)


def tar_build(entries: list[Entry], end: bytes = b"\0" * 1024) -> bytes:
    out = []
    for e in entries:
        out += [tar_header(e), e.data, b"\0" * (-len(e.data) % 512 if e.pad else 0)]
    return b"".join(out) + end


def tar_parse(data: bytes) -> list[Entry]:
    """Entries of a valid (writer-made) tar."""
    out, pos = [], 0
    while data[pos:pos + 512] != b"\0" * 512:
        h = data[pos:pos + 512]
        size = int(h[124:136].rstrip(b"\0 "), 8)
        out.append(Entry(h[:100].rstrip(b"\0"), data[pos + 512:pos + 512 + size]))
        pos += 512 + size + (-size % 512)
    return out


# ---- images ------------------------------------------------------------------------------------

def image_bytes(w: int, h: int, mode: str = "RGB", fmt: str = "PNG", color: Any = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if color is None:
        color = {"RGB": (200, 30, 60), "RGBA": (1, 2, 3, 4), "CMYK": (1, 2, 3, 4)}.get(mode, 7)
    im = Image.new(mode, (w, h), color)
    im.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def png_with_ihdr(w: int, h: int) -> bytes:
    """A 4x4 RGB PNG whose IHDR (with a correct CRC) claims w x h pixels."""
    png = bytearray(image_bytes(4, 4))
    png[16:24] = struct.pack(">II", w, h)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


# ================================================================================================
# Seeds
# ================================================================================================

@dataclass
class Base:
    name: str
    blob: bytes
    doc: Doc
    num_classes: int
    image_size: int
    boundaries: list[int]  # offsets where a part of the file starts or ends

    def fresh(self) -> Doc:
        return copy.deepcopy(self.doc)


def _rich_variant(blob: bytes) -> bytes:
    """valid-minimal plus full fidelity, an extra member and jpg/webp images of 8 px (the smallest a
    student takes, so `train` runs a step on it)."""
    doc = parse(blob)
    doc.manifest["fidelity"] = {"agreement": 0.5, "kl": 0.25, "projector_top1": 0.5, "teacher_top1": 1.0,
                                "images": 2}
    doc.members.insert(2, Member("notes.txt", b"extra member: readers check it and ignore it\n"))
    tar = doc.member(IMAGES)
    entries = tar_parse(tar.content)
    size = 8
    doc.manifest["images"]["size"] = doc.manifest["recipe"]["val_resize"] = size
    entries[1] = Entry(entries[1].name, image_bytes(size, size, fmt="PNG"))
    entries[1] = Entry(entries[1].name.replace(b".png", b".jpg"), image_bytes(size, size, fmt="JPEG"))
    entries[3] = Entry(entries[3].name.replace(b".png", b".webp"), image_bytes(size, size, fmt="WEBP"))
    tar.set_content(tar_build(entries))
    return serialise(doc)


def load_bases() -> list[Base]:
    blobs = [(n.removesuffix(".hellopack"), (VECTORS / n).read_bytes()) for n in BASE_FILES]
    blobs.append(("valid-rich", _rich_variant(blobs[0][1])))
    out = []
    for name, blob in blobs:
        doc = parse(blob)
        mlen = struct.unpack_from("<Q", blob, 16)[0]
        d = HEADER_SIZE + mlen
        bounds = {0, 8, 16, 24, HEADER_SIZE, d}
        off = d
        for m in doc.members:
            off += len(m.stored)
            bounds.add(off)
        out.append(Base(name, blob, doc, len(doc.manifest["classes"]), doc.manifest["images"]["size"],
                        sorted(bounds)))
    return out


# ================================================================================================
# Mutators. Raw ones take and return bytes; structured ones edit a Doc in place.
# Each returns the expectation: ERROR (must be refused) or ANY (may be valid).
# ================================================================================================

JSON_POOL: list[Any] = [
    None, True, False, 0, 1, -1, 2, 255, 2**31, 2**63 - 1, 2**63, 2**64, -2**63, 10**30, 0.5, -0.0, 1e308,
    "", "x", "0", "1", "true", "null", "[/x]", "[bold]", "\u202e", "\ud800", "a" * 300, "../../etc/passwd",
    [], [1], [1, 2, 3], ["x"], [None], {}, {"a": 1}, [[[]]], {"": {}},
]
INTS = [-1, -2**63, 2**63 - 1, 2**63, 2**64, 2**64 + 5, 0, 1, 2**40, 64 * 2**30 + 1, 256 * 2**30 + 1]


def _pick(rng: random.Random, pool: list) -> Any:
    return copy.deepcopy(rng.choice(pool))


def _differs(a: Any, b: Any) -> bool:
    return type(a) is not type(b) or a != b


# ---- raw byte mutators (every byte of an archive is covered by a check, so all must fail) -----

def raw_bitflip(b: Base, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(b.blob)
    for pos in rng.sample(range(len(out)), rng.randint(1, 8)):
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out), ERROR


def raw_byteset(b: Base, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(b.blob)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out))
        choices = [v for v in (0, 0xFF, 0x7F, 0x80, 0x20, 0x30, 0x39, rng.randrange(256)) if v != out[pos]]
        out[pos] = rng.choice(choices)
    return bytes(out), ERROR


def raw_truncate(b: Base, rng: random.Random) -> tuple[bytes, str]:
    return b.blob[:rng.randrange(len(b.blob))], ERROR


def raw_truncate_boundary(b: Base, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.choice(b.boundaries) + rng.choice((-1, 0, 0, 1))
    return b.blob[:min(max(cut, 0), len(b.blob) - 1)], ERROR


def raw_insert(b: Base, rng: random.Random) -> tuple[bytes, str]:
    pos = rng.randrange(len(b.blob) + 1)
    return b.blob[:pos] + rng.randbytes(rng.randint(1, 16)) + b.blob[pos:], ERROR


def raw_delete(b: Base, rng: random.Random) -> tuple[bytes, str]:
    pos = rng.randrange(len(b.blob))
    return b.blob[:pos] + b.blob[pos + rng.randint(1, 64):], ERROR


def raw_duplicate_range(b: Base, rng: random.Random) -> tuple[bytes, str]:
    start = rng.randrange(len(b.blob))
    chunk = b.blob[start:start + rng.randint(1, 512)]
    pos = rng.choice(b.boundaries + [rng.randrange(len(b.blob))])
    return b.blob[:pos] + chunk + b.blob[pos:], ERROR


def raw_append(b: Base, rng: random.Random) -> tuple[bytes, str]:
    extra = rng.choice([b"\0", b"\0" * 1024, rng.randbytes(rng.randint(1, 100)), b.blob])
    return b.blob + extra, ERROR


def raw_header_field(b: Base, rng: random.Random) -> tuple[bytes, str]:
    fields = {"major": (8, "<H", [0, 2, 0xFFFF]), "minor": (10, "<H", [1, 7, 0xFFFF]),
              "flags": (12, "<I", [1, 2**31, 0xFFFFFFFF]),
              "manifest_length": (16, "<Q", [0, 1, 2**63, 2**64 - 1, MAX_MANIFEST_BYTES + 1, len(b.blob),
                                            len(b.blob) - HEADER_SIZE])}
    off, fmt, values = fields[rng.choice(sorted(fields))]
    cur = struct.unpack_from(fmt, b.blob, off)[0]
    mlen = struct.unpack_from("<Q", b.blob, 16)[0]
    if fmt == "<Q":
        values = values + [mlen - 1, mlen + 1, mlen + rng.randint(2, 600)]
    value = rng.choice([v for v in values if v != cur])
    return b.blob[:off] + struct.pack(fmt, value) + b.blob[off + struct.calcsize(fmt):], ERROR


def raw_swap_members(b: Base, rng: random.Random) -> tuple[bytes, str]:
    """Swap two members' stored bytes but keep the table: sizes or hashes no longer match."""
    mlen = struct.unpack_from("<Q", b.blob, 16)[0]
    d = HEADER_SIZE + mlen
    spans, off = [], d
    for m in b.doc.members:
        spans.append((off, off + len(m.stored)))
        off += len(m.stored)
    i, j = sorted(rng.sample(range(len(spans)), 2))
    (a0, a1), (b0, b1) = spans[i], spans[j]
    blob = b.blob
    return blob[:a0] + blob[b0:b1] + blob[a1:b0] + blob[a0:a1] + blob[b1:], ERROR


# ---- member table ------------------------------------------------------------------------------

HOSTILE_NAMES: list[Any] = [
    "../evil", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "C:\\x", ".hidden", "x" * 129, "images.tar/..",
    "prompts.json\x00", "ünï", " lead", "images.TAR", "-dash", "a b", 1, None, ["x"], {"a": 1}, True,
]


def member_duplicate(d: Doc, rng: random.Random, b: Base) -> str:
    m = rng.choice(d.members)
    d.members.insert(rng.randrange(len(d.members) + 1), copy.deepcopy(m))
    return ERROR


def member_drop(d: Doc, rng: random.Random, b: Base) -> str:
    m = d.members.pop(rng.randrange(len(d.members)))
    return ERROR if m.name in (PROMPTS, LORA, IMAGES) else ANY


def member_reorder(d: Doc, rng: random.Random, b: Base) -> str:
    rng.shuffle(d.members)
    return ANY  # any order is valid as long as the layout follows the table


def member_rename(d: Doc, rng: random.Random, b: Base) -> str:
    m = rng.choice(d.members)
    others = [x.name for x in d.members if x is not m]
    return _rename(d, m, _pick(rng, HOSTILE_NAMES + others + ["zz-extra", "prompts.json.bak"]))


def _rename(d: Doc, m: Member, new: Any) -> str:
    others = [x.name for x in d.members if x is not m]
    required = m.name in (PROMPTS, LORA, IMAGES)
    if not _differs(new, m.name):
        return ANY
    m.name = new
    if new in others:
        return ERROR  # duplicate
    if isinstance(new, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", new):
        return ERROR if required else ANY
    return ERROR


def member_add(d: Doc, rng: random.Random, b: Base) -> str:
    name = _pick(rng, ["zz-extra", "a", "notes-2.bin", "Z" * 128] + HOSTILE_NAMES)
    content = rng.choice([b"", b"x", rng.randbytes(rng.randint(1, 2000)), b"\0" * 100_000])
    m = Member(name, content, rng.choice(["zstd", "none"]))
    d.members.insert(rng.randrange(len(d.members) + 1), m)
    ok = isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) is not None
    return ANY if ok and name not in [x.name for x in d.members if x is not m] else ERROR


TABLE_FIELDS = ("offset", "stored_size", "size", "sha256", "stored_sha256", "encoding", "name")


def member_field(d: Doc, rng: random.Random, b: Base) -> str:
    """Oversized, negative, off-by-one and wrongly typed table fields (everything else fixed up)."""
    m = rng.choice(d.members)
    key = rng.choice(TABLE_FIELDS + ("unknown",))
    stored = m.stored if m.stored is not None else zstd_frame(m.content)
    current = {"offset": None, "stored_size": len(stored), "size": len(m.content),
               "sha256": hashlib.sha256(m.content).hexdigest(),
               "stored_sha256": hashlib.sha256(stored).hexdigest(), "encoding": m.encoding, "name": m.name}
    if key == "unknown":
        m.fields["x-future"] = _pick(rng, JSON_POOL)
        return ANY
    if rng.random() < 0.1:
        m.fields[key] = DROP
        return ERROR
    if key in ("offset", "stored_size", "size"):
        base = current[key] if current[key] is not None else 0
        pool = INTS + [base - 1, base + 1, base * 2 + 1, 1.0, "12", True, None, [], {}]
    elif key in ("sha256", "stored_sha256"):
        h = current[key]
        pool = ["0" * 64, h.upper(), h[:-1], h + "0", "g" * 64, "", 0, None, ["x"], h[::-1]]
    elif key == "encoding":
        pool = ["none", "gzip", "", "ZSTD", None, 0, ["zstd"]]
    else:
        return _rename(d, m, _pick(rng, HOSTILE_NAMES))
    value = _pick(rng, pool)
    if key == "offset":
        # the real offset is only known at layout time: compare against it then
        m.fields[key] = value
        return ANY if value == 0 and d.members.index(m) == 0 and type(value) is int else ERROR
    if not _differs(value, current[key]):
        return ANY
    m.fields[key] = value  # a zstd member declared "none" fails too: its stored bytes are a frame
    return ERROR


def member_encoding_none(d: Doc, rng: random.Random, b: Base) -> str:
    m = rng.choice(d.members)
    m.encoding, m.stored = "none", None
    return ANY  # valid: stored raw


# ---- zstd frames -------------------------------------------------------------------------------

_BOMBS: dict[tuple[int, bool], bytes] = {}


def bomb_frame(n: int, content_size: bool = True) -> bytes:
    if (n, content_size) not in _BOMBS:
        _BOMBS[(n, content_size)] = zstd_frame(b"\0" * n, content_size=content_size, level=1)
    return _BOMBS[(n, content_size)]


def _frame_layout(frame: bytes) -> tuple[int, bool, int, int]:
    """(FHD byte, single segment, FCS offset, FCS length) of a zstd frame."""
    fhd = frame[4]
    single = bool(fhd >> 5 & 1)
    fcs_len = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    dict_len = (0, 1, 2, 4)[fhd & 3]
    return fhd, single, 5 + (0 if single else 1) + dict_len, fcs_len


def frame_bomb(d: Doc, rng: random.Random, b: Base) -> str:
    """A frame that expands far past a small declared size (several ways of lying about it)."""
    m = rng.choice(d.members)
    n = rng.choice([1 * MiB, 4 * MiB, 16 * MiB])
    small = rng.choice([0, 1, 100, len(m.content)])
    how = rng.choice(["declared-small", "no-content-size", "fcs-lies", "fcs-lies-none-size"])
    frame = bomb_frame(n, content_size=how != "no-content-size")
    if how.startswith("fcs-lies"):
        _, _, pos, length = _frame_layout(frame)
        value = small - 256 if length == 2 else small
        if value < 0 or value >= 1 << (8 * length):
            value = 0
        frame = frame[:pos] + value.to_bytes(length, "little") + frame[pos + length:]
    m.stored = frame
    m.encoding = "zstd"
    m.fields["size"] = small
    return ERROR


def frame_edit(d: Doc, rng: random.Random, b: Base) -> str:
    """Edit a real member frame's header/blocks; stored_sha256 is recomputed so the frame checks run."""
    m = rng.choice([x for x in d.members if x.encoding == "zstd"])
    frame = bytearray(m.stored if m.stored is not None else zstd_frame(m.content))
    fhd, single, fcs_pos, fcs_len = _frame_layout(bytes(frame))
    how = rng.choice(["reserved", "dict", "no-checksum", "fcs+1", "fcs-1", "second-frame", "skippable",
                      "cut-checksum", "bad-checksum", "reserved-block", "window", "magic"])
    expect = ERROR
    if how == "reserved":
        frame[4] |= 0x08
    elif how == "dict":
        frame[4] |= 0x01
    elif how == "no-checksum":
        frame[4] &= ~0x04
    elif how in ("fcs+1", "fcs-1"):
        v = int.from_bytes(frame[fcs_pos:fcs_pos + fcs_len], "little") + (1 if how == "fcs+1" else -1)
        v %= 1 << (8 * fcs_len)
        frame[fcs_pos:fcs_pos + fcs_len] = v.to_bytes(fcs_len, "little")
    elif how == "second-frame":
        frame += zstd_frame(b"more")
    elif how == "skippable":
        frame = bytearray(b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"skip") + frame
    elif how == "cut-checksum":
        del frame[-4:]
    elif how == "bad-checksum":
        frame[-1] ^= 0xFF
    elif how == "reserved-block":
        pos = fcs_pos + fcs_len
        frame[pos] |= 0x06  # block type 3
    elif how == "window":
        if single:
            return ANY
        frame[5] = rng.choice([0xF8, 0x00, 0x88])  # window descriptor; content still decodes
        expect = ANY
    else:
        frame[0] ^= 0x01
    m.stored, m.encoding = bytes(frame), "zstd"
    return expect


def big_member(d: Doc, rng: random.Random, b: Base) -> str:
    """A correct but large member (zeros, declared size honest): streamed and capped, memory bounded."""
    n = rng.choice([1 * MiB, 8 * MiB, 32 * MiB])
    target = rng.choice(["extra", PROMPTS, LORA, IMAGES])
    content = b"\0" * n
    if target == "extra":
        d.members.insert(rng.randrange(len(d.members) + 1), Member("big.bin", b""))
        m = d.member("big.bin")
    else:
        m = d.member(target)
    m.content, m.stored, m.encoding = content, bomb_frame(n), "zstd"
    return ANY if target == "extra" else ERROR


# ---- manifest ----------------------------------------------------------------------------------

# Section 2 of spec/FORMAT.md, written out independently of the reader's schema.
SPEC_TYPES: dict[tuple, str] = {
    ("format",): "hellopack", ("format_version",): "version", ("tool",): "obj", ("dataset",): "obj",
    ("classes",): "classes", ("images",): "obj", ("base",): "obj", ("lora",): "obj", ("head",): "obj",
    ("recipe",): "obj", ("seeds",): "obj",
    ("tool", "name"): "str", ("tool", "version"): "str",
    ("dataset", "name"): "str", ("dataset", "recipe"): "str", ("dataset", "source"): "str",
    ("dataset", "train_images"): "int",
    ("classes", 0, "index"): "zero", ("classes", 0, "name"): "str", ("classes", 0, "source_id"): "str",
    ("classes", 1, "index"): "one", ("classes", 1, "name"): "str",
    ("images", "count"): "int", ("images", "ipc"): "int", ("images", "factor"): "pos", ("images", "size"): "pos",
    ("images", "format"): "imgfmt", ("images", "mean"): "rgb", ("images", "std"): "rgb",
    ("base", "kind"): "open_clip", ("base", "name"): "str", ("base", "pretrained"): "str|null",
    ("base", "custom"): "bool", ("base", "fingerprint"): "fingerprint", ("base", "bytes"): "int|null",
    ("base", "image_size"): "pos",
    ("lora", "dtype"): "dtype", ("lora", "rank_encoder"): "int", ("lora", "rank_head"): "int",
    ("lora", "parameters"): "int", ("lora", "targets"): "list",
    ("lora", "targets", 0, "name"): "nonempty", ("lora", "targets", 0, "kind"): "kind",
    ("lora", "targets", 0, "rank"): "pos", ("lora", "targets", 0, "alpha"): "num",
    ("lora", "targets", 0, "in_features"): "pos", ("lora", "targets", 0, "out_features"): "pos",
    ("lora", "targets", 0, "kernel_size"): "kernel",
    ("head", "init"): "str", ("head", "logit_scale"): "num", ("head", "embed_dim"): "pos",
    ("recipe", "epochs"): "pos", ("recipe", "optimizer"): "str", ("recipe", "lr"): "num",
    ("recipe", "weight_decay"): "num", ("recipe", "schedule"): "str", ("recipe", "batch_size"): "pos",
    ("recipe", "loss"): "str", ("recipe", "beta"): "num", ("recipe", "temperature"): "num",
    ("recipe", "mix"): "str", ("recipe", "patch_shuffle"): "bool",
    ("seeds", "build"): "int",
    ("build",): "obj?", ("fidelity",): "obj|null",
    ("fidelity", "agreement"): "num", ("fidelity", "kl"): "num", ("fidelity", "images"): "int",
}


def _is_int(v: Any) -> bool:
    return type(v) is int and 0 <= v < 2**63


def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and v == v and v not in (float("inf"), float("-inf"))


def fits(tag: str, v: Any) -> bool:
    """Does ``v`` have the type spec/FORMAT.md section 2 requires?"""
    return {
        "hellopack": lambda: v == "hellopack", "version": lambda: v == [1, 0] and all(type(x) is int for x in v),
        "obj": lambda: isinstance(v, dict), "obj?": lambda: isinstance(v, dict),
        "obj|null": lambda: v is None or isinstance(v, dict), "list": lambda: isinstance(v, list),
        "classes": lambda: False, "str": lambda: isinstance(v, str), "nonempty": lambda: isinstance(v, str) and v != "",
        "int": lambda: _is_int(v), "pos": lambda: _is_int(v) and v >= 1, "num": lambda: _is_num(v),
        "zero": lambda: type(v) is int and v == 0, "one": lambda: type(v) is int and v == 1,
        "bool": lambda: type(v) is bool, "str|null": lambda: v is None or isinstance(v, str),
        "int|null": lambda: v is None or _is_int(v),
        "rgb": lambda: isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v),
        "imgfmt": lambda: v in ("png", "jpg", "webp"), "open_clip": lambda: v == "open_clip",
        "dtype": lambda: False, "kind": lambda: False,
        "fingerprint": lambda: isinstance(v, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", v) is not None,
        "kernel": lambda: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v),
    }[tag]()


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> None:
    _get(obj, path[:-1])[path[-1]] = value


def manifest_wrong_type(d: Doc, rng: random.Random, b: Base) -> str:
    """A required key gets a value of the wrong type (per the spec's table), or disappears."""
    paths = [p for p in SPEC_TYPES if _has(d.manifest, p)]
    path = rng.choice(paths)
    tag = SPEC_TYPES[path]
    if path == ("fidelity",) or tag == "obj?":
        return _wrong_optional(d, rng, path)
    if rng.random() < 0.15 and not path[-1] in (0, 1) and path[0] != "fidelity":
        del _get(d.manifest, path[:-1])[path[-1]]
        return ERROR
    if tag == "kernel" and _get(d.manifest, path[:-1]).get("kind") == "linear":
        value = _pick(rng, [[0, 1], [1], "3", 3, [1.0, 1.0], [True, True]])
    else:
        pool = [v for v in JSON_POOL if not fits(tag, v)]
        pool += {"dtype": ["fp32", "FP16", "bf16"], "kind": ["conv3d", "Linear"], "version": [[1], [1, 0, 0]],
                 "fingerprint": ["sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 32]}.get(tag, [])
        value = _pick(rng, pool)
    _set(d.manifest, path, value)
    return ERROR


def _wrong_optional(d: Doc, rng: random.Random, path: tuple) -> str:
    value = _pick(rng, JSON_POOL + [{"kl": 1.0}, {"agreement": "high"}, {"images": -1}])
    _set(d.manifest, path, value)
    if path == ("fidelity",):
        if value is None:
            return ANY
        if not isinstance(value, dict):
            return ERROR
        bad = {k: v for k, v in value.items() if k in ("agreement", "kl", "projector_top1", "teacher_top1", "images")
               and not fits("int" if k == "images" else "num", v)}
        return ERROR if bad else ANY
    return ANY if isinstance(value, dict) else ERROR


def _has(obj: Any, path: tuple) -> bool:
    try:
        _get(obj, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def _nodes(obj: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(obj, dict):
        for k in obj:
            yield from _nodes(obj[k], path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def manifest_tree(d: Doc, rng: random.Random, b: Base) -> str:
    """Random structural edit anywhere in the manifest (outcome not predicted: must just not escape)."""
    path = rng.choice([p for p in _nodes(d.manifest) if p])
    parent = _get(d.manifest, path[:-1])
    op = rng.choice(["replace", "replace", "delete", "add-key", "dup-item", "huge-int", "long-string"])
    if op == "replace":
        parent[path[-1]] = _pick(rng, JSON_POOL)
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add-key" and isinstance(_get(d.manifest, path), dict):
        _get(d.manifest, path)["x-" + rng.choice(["a", "future", "\u00e9"])] = _pick(rng, JSON_POOL)
    elif op == "dup-item" and isinstance(parent, list):
        parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
    elif op == "huge-int":
        parent[path[-1]] = rng.choice([2**63, 2**64 * 7, -(2**70), 10**200])
    else:
        parent[path[-1]] = rng.choice(["x" * 100_000, "\u0000" * 10, "é" * 1000, "[/]" * 5])
    return ANY


_DISPLAY_STRINGS = ["[/x]", "[bold]unclosed", "[link=file:///etc/passwd]x[/link]", "\ud800", "\x1b[31mred", "\r\n",
                    "\u202eevil", "x" * 5000, "", "{}", "%s%n", "\x00", "two\nlines"]


def manifest_display(d: Doc, rng: random.Random, b: Base) -> str:
    """Valid types, hostile text: strings `inspect` prints (rich markup, surrogates, escapes) and partial fidelity."""
    m = d.manifest
    spots = [("classes", 0, "name"), ("classes", 1, "name"), ("dataset", "name"), ("dataset", "recipe"),
             ("base", "name"), ("tool", "version"), ("recipe", "optimizer"), ("recipe", "loss"), ("fidelity",),
             ("lora", "targets", 0, "name"), ("lora", "targets", -1, "name")]  # target names reach error messages
    path = rng.choice(spots)
    if path == ("fidelity",):
        keys = ["agreement", "kl", "projector_top1", "teacher_top1", "images"]
        m["fidelity"] = {k: (2 if k == "images" else 0.5) for k in rng.sample(keys, rng.randint(1, 4))}
    else:
        _set(m, path, rng.choice(_DISPLAY_STRINGS))
    return ANY


_TEXT_EDITS = ("nan", "inf", "-inf", "dup-key", "non-utf8", "bom", "trailing", "deep", "huge-digits", "1e999",
               "truncate", "empty", "null", "array", "whitespace", "surrogate", "utf16", "comment")


def manifest_text(d: Doc, rng: random.Random, b: Base) -> str:
    """Hostile JSON text (the header hash is recomputed, so the JSON parser sees it)."""
    how = rng.choice(_TEXT_EDITS)
    expect = ANY if how in ("whitespace", "surrogate", "1e999") else ERROR

    def edit(raw: bytes) -> bytes:
        if how in ("nan", "inf", "-inf"):
            token = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}[how]
            return raw.replace(b'"logit_scale":100.0', b'"logit_scale":' + token, 1)
        if how == "dup-key":
            return b'{"format":"hellopack",' + raw[1:]
        if how == "non-utf8":
            return raw.replace(b"red checker", b"red \xff\xfeecker", 1)
        if how == "bom":
            return b"\xef\xbb\xbf" + raw
        if how == "trailing":
            return raw + rng.choice([b"x", b"{}", b"\0"])
        if how == "deep":
            depth = rng.choice([1000, 100_000])
            return raw[:-1] + b',"x-deep":' + b"[" * depth + b"]" * depth + b"}"
        if how == "huge-digits":
            return raw[:-1] + b',"x-big":' + b"9" * 5000 + b"}"
        if how == "1e999":
            return raw[:-1] + b',"x-inf":1e999}'
        if how == "truncate":
            return raw[:rng.randrange(len(raw))]
        if how == "empty":
            return b""
        if how == "null":
            return b"null"
        if how == "array":
            return b"[" + raw + b"]"
        if how == "whitespace":
            return b" \n" + raw.replace(b",", b", ", 3) + b"\n"
        if how == "surrogate":
            return raw.replace(b"red checker", b"red \\ud800 checker", 1)
        if how == "utf16":
            return raw.decode("utf-8").encode("utf-16")
        return b"/* c */" + raw

    d.manifest_edit = edit
    return expect


def manifest_invariant(d: Doc, rng: random.Random, b: Base) -> str:
    """Right types, broken invariants of section 4 (counts, indices, versions, layouts)."""
    m = d.manifest
    how = rng.choice(["class-index", "class-drop", "class-add", "classes-many", "count", "size", "version",
                      "parameters", "rank", "in-features", "target-drop", "target-dup", "dtype-swap",
                      "conv-no-kernel", "target-extra"])
    if how == "class-index":
        m["classes"][rng.randrange(len(m["classes"]))]["index"] += rng.choice([1, 7, 2**40])
    elif how == "class-drop":
        m["classes"].pop()
    elif how == "class-add":
        m["classes"].append({"index": len(m["classes"]), "name": "extra", "source_id": "x"})
    elif how == "classes-many":
        m["classes"] = [{"index": i, "name": f"c{i}", "source_id": str(i)} for i in range(rng.choice([3, 5000]))]
    elif how == "count":
        m["images"]["count"] += rng.choice([-1, 1, 2**40])
    elif how == "size":
        m["images"]["size"] = rng.choice([1, 3, 5, 4096, 2**40])
    elif how == "version":
        m["format_version"] = rng.choice([[1, 1], [2, 0], [0, 0]])
    elif how == "parameters":
        m["lora"]["parameters"] += rng.choice([-1, 1, 2**62])
    elif how == "rank":
        m["lora"]["targets"][0]["rank"] = rng.choice([1, 3, 2**62])
    elif how == "in-features":
        m["lora"]["targets"][-1]["in_features"] = rng.choice([1, 2**40])
    elif how == "target-drop":
        m["lora"]["targets"].pop(0)
    elif how == "target-dup":
        m["lora"]["targets"].append(copy.deepcopy(m["lora"]["targets"][0]))
    elif how == "dtype-swap":
        m["lora"]["dtype"] = "int8" if m["lora"]["dtype"] == "fp16" else "fp16"
    elif how == "conv-no-kernel":
        t = m["lora"]["targets"][-1]
        t["kind"], t["kernel_size"] = "conv2d", None
    else:
        m["lora"]["targets"].append({"name": "visual.extra", "kind": "linear", "rank": 1, "alpha": 1.0,
                                     "in_features": 1, "out_features": 1})
    if how == "size" and m["images"]["size"] == b.image_size:
        return ANY
    return ERROR


# ---- members' content --------------------------------------------------------------------------

def content_truncate(d: Doc, rng: random.Random, b: Base) -> str:
    """Cut a member's decoded bytes (at a structural boundary or anywhere); hashes fixed up."""
    m = rng.choice([x for x in d.members if x.name in (PROMPTS, LORA, IMAGES)])
    cut = rng.choice(_content_cuts(m.name, m.content) + [rng.randrange(len(m.content))])
    m.set_content(m.content[:cut])
    return ERROR


_PROMPT_VARIANTS = [
    (b"{not json", ERROR), (b"\xff\xfe{}", ERROR), (b"[]", ERROR), (b"null", ERROR), (b"", ERROR),
    (b'{"classnames":["a"],"templates":["{}"]}', ERROR), (b'{"classnames":["a","b","c"],"templates":["{}"]}', ERROR),
    (b'{"classnames":[1,2],"templates":["{}"]}', ERROR), (b'{"classnames":["a","b"],"templates":[]}', ERROR),
    (b'{"classnames":["a","b"],"templates":"{}"}', ERROR), (b'{"classnames":["a","b"],"templates":[NaN]}', ERROR),
    (b'{"classnames":["a","b"],"classnames":["a","b"],"templates":["{}"]}', ERROR),
    (b'{"classnames":["a","b"],"templates":["{}"],"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}", ERROR),
    (b'{"classnames":["a","b"],"templates":["{}"],"x":' + b"1" * 5000 + b"}", ERROR),
    (b'{"classnames":["a","b"],"templates":["{}"]}', ANY),
    (b'{"classnames":["[/x]","\\ud800"],"templates":["{}"]}', ANY),
    (b'{"classnames":["a","b"],"templates":["{}"],"x-extra":1}', ANY),
]


def prompts_content(d: Doc, rng: random.Random, b: Base) -> str:
    data, expect = rng.choice(_PROMPT_VARIANTS)
    if b.num_classes != 2 and expect == ANY:
        expect = ERROR
    d.member(PROMPTS).set_content(data)
    return expect


_F16_BAD = (b"\x00\x7e", b"\x00\x7c", b"\x00\xfc", b"\x01\x7c")  # NaN, +Inf, -Inf, sNaN


def lora_values(d: Doc, rng: random.Random, b: Base) -> str:
    """NaN/Inf (fp16 tensors or int8 scales), or harmless extreme values."""
    m = d.member(LORA)
    header, body = st_split(m.content)
    names = sorted(k for k in header if k != "__metadata__")
    name = rng.choice(names)
    info = header[name]
    lo, hi = info["data_offsets"]
    body = bytearray(body)
    harmless = rng.random() < 0.2
    if info["dtype"] == "F16":
        for _ in range(rng.randint(1, 3)):
            pos = lo + 2 * rng.randrange((hi - lo) // 2)
            body[pos:pos + 2] = (b"\xff\x7b" if harmless else rng.choice(_F16_BAD))  # 65504 is finite
    else:  # I8: the value itself cannot be NaN; its scale can
        if harmless:
            body[lo + rng.randrange(hi - lo)] = 0x80  # -128
        else:
            scale = header.get(name + ".scale")
            if scale is None:
                return ANY
            slo, shi = scale["data_offsets"]
            pos = slo + 2 * rng.randrange((shi - slo) // 2)
            body[pos:pos + 2] = rng.choice(_F16_BAD)
    m.set_content(st_join(header, bytes(body)))
    return ANY if harmless else ERROR


def lora_header(d: Doc, rng: random.Random, b: Base) -> str:
    """Huge/negative/overflowing shapes, bad offsets, unknown dtypes, bad metadata, bad length prefix."""
    m = d.member(LORA)
    header, body = st_split(m.content)
    names = sorted(k for k in header if k != "__metadata__")
    name = rng.choice(names)
    t = header[name]
    how = rng.choice(["shape-huge", "shape-overflow", "shape-negative", "shape-empty", "shape-zero", "shape-float",
                      "shape-permute", "dtype", "offsets-reversed", "offsets-past", "offsets-huge",
                      "offsets-overlap", "drop", "rename-scale", "extra", "meta-drop", "meta-dtype", "meta-extra",
                      "length-huge", "length-off", "not-json", "padding", "zero-rows", "rename-hostile"])
    expect = ERROR
    raw: bytes | None = None
    length: int | None = None
    if how == "shape-huge":
        t["shape"] = [2**40, 2**40]
    elif how == "shape-overflow":
        t["shape"] = [2**32, 2**32, 2**32]
    elif how == "shape-negative":
        t["shape"] = [-1] + t["shape"][1:]
    elif how == "shape-empty":
        t["shape"] = []
    elif how == "shape-zero":
        t["shape"], t["data_offsets"] = [0] + t["shape"][1:], [t["data_offsets"][0]] * 2
    elif how == "zero-rows":  # a consistent file whose tensor has no rows (and, for int8, an empty scale)
        m.set_content(_st_rebuild(m.content, name))
        return ERROR
    elif how == "shape-float":
        t["shape"] = [float(x) for x in t["shape"]]
    elif how == "shape-permute":
        t["shape"] = t["shape"][::-1]
        expect = ANY
    elif how == "dtype":
        t["dtype"] = rng.choice(["F32", "BF16", "I64", "BOOL", "U8", "F8_E4M3", "F4", "XX", "F16", "I8"])
        expect = ANY
    elif how == "offsets-reversed":
        t["data_offsets"] = t["data_offsets"][::-1]
    elif how == "offsets-past":
        t["data_offsets"] = [t["data_offsets"][0], len(body) + 2]
    elif how == "offsets-huge":
        t["data_offsets"] = rng.choice([[0, 2**64 - 1], [2**64 - 2, 2**64], [-2, 0]])
    elif how == "offsets-overlap":
        other = header[rng.choice(names)]
        if other is t:
            return ANY
        t["data_offsets"] = list(other["data_offsets"])
    elif how == "drop":
        del header[name]  # every tensor (and scale) belongs to a target
    elif how == "rename-hostile":  # the name reaches error messages
        header[rng.choice(["two\nlines", "x" * 5000, "\x1b[2J", "[/x]"])] = header.pop(name)
    elif how == "rename-scale":
        header[name + ".scale"] = header.pop(name)  # the reserved suffix, or a target loses a factor
    elif how == "extra":
        header["x.extra"] = {"dtype": "U8", "shape": [0], "data_offsets": [len(body), len(body)]}
        expect = ANY
    elif how == "meta-drop":
        header.pop("__metadata__", None)
    elif how == "meta-dtype":
        header["__metadata__"] = rng.choice([{"dtype": "fp32"}, {"dtype": 1}, {}, {"x": "y"}, "fp16", None])
    elif how == "meta-extra":
        header["__metadata__"]["x-note"] = "hi"
        expect = ANY
    elif how == "length-huge":
        length = rng.choice([2**64 - 1, 2**63, len(m.content), 100 * MiB])
    elif how == "length-off":
        length = len(json.dumps(header, separators=(",", ":"))) + rng.choice([-1, 1, 7])
    elif how == "not-json":
        raw = rng.choice([b"{", b"[]", b"null", b"\xff", b'{"a":1,"a":2}'])
    else:  # safetensors allows trailing spaces in the header
        raw = json.dumps(header, separators=(",", ":")).encode() + b" " * rng.choice([1, 7])
        expect = ANY
    m.set_content(st_join(raw if raw is not None else header, body, length=length))
    return expect


def _st_rebuild(content: bytes, name: str) -> bytes:
    """Re-save lora.safetensors with ``name`` emptied to zero rows (its scale too): a consistent file."""
    import numpy as np
    from safetensors.numpy import load as st_load, save as st_save

    header, _ = st_split(content)
    tensors = st_load(content)
    base = name.removesuffix(".scale")
    t = tensors[base]
    tensors[base] = np.zeros((0,) + t.shape[1:], dtype=t.dtype)
    if base + ".scale" in tensors:
        tensors[base + ".scale"] = np.zeros((0,), dtype=np.float16)
    return st_save(tensors, metadata=header.get("__metadata__"))


# ---- images.tar --------------------------------------------------------------------------------

def _tar(d: Doc) -> tuple[Member, list[Entry]]:
    m = d.member(IMAGES)
    return m, tar_parse(m.content)


def tar_entry(d: Doc, rng: random.Random, b: Base) -> str:
    """Paths, links, devices, bad size fields and other tar header damage inside images.tar."""
    m, entries = _tar(d)
    i = rng.randrange(len(entries))
    e = entries[i]
    how = rng.choice(["name", "symlink", "hardlink", "type", "magic", "prefix", "size-huge", "size-base256",
                      "size-negative", "size-garbage", "size-off", "checksum", "mode", "uid", "mtime", "drop",
                      "dup", "swap", "end-missing", "end-short", "trailing", "no-pad"])
    end = b"\0" * 1024
    expect = ERROR
    if how == "name":
        e.name = rng.choice([b"../" + e.name, b"/" + e.name, b"a/" + e.name, b"..png", e.name + b"/", b"x" * 100,
                             e.name.replace(b".", b".png."), e.name.upper(), e.name.replace(b".png", b".gif"),
                             e.name.split(b".")[0], b"", b"\xe9.png", b"../../../../tmp/hellopack-fuzz-escape"])
    elif how == "symlink":
        e.typeflag, e.linkname = b"2", rng.choice([b"/etc/passwd", b"../../x", e.name])
    elif how == "hardlink":
        e.typeflag, e.linkname = b"1", entries[0].name
    elif how == "type":
        e.typeflag = rng.choice([b"3", b"4", b"5", b"6", b"7", b"x", b"g", b"L", b"K", b"S"])
    elif how == "magic":
        e.magic = rng.choice([b"ustar  \x00", b"", b"ustar\x0001", b"USTAR\x0000"])
    elif how == "prefix":
        e.prefix = rng.choice([b"..", b"/etc", b"a"])
    elif how == "size-huge":
        e.size_field = rng.choice([b"77777777777\0", b"37777777777\0", b"00400000001\0"])
    elif how == "size-base256":
        e.size_field = b"\x80" + (2**40).to_bytes(11, "big")
    elif how == "size-negative":
        e.size_field = b"\xff" * 12
    elif how == "size-garbage":
        e.size_field = rng.choice([b"-0000000001\0", b"9999\0", b"\0" * 12, b"0x10\0", b" " * 12, b"1e3\0"])
    elif how == "size-off":
        delta = rng.choice([-1, 1, 512])
        e.size_field = b"%011o\0" % (len(e.data) + delta)
        # An image one byte shorter or longer within the same 512-byte blocks (the byte moves into or
        # out of the padding) can still decode: only then may the archive pass.
        same = -(-(len(e.data) + delta) // 512) == -(-len(e.data) // 512)
        expect = ANY if same and not e.name.endswith(b".cls") else ERROR
    elif how == "checksum":
        e.checksum_delta = rng.choice([-1, 1, 256])
    elif how == "mode":
        e.mode = rng.choice([b"0004755", b"0000777", b"0000000"])
        expect = ANY
    elif how == "uid":
        e.uid = b"0001750"
        expect = ANY
    elif how == "mtime":
        e.mtime = b"77777777777"
        expect = ANY
    elif how == "drop":
        entries.pop(i)
    elif how == "dup":
        entries.insert(i, copy.deepcopy(e))
    elif how == "swap":
        j = rng.randrange(len(entries))
        entries[i], entries[j] = entries[j], entries[i]
        expect = ERROR if i != j else ANY
    elif how == "end-missing":
        end = b""
    elif how == "end-short":
        end = b"\0" * 512
    elif how == "trailing":
        end += rng.choice([b"\0", b"junk", b"\0" * 512])
    else:
        e.pad = False
        expect = ERROR if len(e.data) % 512 else ANY
    m.set_content(tar_build(entries, end))
    return expect


_CLS_VALUES = [b"-1", b"2", b"99999999999999999", b"01", b" 1", b"1\n", b"", b"abc", b"1.0", b"+1", b"0x1",
               "\u0663".encode(), b"0" * 17, b"4294967296", b"\x00", b"1 ", b"1e2"]


def tar_cls(d: Doc, rng: random.Random, b: Base) -> str:
    """.cls out of range or not canonical ASCII decimal."""
    m, entries = _tar(d)
    cls = [e for e in entries if e.name.endswith(b".cls")]
    e = rng.choice(cls)
    value = rng.choice(_CLS_VALUES + [str(b.num_classes).encode(), str(b.num_classes - 1).encode()])
    expect = ANY if value == str(b.num_classes - 1).encode() else ERROR
    e.data = value
    m.set_content(tar_build(entries))
    return expect


def _flip_in_chunk(png: bytes, kind: bytes, crc: bool) -> bytes:
    pos = png.index(kind)
    n = struct.unpack(">I", png[pos - 4:pos])[0]
    at = pos + 4 + n if crc else pos + 4 + n // 2
    return png[:at] + bytes([png[at] ^ 0x10]) + png[at + 1:]


def _image_variants(size: int) -> dict[str, tuple[bytes, str, str]]:
    """name -> (data, extension, expectation)."""
    png = image_bytes(size, size)
    v = {
        "truncated": (png[:len(png) // 2], "png", ERROR), "garbage": (b"\x89PNG\r\n\x1a\n" + b"x" * 40, "png", ERROR),
        "empty": (b"", "png", ERROR), "jpeg-as-png": (image_bytes(size, size, fmt="JPEG"), "png", ERROR),
        "png-as-jpg": (png, "jpg", ERROR), "png-as-webp": (png, "webp", ERROR),
        "wrong-size": (image_bytes(size + 1, size + 1), "png", ERROR),
        "one-pixel": (image_bytes(1, 1), "png", ERROR if size != 1 else ANY),
        "mode-L": (image_bytes(size, size, "L"), "png", ERROR), "mode-P": (image_bytes(size, size, "P"), "png", ERROR),
        "mode-RGBA": (image_bytes(size, size, "RGBA"), "png", ERROR),
        "mode-I16": (image_bytes(size, size, "I;16"), "png", ERROR),
        "mode-1": (image_bytes(size, size, "1"), "png", ERROR),
        "cmyk-jpeg": (image_bytes(size, size, "CMYK", "JPEG"), "jpg", ERROR),
        "ihdr-huge": (png_with_ihdr(100_000, 100_000), "png", ERROR),
        "ihdr-over-limit": (png_with_ihdr(4096, 4097), "png", ERROR),
        "ihdr-zero": (png_with_ihdr(0, 0), "png", ERROR),
        "idat-crc": (_flip_in_chunk(png, b"IDAT", crc=True), "png", ANY),  # Pillow may not check it
        "idat-data": (_flip_in_chunk(png, b"IDAT", crc=False), "png", ANY),
        "big-valid-dims": (image_bytes(2048, 2048), "png", ERROR),
        "other-color": (image_bytes(size, size, color=(1, 2, 3)), "png", ANY),
        "webp": (image_bytes(size, size, fmt="WEBP"), "webp", ANY),
        "jpg": (image_bytes(size, size, fmt="JPEG"), "jpg", ANY),
        "gif-as-png": (image_bytes(size, size, "P", "GIF"), "png", ERROR),
    }
    return v


_VARIANTS: dict[int, dict] = {}


def tar_image(d: Doc, rng: random.Random, b: Base) -> str:
    """Replace one image: broken, wrong size/mode/format, huge dimensions (decoding is area-capped)."""
    if b.image_size not in _VARIANTS:
        _VARIANTS[b.image_size] = _image_variants(b.image_size)
    m, entries = _tar(d)
    imgs = [i for i, e in enumerate(entries) if not e.name.endswith(b".cls")]
    i = rng.choice(imgs)
    data, ext, expect = _VARIANTS[b.image_size][rng.choice(sorted(_VARIANTS[b.image_size]))]
    key = entries[i].name.rsplit(b".", 1)[0]
    entries[i] = Entry(key + b"." + ext.encode(), data)
    m.set_content(tar_build(entries))
    return expect


def tar_samples(d: Doc, rng: random.Random, b: Base) -> str:
    """Sample-level changes: missing/extra/unpaired samples, keys with dots or bad characters."""
    m, entries = _tar(d)
    how = rng.choice(["add-sample", "drop-sample", "drop-cls", "drop-image", "bad-key", "cls-after", "reverse"])
    png = image_bytes(b.image_size, b.image_size)
    if how == "add-sample":
        entries += [Entry(b"zzzz.cls", b"0"), Entry(b"zzzz.png", png)]  # images.count now off by one
    elif how == "drop-sample":
        del entries[0:2]
    elif how == "drop-cls":
        del entries[0]
    elif how == "drop-image":
        del entries[1]
    elif how == "bad-key":
        bad = rng.choice([b"a.b", b"-a", b"_a", b"a b", b"x" * 65, b"\xc3\xa9"])
        entries[0].name, entries[1].name = bad + b".cls", bad + b".png"
    elif how == "cls-after":
        entries[0], entries[1] = entries[1], entries[0]
    else:
        entries.reverse()
    m.set_content(tar_build(entries))
    return ERROR


# ---- registry ----------------------------------------------------------------------------------

RAW: dict[str, Callable[[Base, random.Random], tuple[bytes, str]]] = {
    f.__name__: f for f in (raw_bitflip, raw_byteset, raw_truncate, raw_truncate_boundary, raw_insert, raw_delete,
                            raw_duplicate_range, raw_append, raw_header_field, raw_swap_members)
}
STRUCTURED: dict[str, Callable[[Doc, random.Random, Base], str]] = {
    f.__name__: f for f in (member_duplicate, member_drop, member_reorder, member_rename, member_add, member_field,
                            member_encoding_none, frame_bomb, frame_edit, big_member, manifest_wrong_type,
                            manifest_tree, manifest_text, manifest_invariant, manifest_display, content_truncate,
                            prompts_content,
                            lora_values, lora_header, tar_entry, tar_cls, tar_image, tar_samples)
}
MUTATORS = sorted(RAW) + sorted(STRUCTURED) + ["stacked"]
# Mutators that change strings the CLI displays (class names, dataset names, fidelity keys).
DISPLAY_MUTATORS = ("manifest_display", "manifest_tree", "manifest_text", "stacked")


@dataclass
class Case:
    mutator: str
    base: str
    blob: bytes
    expect: str


def make_case(bases: list[Base], mutator: str, rng: random.Random) -> Case:
    b = rng.choice(bases)
    if mutator in RAW:
        blob, expect = RAW[mutator](b, rng)
    elif mutator in STRUCTURED:
        doc = b.fresh()
        expect = STRUCTURED[mutator](doc, rng, b)
        blob = serialise(doc)
    else:  # two or three structured edits, sometimes raw damage on top
        doc = b.fresh()
        names = rng.sample(sorted(set(STRUCTURED) - {"big_member", "frame_bomb"}), rng.randint(2, 3))
        for n in names:
            try:
                STRUCTURED[n](doc, rng, b)
            except Exception:  # noqa: BLE001 - an earlier edit removed or broke what this one edits
                pass
        blob = serialise(doc)
        expect = ANY
        if rng.random() < 0.3:
            blob = bytearray(blob)
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
            blob, expect = bytes(blob), ERROR
        mutator = "stacked:" + "+".join(names)
    if blob == b.blob:
        expect = ANY
    return Case(mutator, b.name, blob, expect)


def _content_cuts(name: str, content: bytes) -> list[int]:
    """Structural boundaries inside a member's decoded bytes."""
    n = len(content)
    if name == IMAGES:
        cuts = set(range(0, n, 512))
    elif name == LORA:
        h = struct.unpack_from("<Q", content)[0]
        header, _ = st_split(content)
        cuts = {0, 4, 8, 8 + h // 2, 8 + h, 8 + h + 1}
        for k, v in header.items():
            if k != "__metadata__":
                cuts.update(8 + h + x for x in v["data_offsets"])
    else:
        cuts = {0, 1, n // 2}
    return sorted(c for c in cuts | {n - 1} if 0 <= c < n)


def sweep_cases(bases: list[Base]) -> list[Case]:
    """Deterministic truncations: the file at every part boundary (+-1 byte), and each required
    member's decoded bytes at every structural boundary (hashes fixed up, so the parsers see it)."""
    out = []
    for b in bases:
        cuts = sorted({min(max(x + dx, 0), len(b.blob) - 1) for x in b.boundaries for dx in (-1, 0, 1)})
        out += [Case(f"sweep_file_cut@{c}", b.name, b.blob[:c], ERROR) for c in cuts]
        for name in (PROMPTS, LORA, IMAGES):
            for c in _content_cuts(name, b.doc.member(name).content):
                doc = b.fresh()
                m = doc.member(name)
                m.set_content(m.content[:c])
                out.append(Case(f"sweep_{name}_cut@{c}", b.name, serialise(doc), ERROR))
    return out


# ================================================================================================
# Running one case: library, CLI, guards
# ================================================================================================

class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so no `except Exception` in the code under test eats it."""


_WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate",
                 "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
                 "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.unpack_archive", "tempfile.mkstemp",
                 "tempfile.mkdtemp", "os.mkfifo", "os.mknod"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WATCH: dict[str, Any] = {"on": False, "allowed": None, "writes": []}


def _audit(event: str, args: tuple) -> None:
    if not _WATCH["on"]:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS)
        if not writing:
            return
    elif event not in _WRITE_EVENTS:
        return
    path = str(args[0]) if args else ""
    if path.endswith(".pyc") and "__pycache__" in path:
        return  # the import system caching bytecode, not the code under test
    allowed = _WATCH["allowed"]
    if allowed is not None and args and isinstance(args[0], int):
        return  # a descriptor (fchmod, fdopen): its file's open was watched when it was made
    if allowed is not None and Path(path).resolve().is_relative_to(allowed):
        return
    _WATCH["writes"].append(f"{event} {path}")


_HOOKED = False


def install_write_watch() -> None:
    """Audit hook that records every write (open for writing, rename, remove, mkdir, ...) while a case runs."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True


def _alarm(signum, frame) -> None:
    raise CaseTimeout()


@contextlib.contextmanager
def guarded(timeout: float, allowed: Path | None, hard_kill: bool = False) -> Iterator[list[str]]:
    """Time cap (SIGALRM) and write watch around one case; yields the list of writes seen."""
    writes: list[str] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    _WATCH.update(on=True, allowed=allowed.resolve() if allowed else None, writes=writes)
    if hard_kill:  # a hang inside C code never returns to Python: dump stacks and exit
        faulthandler.dump_traceback_later(timeout * 4 + 5, exit=True)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield writes
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if hard_kill:
            faulthandler.cancel_dump_traceback_later()
        _WATCH["on"] = False
        signal.signal(signal.SIGALRM, old)


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@dataclass
class Result:
    kind: str  # "error", "accepted", or a failure: escape, timeout, missed, inconsistent, wrote, message, cli
    detail: str = ""
    message: str = ""  # the ArchiveError text
    seconds: float = 0.0


FAILURES = ("escape", "timeout", "missed", "inconsistent", "wrote", "message", "warning", "cli", "driver")


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/hellopack/" in f.filename or "/cli/" in f.filename] or frames
    f = ours[-1] if ours else None
    loc = f"{Path(f.filename).name}:{f.lineno}" if f else "?"
    first = (str(exc).splitlines() or [""])[0][:120]
    return f"{type(exc).__name__}: {first} at {loc}"


def library_run(path: Path) -> tuple[ArchiveError | None, list[str]]:
    """open_archive, then every entry point independently; returns (verify's error, inconsistencies).

    ArchiveError is the only allowed exception; anything else propagates to the caller.
    """
    try:
        a = open_archive(path)
    except ArchiveError as e:
        return e, []
    first: ArchiveError | None = None
    try:
        a.verify(decode_images=True)
    except ArchiveError as e:
        first = e
    problems = []
    steps = (("iter_images", lambda: sum(1 for _ in a.iter_images())), ("read_lora", a.read_lora),
             ("read_prompts", a.read_prompts), ("decode_lora", lambda: decode_lora(a.read_member(LORA))))
    for label, fn in steps:
        try:
            fn()
        except ArchiveError as e:
            if first is None:
                problems.append(f"verify passed but {label} raised: {e}")
    return first, problems


def message_ok(msg: str) -> bool:
    return "\n" not in msg and "\r" not in msg and 0 < len(msg) <= 400


def run_case(case: Case, workdir: Path, timeout: float, *, hard_kill: bool = False) -> Result:
    """Write the case into ``workdir`` (an otherwise empty temp dir) and run the library on it."""
    path = workdir / "case.hellopack"
    path.write_bytes(case.blob)
    before = _tree(workdir)
    t0 = time.perf_counter()
    try:
        with guarded(timeout, None, hard_kill) as writes, warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")  # a warning is one more stderr line in the CLI
            err, problems = library_run(path)
    except CaseTimeout:
        return Result("timeout", f"over {timeout} s", seconds=time.perf_counter() - t0)
    except BaseException as e:  # noqa: BLE001 - the point is to catch everything else
        if isinstance(e, KeyboardInterrupt):
            raise
        return Result("escape", _where(e), seconds=time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    if writes or _tree(workdir) != before:
        return Result("wrote", "; ".join(writes[:3]) or "directory changed", seconds=dt)
    if problems:
        return Result("inconsistent", problems[0], seconds=dt)
    if warned:
        w = warned[0]
        return Result("warning", f"{w.category.__name__}: {str(w.message)[:100]} at "
                                 f"{Path(w.filename).name}:{w.lineno}", seconds=dt)
    if err is None:
        if case.expect == ERROR:
            return Result("missed", f"{case.mutator} accepted though it must be refused", seconds=dt)
        return Result("accepted", seconds=dt)
    msg = str(err)
    if not message_ok(msg):
        return Result("message", repr(msg[:200]), msg, dt)
    return Result("error", message_class(msg), msg, dt)


def message_class(msg: str) -> str:
    """The message with names, keys and numbers blanked: 'tar entry Q is N bytes, over the N-byte ...'."""
    s = re.sub(r"(?<![A-Za-z])'[^']*'|\"[^\"]*\"", "Q", msg)
    s = re.sub(r"\"\S*", "Q", s)  # a long name, cut short without its closing quote
    s = re.sub(r"\b[A-Za-z0-9][A-Za-z0-9_-]*\.(cls|png|jpg|webp)\b", r"KEY.\1", s)
    s = re.sub(r"(?<![-\w])\d+\b", "N", s)
    return s[:110]


_RUNNER = None


def cli_run(path: Path, lib: Result, timeout: float) -> Result | None:
    """`hellopack inspect PATH --verify` in-process; None when it behaves (exit 2 + one line, or exit 0)."""
    global _RUNNER
    from typer.testing import CliRunner

    from hellopack_cli.app import app

    if _RUNNER is None:
        _RUNNER = CliRunner()
    from rich.console import Console

    from hellopack_cli import inspect_cmd

    # A real CLI run is a fresh process: a render that failed must not leave output in the shared console.
    inspect_cmd.stdout = Console()
    try:
        with guarded(timeout, None) as writes:
            r = _RUNNER.invoke(app, ["inspect", str(path), "--verify"])
    except CaseTimeout:
        return Result("cli", "timeout")
    if writes:
        return Result("cli", "wrote " + "; ".join(writes[:3]))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return Result("cli", "escape " + _where(r.exception))
    if lib.kind == "error":
        lines = r.stderr.splitlines()
        if r.exit_code != 2 or len(lines) != 1 or not r.stderr.endswith("\n"):
            return Result("cli", f"exit {r.exit_code}, {len(lines)} stderr lines: {r.stderr[:160]!r}")
        if not (lines[0].startswith("hellopack: error: ") and lines[0].endswith(lib.message)):
            return Result("cli", f"stderr {lines[0][:160]!r} does not carry {lib.message[:80]!r}")
    elif r.exit_code != 0:
        return Result("cli", f"library accepted, CLI exit {r.exit_code}: {r.stderr[:160]!r}")
    return None


def cli_subprocess(path: Path, timeout: float = 120) -> tuple[int, str]:
    """Run the installed CLI as a separate process; returns (exit code, stderr)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-m", "hellopack_cli", "inspect", str(path), "--verify"],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=path.parent)
    return p.returncode, p.stderr


def self_check(bases: list[Base], workdir: Path) -> None:
    """The seeds and their re-serialisation are valid, so every refusal comes from the mutation."""
    for b in bases:
        for blob in (b.blob, serialise(b.fresh())):
            r = run_case(Case("none", b.name, blob, ANY), workdir, 30)
            if r.kind != "accepted":
                raise SystemExit(f"seed {b.name} is not a valid archive: {r.kind} {r.detail} {r.message}")
        doc = b.fresh()
        m = doc.member(IMAGES)
        if tar_build(tar_parse(m.content)) != m.content:
            raise SystemExit(f"seed {b.name}: the tar model does not reproduce images.tar byte for byte")


# ================================================================================================
# The script
# ================================================================================================

def case_for(i: int, bases: list[Base], sweep: list[Case], seed: int) -> Case:
    """Case ``i``: the deterministic sweep first, then every mutator in turn, then random mutators."""
    if i < len(sweep):
        return sweep[i]
    j = i - len(sweep)
    rng = random.Random(f"{seed}/{i}")
    mutator = MUTATORS[j % len(MUTATORS)] if j < 4 * len(MUTATORS) else rng.choice(MUTATORS)
    return make_case(bases, mutator, rng)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-per-case", type=float, default=5.0, help="seconds (SIGALRM)")
    ap.add_argument("--mem-cap-mib", type=int, default=None,
                    help="memory cap for this process: RLIMIT_AS 1024 MiB, or RLIMIT_DATA 2048 MiB with --drivers")
    ap.add_argument("--cli-every", type=int, default=10,
                    help="in-process CLI on every N-th case and every accepted case (0: never)")
    ap.add_argument("--subprocess", type=int, default=8, help="refused cases re-run as a CLI subprocess")
    ap.add_argument("--only", type=int, default=None, help="run just this case index (replay)")
    ap.add_argument("--save-failures", type=Path, default=None, help="write failing archives here")
    ap.add_argument("--drivers", default="train,grid",
                    help="consumers run on every case open_archive accepts: train (one step), grid "
                         "(inspect --grid), comma-separated, or 'none'")
    ap.add_argument("--driver-timeout", type=float, default=60.0, help="seconds per consumer run (SIGALRM)")
    args = ap.parse_args(argv)

    sys.dont_write_bytecode = True
    drivers = [] if args.drivers == "none" else [d for d in args.drivers.split(",") if d]
    if any(d not in fd.DRIVERS for d in drivers):
        ap.error(f"--drivers: choose from {', '.join(fd.DRIVERS)} or none")
    args.mem_cap_mib = args.mem_cap_mib or (2048 if drivers else 1024)
    cap = args.mem_cap_mib * MiB
    # torch alone maps several GB of address space: with consumers, cap the data segment (heap and
    # anonymous maps, where any allocation an archive provokes lands) instead of the address space
    limit = resource.RLIMIT_DATA if drivers else resource.RLIMIT_AS
    limit_name = "RLIMIT_DATA" if drivers else "RLIMIT_AS"
    resource.setrlimit(limit, (cap, cap))
    install_write_watch()
    bases = load_bases()
    t_start = time.perf_counter()
    counts: collections.Counter[str] = collections.Counter()
    classes: collections.Counter[str] = collections.Counter()
    per_mut: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    failures: list[tuple[int, Case, Result]] = []
    cli_cases = cli_fail = 0
    for_subprocess: dict[str, tuple[int, bytes, str]] = {}
    slowest = (0.0, "")
    peak_case = (0.0, "")
    driven: collections.Counter[str] = collections.Counter()
    driver_unclean: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="hellopack-fuzz-") as tmp:
        workdir = Path(tmp) / "case"
        workdir.mkdir()
        outdir = Path(tmp) / "out"
        outdir.mkdir()
        self_check(bases, workdir)
        for d in drivers:  # the seeds pass, and one-time lazy set-up (imports, caches) is done unwatched
            fd.warm_up(d, bases[-1].blob, workdir, outdir, guarded, args.driver_timeout, CaseTimeout)
        rss0 = _rss_mib()
        sweep = sweep_cases(bases)
        indices = [args.only] if args.only is not None else range(max(args.cases, len(sweep)))
        for i in indices:
            case = case_for(i, bases, sweep, args.seed)
            before = _rss_mib()
            r = run_case(case, workdir, args.timeout_per_case, hard_kill=True)
            if _rss_mib() > before and _rss_mib() > peak_case[0]:
                peak_case = (_rss_mib(), f"case {i} ({case.mutator.split(':')[0]}, {len(case.blob)} bytes)")
            # The CLI runs on a sample of refused cases and on every accepted one (those render the table).
            sample = args.cli_every and (i % args.cli_every == 0 or r.kind == "accepted")
            if sample and r.kind in ("error", "accepted"):
                cli_cases += 1
                c = cli_run(workdir / "case.hellopack", r, args.timeout_per_case)
                if c is not None:
                    cli_fail += 1
                    r = c
            if drivers and r.kind in ("error", "accepted") and fd.opens(workdir / "case.hellopack"):
                for d in drivers:
                    driven[d] += 1
                    why = fd.drive(d, workdir / "case.hellopack", outdir, guarded, args.driver_timeout, CaseTimeout)
                    if why is not None:
                        driver_unclean[d] += 1
                        r = Result("driver", f"{d}: {why}")
                        break
            counts[r.kind] += 1
            per_mut[re.split(r"[:@]", case.mutator)[0]][r.kind] += 1
            if r.kind == "error":
                classes[r.detail] += 1
                key = r.detail.split(":")[0]
                if key not in for_subprocess:
                    for_subprocess[key] = (i, case.blob, r.message)
            if r.seconds > slowest[0]:
                slowest = (r.seconds, f"case {i} ({case.mutator.split(':')[0]})")
            if r.kind in FAILURES:
                failures.append((i, case, r))
                if args.save_failures:
                    args.save_failures.mkdir(parents=True, exist_ok=True)
                    (args.save_failures / f"case-{i}.hellopack").write_bytes(case.blob)
            if args.only is None and (i + 1) % 1000 == 0:
                print(f"  ... {i + 1} cases, {sum(counts[k] for k in FAILURES)} failures, "
                      f"{time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)

        sub_ok, sub_runs, sub_notes = 0, 0, []
        for key, (i, blob, message) in sorted(for_subprocess.items())[: args.subprocess]:
            p = Path(tmp) / "sub" / f"case-{i}.hellopack"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(blob)
            before = _tree(Path(tmp) / "sub")
            code, err = cli_subprocess(p)
            sub_runs += 1
            lines = err.splitlines()
            ok = (code == 2 and len(lines) == 1 and lines[0].startswith("hellopack: error: ")
                  and lines[0].endswith(message) and _tree(Path(tmp) / "sub") == before)
            sub_ok += ok
            if not ok:
                sub_notes.append(f"case {i}: exit {code}, stderr {err[-200:]!r}")

    n = sum(counts.values())
    total = time.perf_counter() - t_start
    print(f"hellopack archive fuzz: {n} cases, seed {args.seed}, {len(bases)} seed archives "
          f"({', '.join(b.name for b in bases)}), {len(MUTATORS)} mutators")
    print(f"limits: {args.timeout_per_case:g} s per case (SIGALRM, faulthandler backstop), "
          f"{limit_name} {args.mem_cap_mib} MiB, audit hook on every write")
    print("library per case: open_archive, verify(decode_images=True), iter_images, read_lora, read_prompts, "
          "decode_lora")
    print()
    print("outcomes")
    rows = [("ArchiveError (refused)", counts["error"]),
            ("accepted (mutation kept the archive valid)", counts["accepted"]),
            ("other exceptions (escaped)", counts["escape"]), ("timeouts", counts["timeout"]),
            ("missed (accepted, must be refused)", counts["missed"]),
            ("inconsistent (verify passed, another entry point refused)", counts["inconsistent"]),
            ("files written", counts["wrote"]), ("bad messages (not one short line)", counts["message"]),
            ("warnings (an extra stderr line in the CLI)", counts["warning"]),
            (f"CLI in-process failures (of {cli_cases} run)", cli_fail)]
    for label, v in rows:
        print(f"  {label:<60} {v:>7}")
    print(f"  {'CLI subprocess: exit 2 and one stderr line':<60} {sub_ok:>4}/{sub_runs}")
    for d in drivers:
        label = {"train": "train (one step, --labels hard)", "grid": "inspect --grid"}[d]
        print(f"  {f'{label}: unclean exits (of {driven[d]} archives open_archive accepts)':<60} "
              f"{driver_unclean[d]:>7}")
    print(f"peak RSS {_rss_mib():.0f} MiB (after setup {rss0:.0f} MiB; largest growth in {peak_case[1] or 'none'}); "
          f"cap {limit_name} {args.mem_cap_mib} MiB")
    print(f"slowest case {slowest[0]:.2f} s ({slowest[1]}); total {total:.0f} s")
    print()
    print(f"ArchiveError by message class ({len(classes)} classes)")
    for cls, v in classes.most_common():
        print(f"  {v:>6}  {cls}")
    print()
    print("per mutator: cases  refused  accepted  failed")
    for name in sorted(per_mut):
        c = per_mut[name]
        print(f"  {name:<28} {sum(c.values()):>6} {c['error']:>8} {c['accepted']:>9} "
              f"{sum(c[k] for k in FAILURES):>7}")
    if failures or sub_ok != sub_runs:
        print()
        print(f"FAILURES ({len(failures)}; replay one with --seed {args.seed} --only INDEX)")
        grouped: dict[str, list[int]] = collections.defaultdict(list)
        for i, case, r in failures:
            key = re.sub(r"(position|column|char) \d+", r"\1 N", f"{r.kind}: {r.detail}")
            grouped[re.sub(r"0x[0-9a-f]+", "0x...", key)].append(i)  # object addresses differ per case
        for key, idx in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(idx):>5} x {key[:220]}  (e.g. case {idx[0]})")
        for note in sub_notes:
            print(f"  subprocess {note}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
