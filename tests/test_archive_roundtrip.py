"""Write -> read round trips, determinism, atomicity and writer-side validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save

import hellopack.archive.writer as writer_mod
from hellopack.archive import (
    FORMAT_MAJOR, FORMAT_MINOR, ArchiveError, canonical_json, decode_lora, encode_lora, open_archive,
)
from hellopack.archive.writer import written_minor
from test_archive_kit import base_doc, lora_tensors, png, write, writer_for


def test_round_trip_manifest_members_images_and_lora(tmp_path: Path) -> None:
    doc = base_doc()
    doc["manifest"]["images"]["count"] = 3
    imgs = [("b_1", 1, png((0, 0, 255)), "png"), ("a_0", 0, png((255, 0, 0)), "png"),
            ("c_1", 1, png((9, 9, 9), fmt="WEBP"), "webp")]
    a = open_archive(write(doc, tmp_path / "x.hellopack", images=imgs, extra={"notes.txt": b"hello"}))

    # the lowest minor that fits (writer.written_minor): no 1.2 image keys here
    expected = dict(doc["manifest"], format="hellopack", format_version=[FORMAT_MAJOR, written_minor(doc["manifest"])],
                    tool={"name": "hellopack", "version": "0.1.0"})
    assert {k: v for k, v in a.manifest.items() if k != "members"} == expected
    assert [m.name for m in a.members] == ["prompts.json", "lora.safetensors", "notes.txt", "images.tar"]
    assert a.read_member("notes.txt") == b"hello"
    assert json.loads(a.read_member("prompts.json")) == doc["prompts"]
    assert [(r.key, r.cls, r.ext, r.data) for r in a.iter_images()] == sorted(
        [(k, c, e, d) for k, c, d, e in imgs])
    # Every test value is a multiple of 1/16, exact in fp16.
    got = a.read_lora()
    for name, t in lora_tensors(doc).items():
        np.testing.assert_array_equal(got[name], t)
        assert got[name].dtype == np.float32
    assert a.verify() .images_checked == 3


def test_fp16_lora_rounds_to_nearest_half(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = {"x.lora_A": rng.normal(size=(8, 16)).astype(np.float32)}
    got = decode_lora(encode_lora(t, "fp16"))["x.lora_A"]
    np.testing.assert_array_equal(got, t["x.lora_A"].astype(np.float16).astype(np.float32))


def test_int8_lora_error_within_one_127th_of_row_max() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(64, 32)).astype(np.float32) * rng.uniform(1e-3, 10, size=(64, 1)).astype(np.float32)
    a[3] = 0.0  # an all-zero row must survive exactly
    conv = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    data = encode_lora({"t.lora_A": a, "c.lora_A": conv}, "int8")
    got = decode_lora(data)
    assert set(got) == {"t.lora_A", "c.lora_A"}  # scales are folded in, not returned
    for name, ref in (("t.lora_A", a), ("c.lora_A", conv)):
        rows = ref.reshape(ref.shape[0], -1)
        err = np.abs(got[name].reshape(rows.shape) - rows).max(axis=1)
        assert (err <= np.abs(rows).max(axis=1) / 127).all()
    assert (got["t.lora_A"][3] == 0).all()
    assert len(data) < a.size * 2  # int8 is smaller than fp16 would be


def test_encode_rejects_nan_and_decode_rejects_stored_nan() -> None:
    with pytest.raises(ArchiveError, match=r"^lora.safetensors: tensor 'x' holds NaN/Inf"):
        encode_lora({"x": np.array([1.0, np.nan], dtype=np.float32)})
    bad = st_save({"x": np.array([1.0, np.inf], dtype=np.float16)}, metadata={"dtype": "fp16"})
    with pytest.raises(ArchiveError) as e:
        decode_lora(bad)
    assert str(e.value) == "lora.safetensors: tensor 'x' holds NaN or Inf"
    with pytest.raises(ArchiveError) as e:
        decode_lora(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    assert str(e.value).startswith("lora.safetensors: is not a valid safetensors file")


def test_same_inputs_give_identical_bytes_regardless_of_image_order(tmp_path: Path) -> None:
    doc = base_doc()
    imgs = [(i["key"], i["cls"], bytes.fromhex(i["hex"]), i["ext"]) for i in doc["images"]]
    a = write(doc, tmp_path / "a.hellopack", images=imgs).read_bytes()
    b = write(doc, tmp_path / "b.hellopack", images=imgs[::-1]).read_bytes()
    assert a == b
    doc["manifest"]["seeds"]["build"] = 1
    assert write(doc, tmp_path / "c.hellopack", images=imgs).read_bytes() != a


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    doc = base_doc()
    target = tmp_path / "out.hellopack"

    def broken_copy(src, dst, length=0):
        dst.write(b"partial bytes")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer_mod.shutil, "copyfileobj", broken_copy)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write(doc, target)
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"previous archive")
    with pytest.raises(RuntimeError):
        write(doc, target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.hellopack"]
    assert target.read_bytes() == b"previous archive"


def test_missing_output_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as e:
        write(base_doc(), tmp_path / "nope" / "a.hellopack")
    assert str(e.value) == f"file: output folder '{tmp_path / 'nope'}' does not exist; create it or choose another path"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["manifest"]["images"].update(count=5),
     "images.tar: 2 images were added, the manifest's images.count is 5"),
    (lambda d: d["images"][0].update(cls=2), "images.tar: image 'c0000_00000': class 2 is not in 0..1"),
    # the summary is checked against the targets in the manifest, before any tensor is read
    (lambda d: d["manifest"]["lora"].update(parameters=75),
     "manifest: lora.parameters is 75 but the targets hold 74; the archive is inconsistent, rebuild it"),
    (lambda d: d["manifest"]["lora"]["targets"][1].update(rank=3),
     "manifest: lora.rank_head is 2 but the 'head' target has rank 3; the archive is inconsistent, rebuild it"),
    # a consistent manifest (2 x (2*3*3 + 13) = 62 parameters, as 2 x (3*3*3 + 4)) whose tensors differ
    (lambda d: d["manifest"]["lora"]["targets"][0].update(in_features=2, out_features=13),
     "lora.safetensors: target 'visual.conv1': shapes [2, 3, 3, 3]/[4, 2, 1, 1], the manifest's layout needs "
     "[2, 2, 3, 3]/[13, 2, 1, 1]"),
    (lambda d: d["manifest"]["lora"].update(dtype="int8"),
     "lora.safetensors: stored dtype differs from the manifest's lora.dtype 'int8'"),
    (lambda d: d["prompts"].update(classnames=["one"]),
     "prompts.json: 'classnames' must be a list of 2 strings (one per class)"),
    (lambda d: d["manifest"]["base"].update(fingerprint="sha256:abc"),
     "manifest: key 'base.fingerprint' must be 'sha256:' followed by 64 lowercase hex digits"),
    (lambda d: d["manifest"]["classes"][1].update(index=0),
     "manifest: key 'classes[1].index' is 0, must be 1 (indices are 0..C-1 in order)"),
    (lambda d: d["manifest"]["recipe"].pop("epochs"), "manifest: missing required key 'recipe.epochs'"),
    (lambda d: d["manifest"]["images"].update(size=True), "manifest: key 'images.size' must be a positive integer"),
])
def test_writer_refuses_inconsistent_inputs(tmp_path: Path, mutate, message) -> None:
    doc = base_doc()
    mutate(doc)
    with pytest.raises(ArchiveError) as e:
        write(doc, tmp_path / "a.hellopack")
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_names_and_writer_keys() -> None:
    doc = base_doc()
    with writer_for(doc) as w:
        with pytest.raises(ArchiveError, match=r"^manifest: member name '\.\./x' is not allowed"):
            w.add_member("../x", b"")
        with pytest.raises(ArchiveError, match=r"^images.tar: is built from add_image"):
            w.add_member("images.tar", b"")
        with pytest.raises(ArchiveError, match=r"^images.tar: image key 'a/b' is not allowed"):
            w.add_image("a/b", 0, b"x")
        with pytest.raises(ArchiveError, match=r"^images.tar: image 'k': extension 'gif'"):
            w.add_image("k", 0, b"x", "gif")
    doc["manifest"]["members"] = []
    with pytest.raises(ArchiveError, match=r"^manifest: key 'members' is filled in by the writer"):
        writer_for(doc)


def test_verify_decodes_images_fully(tmp_path: Path) -> None:
    doc = base_doc()
    good = png((1, 2, 3))
    truncated_png = good[: len(good) // 2]
    p = write(doc, tmp_path / "a.hellopack", images=[("a", 0, good, "png"), ("b", 1, truncated_png, "png")])
    a = open_archive(p)
    assert a.verify(decode_images=False).images_checked == 2
    with pytest.raises(ArchiveError) as e:
        a.verify()
    assert str(e.value).startswith("images.tar: image b.png does not decode as png")

    p = write(doc, tmp_path / "b.hellopack", images=[("a", 0, good, "png"), ("b", 1, png((1, 2, 3), 5), "png")])
    with pytest.raises(ArchiveError) as e:
        open_archive(p).verify()
    assert str(e.value) == "images.tar: image b.png is 5x5, the manifest's images.size is 4"

    jpg = png((1, 2, 3), fmt="JPEG")
    p = write(doc, tmp_path / "c.hellopack", images=[("a", 0, good, "png"), ("b", 1, jpg, "png")])
    with pytest.raises(ArchiveError, match=r"^images.tar: image b.png does not decode as png"):
        open_archive(p).verify()
    p = write(doc, tmp_path / "d.hellopack", images=[("a", 0, good, "png"), ("b", 1, jpg, "jpg")])
    assert open_archive(p).verify().images_checked == 2


def test_canonical_manifest_bytes(tmp_path: Path) -> None:
    p = write(base_doc(), tmp_path / "a.hellopack")
    blob = p.read_bytes()
    n = int.from_bytes(blob[16:24], "little")
    raw = blob[56:56 + n]
    assert raw == canonical_json(json.loads(raw))
