"""Format v1 constants, the 56-byte header, and the one error type (see spec/FORMAT.md)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAGIC = b"HLLOPACK"
FORMAT_MAJOR = 1
FORMAT_MINOR = 2  # the newest minor this package reads and writes; a writer writes the lowest that fits (1.2: target kind mha_in_proj, image-encoding keys)
FORMAT_NAME = "hellopack"

# <magic 8s> <major u16> <minor u16> <flags u32> <manifest_length u64> <manifest sha256 32s>
HEADER_STRUCT = struct.Struct("<8sHHIQ32s")
HEADER_SIZE = HEADER_STRUCT.size  # 56

MAX_MANIFEST_BYTES = 8 * 1024**2
MAX_MEMBER_BYTES = 64 * 1024**3  # declared decompressed size of one member
MAX_TOTAL_BYTES = 256 * 1024**3  # sum of declared decompressed sizes
MAX_READ_MEMBER_BYTES = 1024**3  # read_member() refuses larger members: stream them
# prompts.json and lora.safetensors are parsed in memory (JSON, safetensors): keep them small.
MAX_SMALL_MEMBER_BYTES = 64 * 1024**2
MAX_IMAGE_BYTES = 64 * 1024**2  # one encoded image inside images.tar
# Decoded-pixel caps (spec 3.4), checked from the manifest and each image's header before decoding:
# one image (20x the area of a 224 px ImageNet image), and all images together (ImageNet-1K at
# IPC 100 and 224 px is 5.0e9; the budget holds 8.6e9 pixels = 25.8 GB as uint8 RGB).
MAX_IMAGE_PIXELS = 1024 * 1024
MAX_TOTAL_IMAGE_PIXELS = 2**33
MAX_CLS_BYTES = 16
ZSTD_LEVEL = 10
ZSTD_MAX_WINDOW = 1 << 27  # decoder memory bound (128 MiB), libzstd's default limit

MEMBER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IMAGE_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}")
SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")

PROMPTS = "prompts.json"
LORA = "lora.safetensors"
IMAGES = "images.tar"
REQUIRED_MEMBERS = (PROMPTS, LORA, IMAGES)
ENCODINGS = ("zstd", "none")
IMAGE_EXTS = ("png", "jpg", "webp")


class ArchiveError(ValueError):
    """A damaged, hostile or unsupported archive. ``str()`` is one line: ``"<where>: <defect>"``.

    ``where`` is a member name, ``header`` (the fixed 56 bytes), ``manifest`` (the JSON)
    or ``file`` (the file itself could not be read or written).
    """

    def __init__(self, where: str, defect: str) -> None:
        self.where = where
        self.defect = defect
        super().__init__(f"{where}: {defect}")


@dataclass(frozen=True)
class Header:
    major: int
    minor: int
    flags: int
    manifest_length: int
    manifest_sha256: bytes

    def pack(self) -> bytes:
        return HEADER_STRUCT.pack(MAGIC, self.major, self.minor, self.flags,
                                  self.manifest_length, self.manifest_sha256)


def parse_header(raw: bytes, file_size: int) -> Header:
    """Check the fixed header; raises ArchiveError('header', ...) on the first defect."""
    if len(raw) < HEADER_SIZE:
        raise ArchiveError("header", f"file is {file_size} bytes, shorter than the {HEADER_SIZE}-byte header "
                                     "(truncated or not a hellopack archive)")
    magic, major, minor, flags, mlen, msha = HEADER_STRUCT.unpack(raw[:HEADER_SIZE])
    if magic != MAGIC:
        raise ArchiveError("header", "bad magic (not a hellopack archive)")
    if major != FORMAT_MAJOR:
        raise ArchiveError("header", f"format version {major}.{minor} is not supported by this hellopack "
                                     f"(reads {FORMAT_MAJOR}.x); upgrade hellopack")
    if flags != 0:
        raise ArchiveError("header", f"flags are 0x{flags:08x}, format {FORMAT_MAJOR}.x requires 0")
    if mlen > MAX_MANIFEST_BYTES:
        raise ArchiveError("header", f"manifest length {mlen} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit")
    if HEADER_SIZE + mlen > file_size:
        raise ArchiveError("header", f"file ends inside the manifest ({file_size} bytes, manifest needs "
                                     f"{HEADER_SIZE + mlen}); archive truncated")
    return Header(major, minor, flags, mlen, msha)
