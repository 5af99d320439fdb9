"""ArchiveWriter: deterministic, atomic, memory-flat writing of a format v1 archive."""

from __future__ import annotations

import copy
import hashlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from hellopack.archive.atomic import atomic_output
from hellopack.archive.images import IMAGE_KEYS_1_2
from hellopack.archive.format import (
    FORMAT_MAJOR, FORMAT_MINOR, FORMAT_NAME, IMAGE_EXTS, IMAGE_KEY_RE, IMAGES, LORA, MAX_IMAGE_BYTES,
    MAX_MANIFEST_BYTES, MEMBER_NAME_RE, PROMPTS, ArchiveError, Header,
)
from hellopack.archive.layout import LoraLayout
from hellopack.archive.lora import decode_lora, _header_dtype
from hellopack.archive.manifest import canonical_json, parse_members, validate_manifest
from hellopack.archive.prompts import parse_prompts
from hellopack.archive.tarstream import tar_chunks, tar_size
from hellopack.archive.zstdio import CHUNK, compress_chunks

_WRITER_KEYS = ("format", "format_version", "members")


class ArchiveWriter:
    """Collects members and images, then writes the archive in one atomic step.

    Member order in the file is fixed (prompts.json, lora.safetensors, other members by
    name, images.tar last) so the small members sit right after the manifest. Images are
    spooled to a temporary file as they are added, so memory stays flat.
    """

    def __init__(self, manifest: Mapping[str, Any], tool_version: str) -> None:
        for key in _WRITER_KEYS:
            if key in manifest:
                raise ArchiveError("manifest", f"key '{key}' is filled in by the writer; remove it")
        try:
            canonical_json(manifest)
        except (TypeError, ValueError) as e:
            raise ArchiveError("manifest", f"is not JSON-serialisable ({e})") from None
        self._manifest = copy.deepcopy(dict(manifest))
        self._manifest["tool"] = {"name": "hellopack", "version": str(tool_version)}
        self._members: dict[str, bytes] = {}
        self._spool: BinaryIO = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)
        self._images: dict[str, tuple[int, str, int, int]] = {}  # key -> (cls, ext, offset, length)
        self._spool_end = 0

    def add_member(self, name: str, data: bytes) -> None:
        if not isinstance(name, str) or MEMBER_NAME_RE.fullmatch(name) is None:
            raise ArchiveError("manifest", f"member name {name!r} is not allowed (names match {MEMBER_NAME_RE.pattern})")
        if name == IMAGES:
            raise ArchiveError(IMAGES, "is built from add_image(); do not add it as a member")
        if name in self._members:
            raise ArchiveError(name, "was added twice")
        self._members[name] = bytes(data)

    def add_image(self, key: str, cls: int, data: bytes, ext: str = "png") -> None:
        if not isinstance(key, str) or IMAGE_KEY_RE.fullmatch(key) is None:
            raise ArchiveError(IMAGES, f"image key {key!r} is not allowed (keys match {IMAGE_KEY_RE.pattern})")
        if ext not in IMAGE_EXTS:
            raise ArchiveError(IMAGES, f"image {key!r}: extension {ext!r} must be one of {', '.join(IMAGE_EXTS)}")
        if key in self._images:
            raise ArchiveError(IMAGES, f"image key {key!r} was added twice")
        if not isinstance(cls, int) or isinstance(cls, bool) or cls < 0:
            raise ArchiveError(IMAGES, f"image {key!r}: class {cls!r} must be a non-negative integer")
        if len(data) > MAX_IMAGE_BYTES:
            raise ArchiveError(IMAGES, f"image {key!r} is {len(data)} bytes, over the {MAX_IMAGE_BYTES}-byte limit")
        self._spool.seek(self._spool_end)
        self._spool.write(data)
        self._images[key] = (cls, ext, self._spool_end, len(data))
        self._spool_end += len(data)

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing --------------------------------------------------------------------------

    def _check_contents(self, m: Mapping[str, Any], layout: LoraLayout) -> None:
        for req in (PROMPTS, LORA):
            if req not in self._members:
                raise ArchiveError(req, "required member was not added")
        n_classes = len(m["classes"])
        parse_prompts(self._members[PROMPTS], n_classes)
        tensors = decode_lora(self._members[LORA])
        if _header_dtype(self._members[LORA]) != m["lora"]["dtype"]:
            raise ArchiveError(LORA, f"stored dtype differs from the manifest's lora.dtype {m['lora']['dtype']!r}")
        layout.check_tensors(tensors)
        if len(self._images) != m["images"]["count"]:
            raise ArchiveError(IMAGES, f"{len(self._images)} images were added, the manifest's images.count "
                                       f"is {m['images']['count']}")
        for key, (cls, *_rest) in self._images.items():
            if cls >= n_classes:
                raise ArchiveError(IMAGES, f"image {key!r}: class {cls} is not in 0..{n_classes - 1}")

    def _tar_files(self) -> Iterator[tuple[str, bytes]]:
        for key in sorted(self._images):
            cls, ext, off, length = self._images[key]
            self._spool.seek(off)
            yield f"{key}.cls", str(cls).encode("ascii")
            yield f"{key}.{ext}", self._spool.read(length)

    def _tar_layout(self) -> list[tuple[str, int]]:
        out = []
        for key in sorted(self._images):
            cls, ext, _, length = self._images[key]
            out += [(f"{key}.cls", len(str(cls))), (f"{key}.{ext}", length)]
        return out

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        if not path.parent.is_dir():
            raise ArchiveError("file", f"output folder '{path.parent}' does not exist; create it or choose another path")
        m = copy.deepcopy(self._manifest)
        m["format"], m["format_version"], m["members"] = FORMAT_NAME, [FORMAT_MAJOR, FORMAT_MINOR], []
        layout = validate_manifest(m)
        # the lowest minor that describes it: its LoRA target kinds and its image keys
        m["format_version"] = [FORMAT_MAJOR, max(layout.format_minor, written_minor(m))]
        self._check_contents(m, layout)

        names = [PROMPTS, LORA] + sorted(n for n in self._members if n not in (PROMPTS, LORA))
        blobs: list[tuple[str, bytes, int, str]] = []  # name, stored bytes, size, sha256 of data
        for name in names:
            data = self._members[name]
            buf = io.BytesIO()
            compress_chunks([data], len(data), buf)
            blobs.append((name, buf.getvalue(), len(data), hashlib.sha256(data).hexdigest()))

        try:
            return self._write(path, m, blobs)
        except OSError as e:  # the images' temporary file (atomic_output handles the archive's own)
            raise ArchiveError("file", f"cannot write '{path.name}' ({e.strerror or e}); "
                                       "free space or choose another path") from None

    def _write(self, path: Path, m: dict[str, Any], blobs: list[tuple[str, bytes, int, str]]) -> Path:
        with tempfile.TemporaryFile(dir=path.parent) as img:
            sha = hashlib.sha256()

            def hashed() -> Iterator[bytes]:
                for chunk in tar_chunks(self._tar_files()):
                    sha.update(chunk)
                    yield chunk

            size = tar_size(self._tar_layout())
            stored = compress_chunks(hashed(), size, img)

            offset, table = 0, []
            for name, blob, n, digest in blobs:
                table.append({"name": name, "offset": offset, "stored_size": len(blob), "size": n,
                              "sha256": digest, "stored_sha256": hashlib.sha256(blob).hexdigest(),
                              "encoding": "zstd"})
                offset += len(blob)
            img.seek(0)
            stored_sha = hashlib.sha256()
            while chunk := img.read(CHUNK):
                stored_sha.update(chunk)
            table.append({"name": IMAGES, "offset": offset, "stored_size": stored, "size": size,
                          "sha256": sha.hexdigest(), "stored_sha256": stored_sha.hexdigest(), "encoding": "zstd"})
            m["members"] = table
            parse_members(m, None)
            raw = canonical_json(m)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise ArchiveError("manifest", f"is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
            header = Header(FORMAT_MAJOR, m["format_version"][1], 0, len(raw), hashlib.sha256(raw).digest())

            with atomic_output(path) as out:
                out.write(header.pack())
                out.write(raw)
                for _, blob, _, _ in blobs:
                    out.write(blob)
                img.seek(0)
                shutil.copyfileobj(img, out, CHUNK)
        return path


def written_minor(m: dict[str, Any]) -> int:
    """The lowest minor version whose keys the manifest uses: 1.2 added the image-encoding keys
    (images.encoding / quality / encoder), so an archive without them stays readable as 1.1."""
    images = m.get("images")
    if isinstance(images, dict) and any(k in images for k in IMAGE_KEYS_1_2):
        return 2
    return 1
