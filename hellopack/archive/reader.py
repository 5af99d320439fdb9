"""open_archive / Archive: header + manifest on open; members streamed, capped and checked on demand."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from hellopack.archive.format import (
    HEADER_SIZE, IMAGES, LORA, MAX_IMAGE_PIXELS, MAX_READ_MEMBER_BYTES, PROMPTS, ArchiveError, parse_header,
)
from hellopack.archive.images import check_image_budget, decode_image
from hellopack.archive.layout import LoraLayout
from hellopack.archive.lora import _header_dtype, decode_lora
from hellopack.archive.limits import MAX_PROMPTS_BYTES
from hellopack.archive.manifest import MemberInfo, parse_manifest, parse_members, validate_manifest
from hellopack.archive.prompts import Prompts, parse_prompts
from hellopack.archive.tarstream import ImageRecord, iter_records
from hellopack.archive.zstdio import CHUNK, MemberReader


@dataclass(frozen=True)
class VerifyReport:
    members_checked: int
    images_checked: int


def _open(path: Path) -> BinaryIO:
    """Every read of an archive goes through here (tests count the bytes)."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise ArchiveError("file", f"cannot read ({e.strerror or e}); check the path") from None


class Archive:
    """An opened archive: ``manifest``, ``members`` and ``lora_layout`` (the typed, validated
    ``manifest["lora"]``) are parsed; member data is read lazily."""

    def __init__(self, path: Path, manifest: dict, members: list[MemberInfo], data_start: int,
                 lora_layout: LoraLayout) -> None:
        self.path = path
        self.manifest = manifest
        self.lora_layout = lora_layout
        self.members = members
        self.data_start = data_start
        self._by_name = {m.name: m for m in members}

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r}, members={[m.name for m in self.members]})"

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    def member(self, name: str) -> MemberInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise ArchiveError(name, "no such member in this archive") from None

    def open_member(self, name: str) -> BinaryIO:
        """A binary stream of one member's decompressed bytes; reading to EOF checks size and sha256."""
        info = self.member(name)
        f = _open(self.path)
        try:
            return _OwningReader(MemberReader(f, self.data_start, info), f)
        except BaseException:
            f.close()
            raise

    def read_member(self, name: str) -> bytes:
        """Whole member in memory (small members only), size and sha256 checked."""
        info = self.member(name)
        if info.size > MAX_READ_MEMBER_BYTES:
            raise ArchiveError(name, f"is {info.size} bytes, too large to read into memory "
                                     f"(limit {MAX_READ_MEMBER_BYTES}); stream it with open_member()")
        with self.open_member(name) as r:
            data = r.read()
            r.read()  # EOF again: the checks ran when the first read hit EOF
        return data

    def read_lora(self) -> dict[str, np.ndarray]:
        """Decoded (float32) LoRA tensors, checked against ``lora_layout``: the stored dtype, and
        every target's tensors of exactly the layout's shapes. ``verify`` and ``train`` both read here."""
        data = self.read_member(LORA)
        tensors = decode_lora(data)
        if _header_dtype(data) != self.lora_layout.dtype:
            raise ArchiveError(LORA, f"stored dtype differs from the manifest's lora.dtype {self.lora_layout.dtype!r}")
        self.lora_layout.check_tensors(tensors)
        return tensors

    def read_prompts(self) -> Prompts:
        """Class names and templates, strictly checked (spec 3.2 and 5.1). ``verify`` and every
        consumer (train, continual, the projector) read them here and only here."""
        size = self.member(PROMPTS).size
        if size > MAX_PROMPTS_BYTES:  # before decompressing: its JSON is parsed in memory
            raise ArchiveError(PROMPTS, f"declared size {size} bytes exceeds the {MAX_PROMPTS_BYTES}-byte limit "
                                        "for prompts.json")
        return parse_prompts(self.read_member(PROMPTS), self.num_classes)

    def iter_images(self) -> Iterator[ImageRecord]:
        """Stream (key, cls, ext, data) in key order; never extracts to disk. The member's sha256
        is checked when the stream ends, so a full pass has verified every byte."""
        with self.open_member(IMAGES) as r:
            yield from iter_records(io.BufferedReader(r, CHUNK), self.num_classes)
            r.read()

    def decoded_images(self) -> Iterator[tuple[ImageRecord, np.ndarray]]:
        """Stream (record, uint8 HWC RGB pixels): every image through ``decode_image``'s checks, after the
        manifest's pixel budget (images.count x images.size^2) passed before the first decode. This is
        the one way hellopack turns stored images into pixels (verify, train, grid, continual)."""
        images = self.manifest["images"]
        declared = check_image_budget(images)
        size, count = images["size"], images["count"]
        total = 0
        for rec in self.iter_images():
            name = f"{rec.key}.{rec.ext}"
            total += size * size  # decode_image refuses any other size from the header, before decoding
            if total > declared:
                raise ArchiveError(IMAGES, f"holds more than the manifest's images.count {count} images")
            yield rec, decode_image(name, rec.ext, rec.data, MAX_IMAGE_PIXELS, size)

    def verify(self, decode_images: bool = True) -> VerifyReport:
        """Check every member's size and sha256, LoRA layout and finiteness, prompts, image count
        and (by default) decode every image fully with Pillow."""
        checked = 0
        for info in self.members:
            if info.name == IMAGES:
                continue
            if info.name == LORA:
                self.read_lora()
            elif info.name == PROMPTS:
                self.read_prompts()
            else:  # unknown member: only its size and hashes matter, so stream it (memory stays flat)
                with self.open_member(info.name) as r:
                    r.drain()
            checked += 1
        images = 0
        for _ in (self.decoded_images() if decode_images else self.iter_images()):
            images += 1
        checked += 1
        if images != self.manifest["images"]["count"]:
            raise ArchiveError(IMAGES, f"holds {images} images, the manifest's images.count is "
                                       f"{self.manifest['images']['count']}")
        return VerifyReport(members_checked=checked, images_checked=images)


class _OwningReader(io.RawIOBase):
    """MemberReader that closes the underlying file with itself."""

    def __init__(self, inner: MemberReader, f: BinaryIO) -> None:
        self._inner, self._f = inner, f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        return self._inner.readinto(b)

    def readall(self) -> bytes:
        return self._inner.readall()

    def drain(self) -> None:
        self._inner.drain()

    def close(self) -> None:
        self._f.close()
        super().close()


def open_archive(path: str | os.PathLike) -> Archive:
    """Read and validate the header and manifest only (member data is not touched)."""
    path = Path(path)
    with _open(path) as f:
        file_size = f.seek(0, os.SEEK_END)
        f.seek(0)
        header = parse_header(f.read(HEADER_SIZE), file_size)
        raw = f.read(header.manifest_length)
    if len(raw) != header.manifest_length:
        raise ArchiveError("header", "file ends inside the manifest; archive truncated")
    manifest: dict[str, Any] = parse_manifest(raw, header.manifest_sha256)
    layout = validate_manifest(manifest, (header.major, header.minor))
    data_start = HEADER_SIZE + header.manifest_length
    members = parse_members(manifest, file_size - data_start)
    return Archive(path, manifest, members, data_start, layout)
