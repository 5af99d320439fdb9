"""The stored-label file (``hellopack labels record``): FKD-style top-k labels per augmented view.

Layout (spec/LABELS.md), little-endian, no padding::

    b"HPLABELS"                       8 bytes, magic
    u32 header length H               4 bytes
    H bytes of JSON (UTF-8)           the header: identity, counts, section table
    sections, in SECTION order        flat arrays, sizes from the header's counts

Per kept step (S of them) the step index and the batch's mix; per kept view (V of them) the
augmentation record (archive image, crop box, flip, patch shuffle) and the labels: the top-K
log-probabilities in fp16 (FKD's top-K probabilities are exp(value)), their class indices (u16),
and the logits' log-sum-exp in fp16 (logit = value + lse: train's MSE loss regresses logits,
which probabilities alone cannot give back). ``payload_bytes`` counts the
sections from the counts alone, so a budget is known before anything is recorded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hellopack.errors import HellopackError

MAGIC = b"HPLABELS"
FORMAT = "hellopack-labels"
VERSION = 1
PREFIX_BYTES = len(MAGIC) + 4
MAX_HEADER_BYTES = 1 << 20
MAX_CLASSES = 1 << 16  # class indices are u16

# mix kind -> (dtype, values per step): CutMix's box x1, y1, x2, y2 (pixels); MixUp's lambda (f64, as drawn)
MIX_FIELDS = {"cutmix": ("<u2", 4), "mixup": ("<f8", 1), "none": ("<u2", 0)}


@dataclass(frozen=True)
class Layout:
    """What fixes the sections' sizes: counts and widths, no data."""

    steps: int  # kept steps (global batches)
    views: int  # kept views (augmented images)
    top_k: int
    mix: str  # "cutmix" | "mixup" | "none"
    shuffle_width: int  # u8 per view: 2 * factor (strips), factor ** 2 (patches), 0 (no shuffle)

    def sections(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, numpy dtype, shape) in file order; empty sections are listed with a 0 in their shape."""
        mix_dtype, mix_n = MIX_FIELDS[self.mix]
        s, v, k = self.steps, self.views, self.top_k
        return [
            ("steps", "<u4", (s,)),
            ("mix", mix_dtype, (s, mix_n)),
            ("image", "<u4", (v,)),
            ("crop", "<u2", (v, 4)),  # top, left, height, width in the stored image's pixels
            ("flip", "u1", (v,)),
            ("shuffle", "u1", (v, self.shuffle_width)),
            ("lse", "<f2", (v,)),
            ("values", "<f2", (v, k)),  # top-K log-probabilities, largest first
            ("classes", "<u2", (v, k)),
        ]

    def payload_bytes(self) -> int:
        return sum(int(np.dtype(d).itemsize) * int(np.prod(shape)) for _, d, shape in self.sections())

    def view_bytes(self) -> tuple[int, int]:
        """(augmentation record, labels) bytes per view, per-step fields not included."""
        return 4 + 8 + 1 + self.shuffle_width, 2 + 4 * self.top_k

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "views": self.views, "top_k": self.top_k, "mix": self.mix,
                "shuffle_width": self.shuffle_width}


def encode_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def file_bytes(header: dict[str, Any]) -> int:
    """The exact size of the file ``header`` describes: magic, length, header, sections."""
    return PREFIX_BYTES + len(encode_header(header)) + layout_of(header).payload_bytes()


def layout_of(header: dict[str, Any]) -> Layout:
    return Layout(**header["layout"])


def write(path: str | Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
    """Write atomically; returns the bytes written (== file_bytes(header))."""
    from hellopack.fsutil import atomic_write

    layout = layout_of(header)
    head = encode_header(header)
    written = 0
    with atomic_write(path) as f:
        for chunk in (MAGIC, struct.pack("<I", len(head)), head):
            f.write(chunk)
            written += len(chunk)
        for name, dtype, shape in layout.sections():
            a = np.ascontiguousarray(arrays[name], dtype=dtype)
            if a.shape != shape:
                raise ValueError(f"section {name}: shape {a.shape}, layout says {shape}")
            f.write(a.tobytes())
            written += a.nbytes
    return written


def read_header(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return _header(f, Path(path))


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and every section (checked against the header's layout and the file's size)."""
    path = Path(path)
    with open(path, "rb") as f:
        header = _header(f, path)
        layout = layout_of(header)
        arrays = {}
        for name, dtype, shape in layout.sections():
            n = int(np.dtype(dtype).itemsize) * int(np.prod(shape))
            data = f.read(n)
            if len(data) != n:
                raise HellopackError(f"stored labels '{path}' are truncated in section {name}; record them again")
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        if f.read(1):
            raise HellopackError(f"stored labels '{path}' have bytes after the last section; record them again")
    return header, arrays


def _header(f: BinaryIO, path: Path) -> dict[str, Any]:
    bad = f"'{path}' is not a hellopack stored-label file (hellopack labels record writes them)"
    if f.read(len(MAGIC)) != MAGIC:
        raise HellopackError(bad)
    raw = f.read(4)
    if len(raw) != 4:
        raise HellopackError(bad)
    (n,) = struct.unpack("<I", raw)
    if n > MAX_HEADER_BYTES:
        raise HellopackError(f"stored labels '{path}': header of {n} bytes is over the {MAX_HEADER_BYTES} limit; "
                             "record them again")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
        if header.get("format") != FORMAT:
            raise ValueError
        layout_of(header).sections()
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise HellopackError(f"stored labels '{path}': the header is damaged; record them again") from None
    if header.get("version") != VERSION:
        raise HellopackError(f"stored labels '{path}' are format version {header.get('version')}; this hellopack "
                             f"reads version {VERSION}: record them again with this version")
    size = path.stat().st_size
    if size != file_bytes(header):
        raise HellopackError(f"stored labels '{path}' are {size} bytes, the header describes {file_bytes(header)}; "
                             "the file is damaged, record it again")
    return header


def describe(path: str | Path) -> dict[str, Any]:
    """`labels inspect`: counts, bytes (by section kind) and the archive's label payload beside them."""
    header = read_header(path)
    layout = layout_of(header)
    sizes = {name: int(np.dtype(d).itemsize) * int(np.prod(shape)) for name, d, shape in layout.sections()}
    payload = int(header["archive"]["label_payload_bytes"])
    total = file_bytes(header)
    return {
        "path": str(path), "views": layout.views, "views_total": header["views_total"], "steps": layout.steps,
        "steps_total": header["steps_total"], "top_k": layout.top_k, "classes": header["identity"]["classes"],
        "keep": header["keep"], "kept_fraction": header["kept_fraction"], "epochs": header["identity"]["epochs"],
        "source": header["source"]["labels"], "file_bytes": total, "header_bytes": PREFIX_BYTES + len(encode_header(header)),
        "label_bytes": sizes["lse"] + sizes["values"] + sizes["classes"],
        "augmentation_bytes": sum(sizes[k] for k in ("steps", "mix", "image", "crop", "flip", "shuffle")),
        "archive_label_payload_bytes": payload, "ratio_to_archive_payload": total / payload if payload else None,
    }
