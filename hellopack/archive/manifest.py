"""Manifest parsing and validation: types of required keys, member table layout, invariants."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hellopack.archive import recipe as _recipe
from hellopack.archive.images import ENCODING_EXTS
from hellopack.archive.format import (
    ENCODINGS, FINGERPRINT_RE, FORMAT_MAJOR, FORMAT_NAME, IMAGE_EXTS, LORA, MAX_MEMBER_BYTES,
    MAX_SMALL_MEMBER_BYTES, MAX_TOTAL_BYTES, MEMBER_NAME_RE, PROMPTS, REQUIRED_MEMBERS, SHA256_HEX_RE, ArchiveError,
)
from hellopack.archive.layout import DTYPES, KINDS, LoraLayout
from hellopack.archive.limits import check_manifest_budgets
from hellopack.archive.strictjson import duplicates_refused, reject_constant

_U63 = 2**63


@dataclass(frozen=True)
class MemberInfo:
    """One member as the manifest declares it; ``offset`` is relative to the data section."""

    name: str
    offset: int
    stored_size: int
    size: int
    sha256: str
    encoding: str
    stored_sha256: str


def canonical_json(obj: Any) -> bytes:
    """The one byte form writers emit: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


_no_duplicates = duplicates_refused(lambda k: json.dumps(k)[:80])


class _Overflow:
    """A number literal too large for a float (``1e400``): parsed as this marker, never as infinity."""

    def __init__(self, text: str) -> None:
        self.text = text


def _finite_float(text: str) -> float | _Overflow:
    v = float(text)
    return v if math.isfinite(v) else _Overflow(text)


def _overflow_in(v: Any) -> _Overflow | None:
    if isinstance(v, _Overflow):
        return v
    if isinstance(v, list):
        return next((o for x in v if (o := _overflow_in(x)) is not None), None)
    return None


def _strict_object(pairs: list[tuple[str, Any]]) -> dict:
    """Duplicate keys and numbers that overflow to infinity are errors, naming the key."""
    for k, v in pairs:
        o = _overflow_in(v)
        if o is not None:
            raise ValueError(f"key {json.dumps(k)[:80]} holds {o.text[:40]}, which is not a finite number")
    return _no_duplicates(pairs)


def parse_manifest(raw: bytes, expected_sha256: bytes) -> dict:
    if hashlib.sha256(raw).digest() != expected_sha256:
        raise ArchiveError("manifest", "sha256 does not match the header (archive damaged)")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_object,
                         parse_constant=reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise ArchiveError("manifest", "is not valid UTF-8") from None
    except RecursionError:
        raise ArchiveError("manifest", "invalid JSON (nested too deeply)") from None
    except ValueError as e:
        raise ArchiveError("manifest", f"invalid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise ArchiveError("manifest", "must be a JSON object")
    return obj


# ---- tiny type checkers: each returns True when the value fits --------------------------

Check = tuple[Callable[[Any], bool], str]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _U63


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


INT: Check = (_is_int, "a non-negative integer")
POS: Check = (lambda v: _is_int(v) and v > 0, "a positive integer")
NUM: Check = (_is_num, "a finite number")
STR: Check = (lambda v: isinstance(v, str), "a string")
BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
OBJ: Check = (lambda v: isinstance(v, dict), "an object")
STR_OR_NULL: Check = (lambda v: v is None or isinstance(v, str), "a string or null")
INT_OR_NULL: Check = (lambda v: v is None or _is_int(v), "a non-negative integer or null")
RGB: Check = (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v),
              "a list of 3 numbers")
FINGERPRINT: Check = (lambda v: isinstance(v, str) and FINGERPRINT_RE.fullmatch(v) is not None,
                      "'sha256:' followed by 64 lowercase hex digits")
PAIR01: Check = (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v)
                 and 0 < v[0] <= v[1] <= 1, "a list of 2 numbers 0 < min <= max <= 1")
KERNEL: Check = (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v),
                 "a list of 2 positive integers")


def _enum(*values: str) -> Check:
    return (lambda v: v in values, "one of " + ", ".join(repr(x) for x in values))


SCHEMA: dict[str, dict[str, Check]] = {
    "tool": {"name": STR, "version": STR},
    "dataset": {"name": STR, "recipe": STR, "source": STR, "train_images": INT},
    "images": {"count": INT, "ipc": INT, "factor": POS, "size": POS, "format": _enum(*IMAGE_EXTS),
               "mean": RGB, "std": RGB},
    "base": {"kind": _enum("open_clip"), "name": STR, "pretrained": STR_OR_NULL, "custom": BOOL,
             "fingerprint": FINGERPRINT, "bytes": INT_OR_NULL, "image_size": POS},
    "lora": {"dtype": _enum(*DTYPES), "rank_encoder": INT, "rank_head": INT, "parameters": INT},
    "head": {"init": STR, "logit_scale": NUM, "embed_dim": POS},
    "recipe": {},  # filled below from hellopack.archive.recipe
    "seeds": {"build": INT},
}
# a recipe key's check by its type (integers in a recipe are counts: positive); the keys are declared
# once, in hellopack.archive.recipe. Allowed values are the consumer's: the spec only types the strings.
_RECIPE_CHECKS: dict[type, Check] = {int: POS, float: NUM, str: STR, bool: BOOL, tuple: PAIR01}
_required, _optional = _recipe.manifest_keys()
SCHEMA["recipe"] = {name: _RECIPE_CHECKS[kind] for name, kind in _required}
# recipe keys added in format 1.1 (the RDED protocol); a 1.0 archive lacks them and keeps its old meaning
RECIPE_OPTIONAL: dict[str, Check] = {name: _RECIPE_CHECKS[kind] for name, kind in _optional}
# images keys added in format 1.2: how the writer encoded (hellopack.archive.images.Codec)
IMAGES_OPTIONAL: dict[str, Check] = {
    "encoding": _enum(*ENCODING_EXTS),
    "quality": (lambda v: v is None or (_is_int(v) and 1 <= v <= 100), "null or an integer 1..100"),
    "encoder": STR}
CLASS_SCHEMA: dict[str, Check] = {"index": INT, "name": STR, "source_id": STR}
TARGET_SCHEMA: dict[str, Check] = {"name": STR, "kind": _enum(*KINDS), "rank": POS,
                                   "alpha": NUM, "in_features": POS, "out_features": POS}
FIDELITY_SCHEMA: dict[str, Check] = {"agreement": NUM, "kl": NUM, "projector_top1": NUM,
                                     "teacher_top1": NUM, "images": INT}
_HEX64: Check = (lambda v: isinstance(v, str) and SHA256_HEX_RE.fullmatch(v) is not None, "64 lowercase hex digits")
MEMBER_SCHEMA: dict[str, Check] = {
    "name": STR, "offset": INT, "stored_size": INT, "size": INT, "sha256": _HEX64, "stored_sha256": _HEX64,
    "encoding": _enum(*ENCODINGS),
}
REQUIRED_KEYS = ("format", "format_version", "tool", "dataset", "classes", "images", "base", "lora",
                 "head", "recipe", "seeds", "members")


def _check_obj(obj: Any, schema: Mapping[str, Check], path: str, *, required: bool = True) -> None:
    if not isinstance(obj, dict):
        raise ArchiveError("manifest", f"key '{path}' must be an object")
    for key, (ok, desc) in schema.items():
        if key not in obj:
            if required:
                raise ArchiveError("manifest", f"missing required key '{path}.{key}'")
            continue
        if not ok(obj[key]):
            raise ArchiveError("manifest", f"key '{path}.{key}' must be {desc}")


def validate_manifest(m: Mapping[str, Any], header_version: tuple[int, int] | None = None) -> LoraLayout:
    """Type-check every required key and the invariants that need no member data; returns the
    typed LoRA layout (its summary keys checked against its targets)."""
    for key in REQUIRED_KEYS:
        if key not in m:
            raise ArchiveError("manifest", f"missing required key '{key}'")
    if m["format"] != FORMAT_NAME:
        raise ArchiveError("manifest", f"key 'format' must be '{FORMAT_NAME}'")
    fv = m["format_version"]
    if not (isinstance(fv, list) and len(fv) == 2 and all(_is_int(x) for x in fv)):
        raise ArchiveError("manifest", "key 'format_version' must be [major, minor]")
    if header_version is not None and tuple(fv) != tuple(header_version):
        raise ArchiveError("manifest", f"format_version {fv[0]}.{fv[1]} disagrees with the header's "
                                       f"{header_version[0]}.{header_version[1]}")
    if fv[0] != FORMAT_MAJOR:
        raise ArchiveError("manifest", f"format version {fv[0]}.{fv[1]} is not supported by this hellopack "
                                       f"(reads {FORMAT_MAJOR}.x); upgrade hellopack")
    for key, schema in SCHEMA.items():
        _check_obj(m[key], schema, key)
    _check_obj(m["recipe"], RECIPE_OPTIONAL, "recipe", required=False)
    _check_obj(m["images"], IMAGES_OPTIONAL, "images", required=False)
    classes = m["classes"]
    if not isinstance(classes, list) or not classes:
        raise ArchiveError("manifest", "key 'classes' must be a non-empty list")
    for i, c in enumerate(classes):
        _check_obj(c, CLASS_SCHEMA, f"classes[{i}]")
        if c["index"] != i:
            raise ArchiveError("manifest", f"key 'classes[{i}].index' is {c['index']}, must be {i} "
                                           "(indices are 0..C-1 in order)")
    targets = m["lora"].get("targets")
    if not isinstance(targets, list):
        raise ArchiveError("manifest", "key 'lora.targets' must be a list")
    seen: set[str] = set()
    for i, t in enumerate(targets):
        _check_obj(t, TARGET_SCHEMA, f"lora.targets[{i}]")
        if not t["name"] or t["name"] in seen:
            raise ArchiveError("manifest", f"key 'lora.targets[{i}].name' must be non-empty and unique")
        seen.add(t["name"])
        ks = t.get("kernel_size")
        if t["kind"] == "conv2d" or ks is not None:
            if not KERNEL[0](ks):
                raise ArchiveError("manifest", f"key 'lora.targets[{i}].kernel_size' must be {KERNEL[1]}")
    layout = LoraLayout.from_manifest(m["lora"])
    check_manifest_budgets(m, layout)  # spec 5.1: before anything is built from these counts
    if "build" in m and not isinstance(m["build"], dict):
        raise ArchiveError("manifest", "key 'build' must be an object")
    if m.get("fidelity") is not None:
        _check_obj(m["fidelity"], FIDELITY_SCHEMA, "fidelity", required=False)
    return layout


def member_label(name: Any) -> str:
    """A printable, one-line form of a (possibly hostile) member name."""
    return json.dumps(name if isinstance(name, str) else str(name), ensure_ascii=True)[:80]


def parse_members(m: Mapping[str, Any], data_size: int | None) -> list[MemberInfo]:
    """Validate the member table: names, types, contiguous layout, caps, required members.

    ``data_size`` is the number of bytes after the manifest (None: do not check EOF).
    """
    raw = m.get("members")
    if not isinstance(raw, list) or not raw:
        raise ArchiveError("manifest", "key 'members' must be a non-empty list")
    out: list[MemberInfo] = []
    names: set[str] = set()
    expected_offset = 0
    total = 0
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise ArchiveError("manifest", f"key 'members[{i}]' must be an object")
        name = e.get("name")
        if not isinstance(name, str) or MEMBER_NAME_RE.fullmatch(name) is None:
            raise ArchiveError("manifest", f"member name {member_label(name)} is not allowed (names match "
                                           f"{MEMBER_NAME_RE.pattern}; no paths)")
        if name in names:
            raise ArchiveError(name, "appears twice in the manifest")
        names.add(name)
        for key, (ok, desc) in MEMBER_SCHEMA.items():
            if key not in e:
                raise ArchiveError(name, f"manifest entry lacks '{key}'")
            if not ok(e[key]):
                raise ArchiveError(name, f"manifest '{key}' must be {desc}")
        info = MemberInfo(name, e["offset"], e["stored_size"], e["size"], e["sha256"], e["encoding"],
                          e["stored_sha256"])
        if info.offset != expected_offset:
            kind = "overlaps the previous member" if info.offset < expected_offset else "leaves a gap"
            raise ArchiveError(name, f"offset {info.offset} {kind} (expected {expected_offset})")
        if info.size > MAX_MEMBER_BYTES:
            raise ArchiveError(name, f"declared size {info.size} bytes exceeds the {MAX_MEMBER_BYTES}-byte limit")
        if name in (PROMPTS, LORA) and info.size > MAX_SMALL_MEMBER_BYTES:
            raise ArchiveError(name, f"declared size {info.size} bytes exceeds the {MAX_SMALL_MEMBER_BYTES}-byte "
                                     f"limit for {name}")
        if info.encoding == "none" and info.stored_size != info.size:
            raise ArchiveError(name, "encoding 'none' requires stored_size == size")
        total += info.size
        if total > MAX_TOTAL_BYTES:
            raise ArchiveError(name, f"total declared size exceeds the {MAX_TOTAL_BYTES}-byte limit")
        expected_offset += info.stored_size
        if data_size is not None and expected_offset > data_size:
            raise ArchiveError(name, f"extends past the end of the file (needs {expected_offset} data bytes, "
                                     f"file has {data_size}); archive truncated")
        out.append(info)
    for req in REQUIRED_MEMBERS:
        if req not in names:
            raise ArchiveError(req, "required member is missing from the manifest")
    if data_size is not None and expected_offset != data_size:
        raise ArchiveError("file", f"{data_size - expected_offset} unexpected bytes after the last member")
    return out
