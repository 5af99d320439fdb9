"""The hellopack archive format, version 1 (spec/FORMAT.md): writer, reader, LoRA codec.

This package imports nothing else from hellopack, so it can be vendored on its own.
"""

from hellopack.archive.format import (
    FORMAT_MAJOR, FORMAT_MINOR, HEADER_SIZE, MAGIC, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_MANIFEST_BYTES,
    MAX_MEMBER_BYTES, MAX_READ_MEMBER_BYTES, MAX_SMALL_MEMBER_BYTES, MAX_TOTAL_BYTES, REQUIRED_MEMBERS, ZSTD_LEVEL, ArchiveError,
)
from hellopack.archive.layout import LoraLayout, LoraTarget
from hellopack.archive.limits import (
    MAX_CLASSES, MAX_CLASSNAME_CHARS, MAX_IMAGE_COUNT, MAX_IMAGE_SIDE, MAX_LORA_PARAMETERS, MAX_PROMPTS_BYTES,
    MAX_TEMPLATE_CHARS, MAX_TEMPLATES,
)
from hellopack.archive.lora import decode_lora, encode_lora
from hellopack.archive.manifest import MemberInfo, canonical_json
from hellopack.archive.prompts import Prompts
from hellopack.archive.reader import Archive, VerifyReport, open_archive
from hellopack.archive.storage import AUG_RECORD_BYTES, LabelStorage, WholeStorage, label_storage, label_storage_from_counts, whole_storage
from hellopack.archive.tarstream import ImageRecord
from hellopack.archive.writer import ArchiveWriter

__all__ = [
    "ArchiveError", "ArchiveWriter", "Archive", "MemberInfo", "ImageRecord", "VerifyReport", "open_archive",
    "encode_lora", "decode_lora", "LoraLayout", "LoraTarget", "canonical_json", "FORMAT_MAJOR", "FORMAT_MINOR", "MAGIC", "HEADER_SIZE",
    "MAX_MANIFEST_BYTES", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_READ_MEMBER_BYTES", "MAX_SMALL_MEMBER_BYTES", "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS", "REQUIRED_MEMBERS", "ZSTD_LEVEL", "AUG_RECORD_BYTES", "LabelStorage", "label_storage",
    "label_storage_from_counts", "WholeStorage", "whole_storage", "Prompts", "MAX_CLASSES", "MAX_CLASSNAME_CHARS",
    "MAX_IMAGE_COUNT", "MAX_IMAGE_SIDE", "MAX_LORA_PARAMETERS", "MAX_PROMPTS_BYTES", "MAX_TEMPLATE_CHARS", "MAX_TEMPLATES",
]
