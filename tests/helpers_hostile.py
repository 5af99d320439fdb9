"""Hand-made hostile archives: every checksum recomputed, so only the reader's content checks stand in the way.

``resign(blob, manifest_edit, members)`` rewrites a valid archive: ``manifest_edit(m)`` changes the manifest in
place, ``members`` replaces members' decoded bytes (zstd-compressed, sizes and hashes filled in). ATTACKS are
the issue-13 attacks on prompts.json, the LoRA layout and the manifest's image counts, each with the one line
every reader must refuse it with (``inspect --verify`` and ``train`` alike).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Callable

import zstandard

from hellopack.archive import canonical_json


def split(blob: bytes) -> tuple[dict, dict[str, bytes]]:
    mlen = struct.unpack_from("<Q", blob, 16)[0]
    manifest = json.loads(blob[56:56 + mlen])
    data = blob[56 + mlen:]
    return manifest, {m["name"]: data[m["offset"]:m["offset"] + m["stored_size"]] for m in manifest["members"]}


def resign(blob: bytes, manifest_edit: Callable[[dict], None] | None = None,
           members: dict[str, bytes] | None = None) -> bytes:
    m, stored = split(blob)
    if manifest_edit is not None:
        manifest_edit(m)
    for name, data in (members or {}).items():
        entry = next(e for e in m["members"] if e["name"] == name)
        stored[name] = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data)
        entry.update(encoding="zstd", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    offset = 0
    for e in m["members"]:
        e["offset"], e["stored_size"] = offset, len(stored[e["name"]])
        e["stored_sha256"] = hashlib.sha256(stored[e["name"]]).hexdigest()
        offset += e["stored_size"]
    raw = canonical_json(m)
    major, minor = m["format_version"]
    header = struct.pack("<8sHHIQ32s", b"HLLOPACK", major, minor, 0, len(raw), hashlib.sha256(raw).digest())
    return header + raw + b"".join(stored[e["name"]] for e in m["members"])


def prompts(classnames: list[str], templates: list[str]) -> bytes:
    return json.dumps({"classnames": classnames, "templates": templates}).encode()


def _rank_all(m: dict, rank: int) -> None:
    """Every target at ``rank``, the summary made consistent: the layout check alone cannot tell."""
    lora = m["lora"]
    for t in lora["targets"]:
        t["rank"] = rank
    lora["rank_encoder"] = lora["rank_head"] = rank
    lora["parameters"] = sum(rank * (t["in_features"] * (t["kernel_size"] or [1, 1])[0] * (t["kernel_size"] or [1, 1])[1]
                                     + t["out_features"]) for t in lora["targets"])


def _huge_layer(m: dict) -> None:
    """One encoder target of 60 M numbers at the archive's own rank (rank <= both sides)."""
    lora = m["lora"]
    t = next(t for t in lora["targets"] if t["name"] != "head")
    t["in_features"] = t["out_features"] = 60_000_000 // (2 * t["rank"]) + 1
    t["kernel_size"] = [1, 1]
    _rank_all(m, t["rank"])


def attacks(names: list[str]) -> dict[str, tuple[Callable[[dict], None] | None, dict[str, bytes], str]]:
    """name -> (manifest edit, member replacements, the expected message without the archive name)."""
    p = "prompts.json"
    return {
        "format-width-template": (None, {p: prompts(names, ["{}{:>1500000000}"])},
                                  "prompts.json: template 1 has a format spec ('{:>1500000000}'); "
                                  "templates may hold only '{}'"),
        "many-templates": (None, {p: prompts(names, ["a photo of a {}."] * 100_000)},
                           "prompts.json: holds 100000 templates, over the 1000-template limit"),
        "long-template": (None, {p: prompts(names, ["{}" + "x" * 400])},
                          "prompts.json: template 1 is 402 characters, over the 300-character limit"),
        "field-name-template": (None, {p: prompts(names, ["{0.__class__}"])},
                                "prompts.json: template 1 has a field name ('{0.__class__}'); "
                                "templates may hold only '{}'"),
        "two-placeholders": (None, {p: prompts(names, ["{} {}"])},
                             "prompts.json: template 1 ('{} {}') has 2 placeholders; a template needs exactly "
                             "one '{}' for the class name"),
        "long-classname": (None, {p: prompts(["x" * 300] + names[1:], ["{}"])},
                           "prompts.json: class name 0 is 300 characters, over the 256-character limit"),
        "prompts-list": (None, {p: b"[]"}, "prompts.json: must be a JSON object"),
        "prompts-nested": (None, {p: b"[" * 100_000 + b"]" * 100_000},
                           "prompts.json: is not valid UTF-8 JSON (nested too deeply)"),
        "classnames-int": (None, {p: json.dumps({"classnames": 5, "templates": ["{}"]}).encode()},
                           f"prompts.json: 'classnames' must be a list of {len(names)} strings (one per class)"),
        "classnames-not-str": (None, {p: json.dumps({"classnames": [1] * len(names), "templates": ["{}"]}).encode()},
                               f"prompts.json: 'classnames' must be a list of {len(names)} strings (one per class)"),
        "prompts-nan": (None, {p: b'{"classnames": ' + json.dumps(names).encode() + b', "templates": ["{}"], "x": NaN}'},
                        "prompts.json: is not valid UTF-8 JSON (NaN is not valid JSON)"),
        "prompts-duplicate-key": (None, {p: b'{"classnames": ' + json.dumps(names).encode()
                                         + b', "templates": ["{}"], "templates": ["{}"]}'},
                                  "prompts.json: is not valid UTF-8 JSON (duplicate key 'templates')"),
        "prompts-extra-key": (None, {p: json.dumps({"classnames": names, "templates": ["{}"], "x": 1}).encode()},
                              "prompts.json: has the key 'x'; the object holds exactly 'classnames' and 'templates'"),
        "rank-200000": (lambda m: _rank_all(m, 200_000), {},
                        "manifest: key 'lora.targets[0].rank' is 200000, above min(inputs *"),
        "rank-1e9": (lambda m: _rank_all(m, 10**9), {},
                     "manifest: key 'lora.targets[0].rank' is 1000000000, above min(inputs *"),
        "lora-60M-numbers": (_huge_layer, {}, "manifest: lora.targets hold * LoRA numbers, over the "
                                              "50000000-number limit"),
        "images-size-2^62": (lambda m: m["images"].update(size=2**62), {},
                             f"manifest: key 'images.size' is {2**62}, over the 4096-pixel limit"),
        "images-count-2^62": (lambda m: m["images"].update(count=2**62), {},
                              f"manifest: key 'images.count' is {2**62}, over the 16777216-image limit"),
    }


MEMORY_BOMBS = ("format-width-template", "many-templates", "rank-200000", "rank-1e9", "lora-60M-numbers")
