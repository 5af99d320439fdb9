"""Damaged and hostile archives: every defect is one ArchiveError naming the member and the defect."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pytest
import zstandard

import hellopack.archive.reader as reader_mod
from hellopack.archive import FORMAT_MINOR, ArchiveError, canonical_json, open_archive
from hellopack.archive.manifest import MemberInfo
from hellopack.archive.tarstream import entry_header
from hellopack.archive.zstdio import MemberReader
from test_archive_kit import base_doc, load_make_vectors, write

mv = load_make_vectors()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    return write(base_doc(), tmp_path_factory.mktemp("v") / "v.hellopack").read_bytes()


@pytest.fixture
def in_memory(monkeypatch):
    """Serve archive bytes from memory: the exhaustive loops must not hammer a shared disk."""
    files: dict[str, bytes] = {}
    monkeypatch.setattr(reader_mod, "_open", lambda path: io.BytesIO(files[str(path)]))
    return files


def error(path: Path) -> str:
    with pytest.raises(ArchiveError) as e:
        open_archive(path).verify()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_every_truncation_length_is_an_archive_error(valid: bytes, in_memory) -> None:
    p = Path("t.hellopack")
    for n in range(len(valid)):
        in_memory[str(p)] = valid[:n]
        msg = error(p)
        assert msg.split(":")[0] in ("header", "prompts.json", "lora.safetensors", "images.tar"), (n, msg)
        assert "truncated" in msg, (n, msg)


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_an_archive_error(valid: bytes, in_memory, mask: int) -> None:
    p = Path("f.hellopack")
    for i in range(len(valid)):
        b = bytearray(valid)
        b[i] ^= mask
        in_memory[str(p)] = bytes(b)
        error(p)


def rebuild(valid: bytes, edit) -> bytes:
    m, stored = mv.split(valid)
    edit(m, stored)
    return mv.assemble(m, stored)


def member(m: dict, name: str) -> dict:
    return next(x for x in m["members"] if x["name"] == name)


def tar_member(m: dict, stored: dict, tar: bytes) -> None:
    stored["images.tar"] = zstandard.ZstdCompressor(write_checksum=True).compress(tar)
    e = member(m, "images.tar")
    e["size"], e["sha256"] = len(tar), hashlib.sha256(tar).hexdigest()


def tar_of(*entries: tuple[str, bytes], header=entry_header) -> bytes:
    out = b""
    for name, data in entries:
        out += header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    return out + b"\0" * 1024


def symlink_header(name: str, size: int) -> bytes:
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return ti.tobuf(format=tarfile.USTAR_FORMAT)


PNG = bytes.fromhex(base_doc()["images"][0]["hex"])

CASES = {
    "flags": (lambda v: v[:12] + struct.pack("<I", 1) + v[16:], "header: flags are 0x00000001, format 1.x requires 0"),
    "manifest-sha": (lambda v: v[:24] + bytes(32) + v[56:], "manifest: sha256 does not match the header (archive damaged)"),
    "empty": (lambda v: b"", "header: file is 0 bytes, shorter than the 56-byte header (truncated or not a hellopack archive)"),
    "trailing": (lambda v: v + b"x", "file: 1 unexpected bytes after the last member"),
    "overlap": (lambda v: _raw_manifest(v, lambda m: member(m, "images.tar").update(offset=0)),
                "images.tar: offset 0 overlaps the previous member (expected 295)"),
    "gap": (lambda v: _raw_manifest(v, lambda m: member(m, "images.tar").update(offset=400)),
            "images.tar: offset 400 leaves a gap (expected 295)"),
    "duplicate": (lambda v: rebuild(v, lambda m, s: m["members"].insert(1, dict(member(m, "prompts.json")))),
                  "prompts.json: appears twice in the manifest"),
    "huge-member": (lambda v: _raw_manifest(v, lambda m: member(m, "images.tar").update(size=2**40)),
                    "images.tar: declared size 1099511627776 bytes exceeds the 68719476736-byte limit"),
    "bad-type": (lambda v: _raw_manifest(v, lambda m: m["images"].update(count="2")),
                 "manifest: key 'images.count' must be a non-negative integer"),
    "version-disagrees": (lambda v: _raw_manifest(v, lambda m: m.update(format_version=[1, 3])),
                          "manifest: format_version 1.3 disagrees with the header's 1.1"),
    "not-json": (lambda v: _raw_bytes(v, b"{not json"), "manifest: invalid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    "deep-json": (lambda v: _raw_bytes(v, b"[" * 100000 + b"]" * 100000), "manifest: invalid JSON (nested too deeply)"),
    "dup-key": (lambda v: _raw_bytes(v, b'{"a":1,"a":2}'), 'manifest: invalid JSON (duplicate key "a")'),
    "nan": (lambda v: _raw_bytes(v, b'{"a":NaN}'), "manifest: invalid JSON (NaN is not valid JSON)"),
    "array": (lambda v: _raw_bytes(v, b"[]"), "manifest: must be a JSON object"),
    "bad-encoding": (lambda v: _raw_manifest(v, lambda m: member(m, "prompts.json").update(encoding="gzip")),
                     "prompts.json: manifest 'encoding' must be one of 'zstd', 'none'"),
    "tar-symlink": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.cls", b"0"), ("a.png", PNG), header=symlink_header))),
                    "images.tar: tar entry 'a.cls' is not a regular file"),
    "tar-path": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("../a.cls", b"0")))),
                 "images.tar: tar entry '../a.cls' has a path (only plain file names are allowed)"),
    "tar-unpaired": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.cls", b"0"), ("b.cls", b"1")))),
                     "images.tar: sample 'a' has a .cls but no image"),
    "tar-no-cls": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.png", PNG)))),
                   "images.tar: image 'a.png' has no a.cls before it"),
    "tar-bad-cls": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.cls", b"2"), ("a.png", PNG)))),
                    "images.tar: a.cls is not a class index in 0..1"),
    "tar-order": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("b.cls", b"0"), ("b.png", PNG), ("a.cls", b"1"), ("a.png", PNG)))),
                  "images.tar: sample 'a' is duplicated or out of key order"),
    "tar-trailing": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.cls", b"0"), ("a.png", PNG)) + b"junk")),
                     "images.tar: has data after the tar end-of-archive marker"),
    "tar-count": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, tar_of(("a.cls", b"0"), ("a.png", PNG)))),
                  "images.tar: holds 1 images, the manifest's images.count is 2"),
    "tar-garbage": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, b"x" * 1024)),
                    "images.tar: tar header has an invalid checksum field"),
    "tar-checksum": (lambda v: rebuild(v, lambda m, s: tar_member(m, s, _bad_sum(tar_of(("a.cls", b"0"), ("a.png", PNG))))),
                     "images.tar: tar header checksum mismatch (corrupt)"),
}


def _bad_sum(tar: bytes) -> bytes:
    return tar[:100] + b"1" + tar[101:]  # mode field changed, checksum left as it was


def _raw_bytes(valid: bytes, raw: bytes) -> bytes:
    m, stored = mv.split(valid)
    data = b"".join(stored[x["name"]] for x in m["members"])
    minor = struct.unpack("<H", valid[10:12])[0]  # the valid archive's (lowest minor that fits)
    return struct.pack("<8sHHIQ32s", b"HLLOPACK", 1, minor, 0, len(raw), hashlib.sha256(raw).digest()) + raw + data


def _raw_manifest(valid: bytes, edit) -> bytes:
    m, _ = mv.split(valid)
    edit(m)
    return _raw_bytes(valid, canonical_json(m))


@pytest.mark.parametrize("name", list(CASES))
def test_defect_gives_exact_message(name: str, valid: bytes, tmp_path: Path) -> None:
    make, message = CASES[name]
    p = tmp_path / f"{name}.hellopack"
    p.write_bytes(make(valid))
    assert error(p) == message


def test_frame_without_content_size_is_rejected(valid: bytes, tmp_path: Path) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compress(b'{"a":1}')
    p = tmp_path / "n.hellopack"
    p.write_bytes(rebuild(valid, lambda m, s: s.update({"prompts.json": frame})))
    assert error(p) == "prompts.json: zstd frame lacks its content size or checksum"


def test_stream_cap_stops_a_bomb_even_without_frame_checks() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (8 << 20))
    info = MemberInfo("x", 0, len(frame), 100, "0" * 64, "zstd", "0" * 64)
    r = MemberReader(io.BytesIO(frame), 0, info, check_frame_first=False)
    with pytest.raises(ArchiveError) as e:
        while r.read(1 << 20):
            pass
    assert str(e.value) == "x: decompresses past its declared size of 100 bytes (decompression bomb)"
    assert r._count <= 101


def test_read_member_refuses_huge_members(valid: bytes, tmp_path: Path) -> None:
    def edit(m, s):
        frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"x")
        s["big.bin"] = frame
        m["members"].insert(2, {"name": "big.bin", "offset": 0, "stored_size": 0, "size": 2 * 1024**3,
                                "sha256": "0" * 64, "encoding": "zstd"})
    p = tmp_path / "b.hellopack"
    p.write_bytes(rebuild(valid, edit))
    a = open_archive(p)
    with pytest.raises(ArchiveError) as e:
        a.read_member("big.bin")
    assert str(e.value) == ("big.bin: is 2147483648 bytes, too large to read into memory (limit 1073741824); "
                            "stream it with open_member()")
    with pytest.raises(ArchiveError) as e:
        a.verify()
    assert str(e.value) == "big.bin: zstd frame holds 1 bytes, the manifest declares 2147483648"


def test_unknown_member_and_unreadable_file(valid: bytes, tmp_path: Path) -> None:
    p = tmp_path / "v.hellopack"
    p.write_bytes(valid)
    with pytest.raises(ArchiveError, match=r"^nope: no such member in this archive$"):
        open_archive(p).read_member("nope")
    with pytest.raises(ArchiveError, match=r"^file: cannot read \(No such file or directory\); check the path$"):
        open_archive(tmp_path / "missing.hellopack")
    assert reader_mod  # the reader module is the one that opens files


def test_unknown_keys_and_members_are_ignored(valid: bytes, tmp_path: Path) -> None:
    def edit(m, s):
        m["future_key"] = {"anything": [1, 2]}
        m["images"]["future_field"] = True
        s["zz-extra"] = b"raw"
        m["members"].append({"name": "zz-extra", "offset": 0, "stored_size": 0, "size": 3,
                             "sha256": hashlib.sha256(b"raw").hexdigest(), "encoding": "none"})
    p = tmp_path / "u.hellopack"
    p.write_bytes(rebuild(valid, edit))
    a = open_archive(p)
    assert a.verify().members_checked == 4
    assert a.read_member("zz-extra") == b"raw"
