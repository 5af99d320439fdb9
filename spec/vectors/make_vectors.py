"""Regenerate the format v1 test vectors from spec/vectors/inputs/*.json.

    python spec/vectors/make_vectors.py [OUT_DIR]     (default: this folder)

Valid vectors are written by hellopack's ArchiveWriter from the inputs; malformed ones are
byte surgery on valid-minimal.hellopack. Each malformed NAME.hellopack has NAME.error.txt,
the exact one-line ArchiveError that ``open_archive(path).verify()`` must raise.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import zstandard

from hellopack.archive import FORMAT_MINOR, ArchiveError, ArchiveWriter, canonical_json, encode_lora, open_archive

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs"
VALID = ("valid-minimal", "valid-int8", "valid-vit")


def load_inputs(name: str) -> dict:
    return json.loads((INPUTS / f"{name}.json").read_text(encoding="utf-8"))


def write_from_inputs(doc: dict, path: Path) -> Path:
    """Write the archive an inputs document describes (see inputs/*.json)."""
    tensors = {n: np.asarray(t["values"], dtype=np.float32).reshape(t["shape"])
               for n, t in doc["lora"]["tensors"].items()}
    with ArchiveWriter(doc["manifest"], doc["tool_version"]) as w:
        w.add_member("prompts.json", canonical_json(doc["prompts"]))
        w.add_member("lora.safetensors", encode_lora(tensors, doc["lora"]["dtype"]))
        for im in doc["images"]:
            w.add_image(im["key"], im["cls"], bytes.fromhex(im["hex"]), im["ext"])
        return w.write(path)


def build_valid(name: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return write_from_inputs(load_inputs(name), Path(d) / "v.hellopack").read_bytes()


# ---- byte surgery helpers ---------------------------------------------------------------------

def split(blob: bytes) -> tuple[dict, dict[str, bytes]]:
    """(manifest, stored bytes per member) of a valid archive."""
    mlen = struct.unpack_from("<Q", blob, 16)[0]
    manifest = json.loads(blob[56:56 + mlen])
    data = blob[56 + mlen:]
    return manifest, {m["name"]: data[m["offset"]:m["offset"] + m["stored_size"]] for m in manifest["members"]}


def assemble(manifest: dict, stored: dict[str, bytes], *, major: int = 1, manifest_length: int | None = None) -> bytes:
    """Lay members out in manifest order with fresh offsets, then sign the manifest."""
    offset = 0
    for m in manifest["members"]:
        m["offset"], m["stored_size"] = offset, len(stored[m["name"]])
        m["stored_sha256"] = hashlib.sha256(stored[m["name"]]).hexdigest()
        offset += m["stored_size"]
    minor = manifest["format_version"][1] if major == 1 else 0  # the valid vector's own minor
    manifest["format_version"] = [major, minor]
    raw = canonical_json(manifest)
    length = len(raw) if manifest_length is None else manifest_length
    header = struct.pack("<8sHHIQ32s", b"HLLOPACK", major, minor, 0, length, hashlib.sha256(raw).digest())
    return header + raw + b"".join(stored[m["name"]] for m in manifest["members"])


def malformed(valid: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    m, stored = split(valid)
    out["truncated"] = valid[: len(valid) - 7]
    # Flip one byte in the middle of lora.safetensors' compressed payload.
    lora = next(x for x in m["members"] if x["name"] == "lora.safetensors")
    pos = 56 + len(canonical_json(m)) + lora["offset"] + lora["stored_size"] // 2
    flipped = bytearray(valid)
    flipped[pos] ^= 0x01
    out["flipped-byte"] = bytes(flipped)
    out["bad-magic"] = b"HLLOPACX" + valid[8:]
    m2, s2 = split(valid)
    out["unknown-major-version"] = assemble(m2, s2, major=2)
    m3, s3 = split(valid)
    m3["members"].append({"name": "../evil", "offset": 0, "stored_size": 0, "size": 0,
                          "sha256": hashlib.sha256(b"").hexdigest(), "encoding": "none"})  # stored_sha256 filled in
    s3["../evil"] = b""
    out["path-traversal"] = assemble(m3, s3)
    # The header claims a 9 MiB manifest; the file itself stays tiny.
    out["oversized-manifest"] = valid[:16] + struct.pack("<Q", 9 * 1024**2) + valid[24:56] + b"{}"
    m5, s5 = split(valid)
    bomb = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(b"\0" * (16 * 1024**2))
    s5["prompts.json"] = bomb
    next(x for x in m5["members"] if x["name"] == "prompts.json")["size"] = 100
    out["decompression-bomb"] = assemble(m5, s5)
    m6, s6 = split(valid)
    next(x for x in m6["members"] if x["name"] == "prompts.json")["sha256"] = "0" * 64
    out["checksum-mismatch"] = assemble(m6, s6)
    m7, s7 = split(valid)
    m7["members"] = [x for x in m7["members"] if x["name"] != "images.tar"]
    out["missing-member"] = assemble(m7, s7)
    m8, s8 = split(valid)
    m8["recipe"]["crop_scale"] = [0.9, 0.2]  # a 1.1 recipe key with an impossible value
    out["bad-recipe-key"] = assemble(m8, s8)
    m9, s9 = split(valid)
    m9["lora"]["rank_encoder"] = 3  # the summary disagrees with the targets (rank 2); tensors untouched
    out["lora-summary-mismatch"] = assemble(m9, s9)
    out["non-finite-number"] = with_literal(valid, "note", b"1e400")
    out.update(budget_vectors(valid))
    return out


# ---- budgets (spec 5.2): checksums all pass, the content asks for too much -------------------------

def _with_prompts(m: dict, s: dict[str, bytes], prompts: dict) -> None:
    data = canonical_json(prompts)
    s["prompts.json"] = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data)
    entry = next(x for x in m["members"] if x["name"] == "prompts.json")
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), encoding="zstd")


def _relayout(m: dict, rank: int | None = None, conv_in: int | None = None) -> None:
    """Change ranks or the conv's input width, keeping the lora summary consistent with the targets."""
    lora = m["lora"]
    for t in lora["targets"]:
        t["rank"] = rank or t["rank"]
        if conv_in and t["kind"] == "conv2d":
            t["in_features"] = conv_in
    lora["rank_encoder"] = lora["rank_head"] = lora["targets"][0]["rank"]
    lora["parameters"] = sum(t["rank"] * (t["in_features"] * (t["kernel_size"] or [1, 1])[0]
                                          * (t["kernel_size"] or [1, 1])[1] + t["out_features"])
                             for t in lora["targets"])


def budget_vectors(valid: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    names = ["red checker", "blue stripe"]
    m, s = split(valid)
    _with_prompts(m, s, {"classnames": names, "templates": ["{}{:>1500000000}"]})  # a 1.5 GB prompt string
    out["prompts-format-spec"] = assemble(m, s)
    m, s = split(valid)
    _with_prompts(m, s, {"classnames": names, "templates": ["a photo of a {}."] * 1001})
    out["too-many-templates"] = assemble(m, s)
    m, s = split(valid)
    _relayout(m, rank=5)  # the conv has 4 outputs, the head 2: rank 5 adds nothing but memory
    out["lora-rank-above-layer"] = assemble(m, s)
    m, s = split(valid)
    _relayout(m, conv_in=3_000_000)  # 2 * (3,000,000 * 3 * 3 + 4) numbers before a tensor is read
    out["lora-too-many-parameters"] = assemble(m, s)
    m, s = split(valid)
    m["images"]["size"] = 2**62
    out["images-size-over-limit"] = assemble(m, s)
    return out


def with_literal(valid: bytes, key: str, literal: bytes) -> bytes:
    """A top-level (free-form) ``key`` holding a raw JSON literal that canonical_json cannot write."""
    m, stored = split(valid)
    m[key] = "@literal@"
    blob = assemble(m, stored)
    mlen = struct.unpack_from("<Q", blob, 16)[0]
    raw = blob[56:56 + mlen].replace(b'"@literal@"', literal)
    return blob[:16] + struct.pack("<Q32s", len(raw), hashlib.sha256(raw).digest()) + raw + blob[56 + mlen:]


# The exact error each malformed vector must produce (spec/FORMAT.md, "Defects").
EXPECTED = {
    "truncated": "images.tar: extends past the end of the file (needs 544 data bytes, file has 537); "
                 "archive truncated",
    "flipped-byte": "lora.safetensors: corrupt zstd data (archive damaged)",
    "bad-magic": "header: bad magic (not a hellopack archive)",
    "unknown-major-version": "header: format version 2.0 is not supported by this hellopack (reads 1.x); "
                             "upgrade hellopack",
    "path-traversal": 'manifest: member name "../evil" is not allowed (names match '
                      "[A-Za-z0-9][A-Za-z0-9._-]{0,127}; no paths)",
    "oversized-manifest": "header: manifest length 9437184 bytes exceeds the 8388608-byte limit",
    "decompression-bomb": "prompts.json: zstd frame would decompress to 16777216 bytes, more than the "
                          "declared 100 (decompression bomb)",
    "checksum-mismatch": "prompts.json: sha256 mismatch (archive damaged)",
    "missing-member": "images.tar: required member is missing from the manifest",
    "bad-recipe-key": "manifest: key 'recipe.crop_scale' must be a list of 2 numbers 0 < min <= max <= 1",
    "lora-summary-mismatch": "manifest: lora.rank_encoder is 3 but the encoder targets have rank 2; "
                             "the archive is inconsistent, rebuild it",
    "non-finite-number": 'manifest: invalid JSON (key "note" holds 1e400, which is not a finite number)',
    "prompts-format-spec": "prompts.json: template 1 has a format spec ('{:>1500000000}'); templates may hold "
                           "only '{}'",
    "too-many-templates": "prompts.json: holds 1001 templates, over the 1000-template limit",
    "lora-rank-above-layer": "manifest: key 'lora.targets[0].rank' is 5, above min(inputs 27, outputs 4) of its "
                             "layer; a LoRA rank cannot exceed the layer's smaller side",
    "lora-too-many-parameters": "manifest: lora.targets hold 54000020 LoRA numbers, over the 50000000-number limit",
    "images-size-over-limit": "manifest: key 'images.size' is 4611686018427387904, over the 4096-pixel limit",
}


# ---- image encodings (format 1.2; spec section 3.4) --------------------------------------------
# Fixed image bytes (inputs/images.json): lossy encoders' output depends on the library version, so
# the vectors hold bytes written once, and the manifest names the library that wrote them.
IMAGE_VALID = {  # vector -> (images.json entry, images.encoding, images.quality, images.encoder)
    "valid-webp": ("webp", "webp", 90, "Pillow 13.0.0 / libwebp 1.6.0"),
    "valid-webp-lossless": ("webp-lossless", "webp-lossless", None, "Pillow 13.0.0 / libwebp 1.6.0"),
    "valid-jpeg": ("jpeg", "jpeg", 90, "Pillow 13.0.0 / libjpeg-turbo 3.2.0"),
}
# malformed image vector -> (images.json entry whose bytes replace the first image, manifest images changes)
IMAGE_MALFORMED = {
    "image-gif-as-png": ("gif-as-png", {}),
    "image-over-pixel-cap": ("over-pixel-cap", {}),
    "image-apng": ("apng", {}),
    "image-animated-webp": ("animated-webp", {}),
    "image-rgba-png": ("rgba-png", {}),
    "image-cmyk-jpeg": ("cmyk-jpeg", {}),
    "image-16-bit-png": ("16-bit-png", {}),
    "image-truncated-png": ("truncated-png", {}),
    "image-pixel-budget": (None, {"size": 2048}),  # per-image cap, from the manifest before any decoding
}
IMAGE_EXPECTED = {
    "image-gif-as-png": "images.tar: image c0000_00000.png does not decode as png (its bytes do not start with the png "
                        "signature)",
    "image-over-pixel-cap": "images.tar: image c0000_00000.png is 1025x1024, over the 1048576-pixel limit",
    "image-apng": "images.tar: image c0000_00000.png is animated (APNG), archives store single images",
    "image-animated-webp": "images.tar: image c0000_00000.webp has several frames (animated), archives store single images",
    "image-rgba-png": "images.tar: image c0000_00000.png has mode RGBA (bit depth 8), archives store 8-bit RGB",
    "image-cmyk-jpeg": "images.tar: image c0000_00000.jpg has mode CMYK, archives store 8-bit RGB",
    "image-16-bit-png": "images.tar: image c0000_00000.png has mode RGB (bit depth 16), archives store 8-bit RGB",
    "image-truncated-png": "images.tar: image c0000_00000.png does not decode as png (SyntaxError)",
    "image-pixel-budget": "manifest: images.size 2048 means 4194304 pixels per image, over the 1048576-pixel limit",
}


def image_docs() -> dict[str, dict]:
    """Inputs documents of the image vectors: valid-minimal with its images (or manifest) changed."""
    fixed = json.loads((INPUTS / "images.json").read_text(encoding="utf-8"))
    docs = {}
    for name, (entry, encoding, quality, encoder) in IMAGE_VALID.items():
        doc = load_inputs("valid-minimal")
        for im in doc["images"]:
            im["ext"], im["hex"] = fixed[entry]["ext"], fixed[entry]["hex"]
        doc["manifest"]["images"].update(format=fixed[entry]["ext"], encoding=encoding, quality=quality,
                                         encoder=encoder)
        docs[name] = doc
    for name, (entry, changes) in IMAGE_MALFORMED.items():
        doc = load_inputs("valid-minimal")
        if entry is not None:
            doc["images"][0]["ext"], doc["images"][0]["hex"] = fixed[entry]["ext"], fixed[entry]["hex"]
        doc["manifest"]["images"].update(changes)
        docs[name] = doc
    return docs


def error_of(path: Path) -> str:
    try:
        open_archive(path).verify()
    except ArchiveError as e:
        return str(e)
    raise AssertionError(f"{path.name} did not fail")


def build_all(out: Path) -> dict[str, bytes]:
    """Write every vector into ``out``; returns {file name: bytes} of what was written."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for name in VALID:
        blob = build_valid(name)
        files[f"{name}.hellopack"] = blob
        manifest, _ = split(blob)
        files[f"{name}.manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False)
                                          + "\n").encode("utf-8")
    for name, blob in malformed(files["valid-minimal.hellopack"]).items():
        files[f"{name}.hellopack"] = blob
        (out / f"{name}.hellopack").write_bytes(blob)
        got = error_of(out / f"{name}.hellopack")
        if got != EXPECTED[name]:
            raise AssertionError(f"{name}: reader says {got!r}, spec expects {EXPECTED[name]!r}")
        files[f"{name}.error.txt"] = (got + "\n").encode("utf-8")
    with tempfile.TemporaryDirectory() as d:
        for name, doc in image_docs().items():
            blob = write_from_inputs(doc, Path(d) / f"{name}.hellopack").read_bytes()
            files[f"{name}.hellopack"] = blob
            if name in IMAGE_VALID:
                open_archive(Path(d) / f"{name}.hellopack").verify()
                manifest, _ = split(blob)
                files[f"{name}.manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False)
                                                  + "\n").encode("utf-8")
                continue
            got = error_of(Path(d) / f"{name}.hellopack")
            if got != IMAGE_EXPECTED[name]:
                raise AssertionError(f"{name}: reader says {got!r}, spec expects {IMAGE_EXPECTED[name]!r}")
            files[f"{name}.error.txt"] = (got + "\n").encode("utf-8")
    for fname, blob in files.items():
        (out / fname).write_bytes(blob)
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for fname, blob in sorted(build_all(target).items()):
        print(f"{len(blob):8d}  {fname}")
