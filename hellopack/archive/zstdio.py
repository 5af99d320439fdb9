"""Member byte streams: deterministic zstd writing, strict frame checks, capped streaming reads."""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO, Iterable

import zstandard

from hellopack.archive.format import ZSTD_LEVEL, ZSTD_MAX_WINDOW, ArchiveError

CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compressor() -> zstandard.ZstdCompressor:
    # threads=0 (single-threaded) keeps output identical run to run.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True,
                                    write_dict_id=False, threads=0)


def compress_chunks(chunks: Iterable[bytes], size: int, out: BinaryIO) -> int:
    """Compress ``size`` bytes given as chunks into one frame on ``out``; returns bytes written."""
    start = out.tell()
    with compressor().stream_writer(out, size=size, closefd=False) as w:
        for c in chunks:
            w.write(c)
    return out.tell() - start


class _Region(io.RawIOBase):
    """Read-only view of ``length`` bytes at ``start`` of an open file."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        self._f, self._pos, self._end = f, start, start + length
        self.sha = hashlib.sha256()  # of every byte handed out, in order

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        if not data:
            return 0
        b[: len(data)] = data
        self._pos += len(data)
        self.sha.update(data)
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def check_frame(f: BinaryIO, start: int, stored_size: int, size: int, name: str) -> None:
    """Walk one zstd frame's headers (no decompression): it must fill the member exactly,
    carry a checksum and declare exactly ``size`` content bytes."""
    def read(pos: int, n: int) -> bytes:
        if pos + n > stored_size:
            raise ArchiveError(name, "zstd frame is truncated")
        f.seek(start + pos)
        b = f.read(n)
        if len(b) != n:
            raise ArchiveError(name, "zstd frame is truncated")
        return b

    if read(0, 4) != _ZSTD_MAGIC:
        raise ArchiveError(name, "is not a zstd frame")
    fhd = read(4, 1)[0]
    fcs_flag, single, reserved, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 3) & 1, (fhd >> 2) & 1, fhd & 3
    if reserved or dict_flag:
        raise ArchiveError(name, "zstd frame uses a reserved bit or a dictionary")
    pos = 5 + (0 if single else 1)
    fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not checksum or fcs_len == 0:
        raise ArchiveError(name, "zstd frame lacks its content size or checksum")
    declared = int.from_bytes(read(pos, fcs_len), "little") + (256 if fcs_len == 2 else 0)
    pos += fcs_len
    if declared > size:
        raise ArchiveError(name, f"zstd frame would decompress to {declared} bytes, more than the declared "
                                 f"{size} (decompression bomb)")
    if declared != size:
        raise ArchiveError(name, f"zstd frame holds {declared} bytes, the manifest declares {size}")
    while True:
        bh = int.from_bytes(read(pos, 3), "little")
        last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
        if btype == 3:
            raise ArchiveError(name, "zstd frame has a reserved block type (corrupt)")
        pos += 3 + (1 if btype == 1 else bsize)
        if last:
            break
    pos += 4
    if pos != stored_size:
        raise ArchiveError(name, "zstd frame does not end at the member's end (corrupt)")


class MemberReader(io.RawIOBase):
    """Streams one member's decompressed bytes, never more than its declared size; at EOF the
    stored bytes' sha256, the size and the content sha256 are checked, so a consumer that reads
    to the end has verified every byte of the member."""

    def __init__(self, f: BinaryIO, data_start: int, info, *, check_frame_first: bool = True) -> None:
        self.info = info
        self._sha = hashlib.sha256()
        self._count = 0
        self._done = False
        start = data_start + info.offset
        self._region = _Region(f, start, info.stored_size)
        if info.encoding == "zstd":
            if check_frame_first:
                check_frame(f, start, info.stored_size, info.size, info.name)
            dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
            self._src = dctx.stream_reader(self._region, read_size=CHUNK, read_across_frames=False)
        else:
            self._src = self._region

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._done:
            return 0
        want = min(len(b), self.info.size - self._count + 1)  # +1 detects output past the cap
        try:
            data = self._src.read(want) if want > 0 else b""
        except zstandard.ZstdError:
            raise ArchiveError(self.info.name, "corrupt zstd data (archive damaged)") from None
        self._count += len(data)
        if self._count > self.info.size:
            raise ArchiveError(self.info.name, f"decompresses past its declared size of {self.info.size} bytes "
                                               "(decompression bomb)")
        if not data:
            self._finish()
            return 0
        self._sha.update(data)
        b[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._done = True
        self._region.drain()
        if self._region.sha.hexdigest() != self.info.stored_sha256:
            raise ArchiveError(self.info.name, "stored bytes do not match stored_sha256 (archive damaged)")
        if self._count != self.info.size:
            raise ArchiveError(self.info.name, f"holds {self._count} bytes, the manifest declares {self.info.size} "
                                               "(archive damaged)")
        if self._sha.hexdigest() != self.info.sha256:
            raise ArchiveError(self.info.name, "sha256 mismatch (archive damaged)")

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        """Read to the end so the size and checksum are verified."""
        while self.read(CHUNK):
            pass
