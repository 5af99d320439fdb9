"""The archive's image encodings and its one image reader (issue 15; the image half of issue 13).

Every allowed encoding round-trips and verifies; hellopack.archive.images.decode_image refuses each
malformed image with its exact message; and `train` and `inspect --grid` now read images through it
(issue 13: they decoded images their own way and skipped verify's checks): exit 2, one stderr line,
nothing left behind.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hellopack.archive import ArchiveError, ArchiveWriter, open_archive
from hellopack.archive.images import Codec, check_image_budget, decode_image
from hellopack_cli.app import app
from test_archive_kit import base_doc, write
from test_train_kit import cached_archive

_Y, _X = np.mgrid[0:32, 0:32]
# a smooth picture (gradients, a soft disc) with a little noise: what lossy codecs are made for
PHOTO = np.clip(np.stack([_X * 8, _Y * 8, 255 - (_X - 16) ** 2 - (_Y - 16) ** 2], -1)
                + np.random.default_rng(0).normal(0, 4, (32, 32, 3)), 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---- every allowed encoding round-trips and verifies -------------------------------------------------

@pytest.mark.parametrize("encoding,quality", [("png", None), ("webp-lossless", None), ("webp", 90), ("jpeg", 90)])
def test_every_encoding_round_trips_and_verifies(tmp_path: Path, encoding: str, quality: int | None) -> None:
    codec = Codec(encoding, quality)
    data = codec.encode(PHOTO)
    assert codec.encode(PHOTO) == data  # same pixels, same bytes
    arr = decode_image(f"a.{codec.ext}", codec.ext, data, size=32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    err = np.abs(arr.astype(int) - PHOTO.astype(int))
    if codec.lossless:
        assert err.max() == 0
    else:
        assert 0 < err.mean() < 6
    doc = base_doc()
    doc["manifest"]["images"].update(size=32, count=1, format=codec.ext, **{k: v for k, v in codec.manifest().items()
                                                                           if k != "format"})
    a = open_archive(write(doc, tmp_path / "x.hellopack", images=[("a_0", 0, data, codec.ext)]))
    assert a.manifest["format_version"] == [1, 2]  # the image-encoding keys are format 1.2
    assert a.verify().images_checked == 1
    [(rec, got)] = list(a.decoded_images())
    np.testing.assert_array_equal(got, arr)


# ---- malformed images: one message each ------------------------------------------------------------

def _apng() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:])


def _anim_webp() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)


BAD = {
    "text-as-png": ("png", lambda: b"hello, not an image\n" * 4,
                    "images.tar: image x.png does not decode as png (its bytes do not start with the png signature)"),
    "gif-as-png": ("png", lambda: _save(Image.new("P", (8, 8)), "GIF"),
                   "images.tar: image x.png does not decode as png (its bytes do not start with the png signature)"),
    "png-as-jpg": ("jpg", lambda: _save(Image.new("RGB", (8, 8)), "PNG"),
                   "images.tar: image x.jpg does not decode as jpg (its bytes do not start with the jpg signature)"),
    "truncated-png": ("png", lambda: _save(Image.fromarray(PHOTO), "PNG")[:300],
                      "images.tar: image x.png does not decode as png (OSError)"),
    "over-the-pixel-cap": ("png", lambda: _save(Image.new("RGB", (1025, 1024)), "PNG"),
                           "images.tar: image x.png is 1025x1024, over the 1048576-pixel limit"),
    "apng": ("png", _apng, "images.tar: image x.png is animated (APNG), archives store single images"),
    "animated-webp": ("webp", _anim_webp,
                      "images.tar: image x.webp has several frames (animated), archives store single images"),
    "rgba-png": ("png", lambda: _save(Image.new("RGBA", (8, 8)), "PNG"),
                 "images.tar: image x.png has mode RGBA (bit depth 8), archives store 8-bit RGB"),
    "palette-png": ("png", lambda: _save(Image.new("P", (8, 8)), "PNG"),
                    "images.tar: image x.png has mode P (bit depth 1), archives store 8-bit RGB"),
    "grey-png": ("png", lambda: _save(Image.new("L", (8, 8)), "PNG"),
                 "images.tar: image x.png has mode L (bit depth 8), archives store 8-bit RGB"),
    "16-bit-png": ("png", lambda: _png16(),
                   "images.tar: image x.png has mode RGB (bit depth 16), archives store 8-bit RGB"),
    "cmyk-jpeg": ("jpg", lambda: _save(Image.new("CMYK", (8, 8)), "JPEG"),
                  "images.tar: image x.jpg has mode CMYK, archives store 8-bit RGB"),
    "grey-jpeg": ("jpg", lambda: _save(Image.new("L", (8, 8)), "JPEG"),
                  "images.tar: image x.jpg has mode L, archives store 8-bit RGB"),
    "rgba-webp": ("webp", lambda: _save(Image.new("RGBA", (8, 8), (1, 2, 3, 4)), "WEBP", lossless=True),
                  "images.tar: image x.webp has mode RGBA, archives store 8-bit RGB"),
}


def _png16() -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\x03\xe8" * 3 * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_image_is_refused_with_its_message(case: str) -> None:
    ext, make, message = BAD[case]
    with pytest.raises(ArchiveError) as e:
        decode_image(f"x.{ext}", ext, make())
    assert str(e.value) == message


def test_pixel_cap_is_read_from_the_header_and_ignores_pillows_global(monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow's own (global) bomb check plays no part
    assert decode_image("x.png", "png", _save(Image.new("RGB", (8, 8)), "PNG")).shape == (8, 8, 3)
    with pytest.raises(ArchiveError, match=r"^images.tar: image x.png is 8x8, over the 63-pixel limit$"):
        decode_image("x.png", "png", _save(Image.new("RGB", (8, 8)), "PNG"), max_pixels=63)


def test_manifest_pixel_budget_is_checked_before_decoding() -> None:
    assert check_image_budget({"size": 224, "count": 50_000}) == 50_000 * 224 * 224  # ImageNet-1K IPC 50
    with pytest.raises(ArchiveError) as e:
        check_image_budget({"size": 224, "count": 200_000})
    assert str(e.value) == ("manifest: images.count 200000 x images.size 224^2 = 10035200000 decoded pixels, "
                            "over the 8589934592-pixel budget")
    with pytest.raises(ArchiveError) as e:
        check_image_budget({"size": 2048, "count": 100})
    assert str(e.value) == "manifest: images.size 2048 means 4194304 pixels per image, over the 1048576-pixel limit"


# ---- issue 13: train and grid read images through the checked reader ----------------------------------

def _rewrite(src: Path, dst: Path, images: list[tuple[bytes, str]], size: int) -> Path:
    """``src`` (a trainable archive) with its images replaced; the manifest's images.size set to ``size``."""
    a = open_archive(src)
    m = {k: v for k, v in a.manifest.items() if k not in ("format", "format_version", "members", "tool")}
    classes = [rec.cls for rec in a.iter_images()]
    m["images"] = dict(m["images"], size=size, count=len(images))
    with ArchiveWriter(m, a.manifest["tool"]["version"]) as w:
        w.add_member("prompts.json", a.read_member("prompts.json"))
        w.add_member("lora.safetensors", a.read_member("lora.safetensors"))
        for i, (data, ext) in enumerate(images):
            w.add_image(f"{classes[i % len(classes)]:05d}_{i:04d}", classes[i % len(classes)], data, ext)
        return w.write(dst)


def _png_of(im: Image.Image) -> bytes:
    return _save(im, "PNG")


FINDINGS = {
    # 100 black 2048x2048 PNGs: a 30 kB archive that decodes to gigabytes; refused from the manifest
    "black-2048": (lambda: [(_png_of(Image.new("RGB", (2048, 2048))), "png")] * 100, 2048,
                   "manifest: images.size 2048 means 4194304 pixels per image, over the 1048576-pixel limit"),
    # an 81-megapixel image behind a manifest that says 16 px: refused from its header, never decoded
    "81-megapixel": (lambda: [(_png_of(Image.new("RGB", (9000, 9000))), "png")], 16,
                     "images.tar: image 00000_0000.png is 9000x9000, over the 1048576-pixel limit"),
    "truncated-png": (lambda: [(_png_of(Image.fromarray(PHOTO[:16, :16]))[:120], "png")], 16,
                      "images.tar: image 00000_0000.png does not decode as png (OSError)"),
    "text-as-png": (lambda: [(b"not an image at all\n" * 10, "png")], 16,
                    "images.tar: image 00000_0000.png does not decode as png (its bytes do not start with the png "
                    "signature)"),
    "gif-as-png": (lambda: [(_save(Image.new("P", (16, 16)), "GIF"), "png")], 16,
                   "images.tar: image 00000_0000.png does not decode as png (its bytes do not start with the png "
                   "signature)"),
    "rgba-as-png": (lambda: [(_save(Image.new("RGBA", (16, 16)), "PNG"), "png")], 16,
                    "images.tar: image 00000_0000.png has mode RGBA (bit depth 8), archives store 8-bit RGB"),
}


@pytest.fixture(scope="module")
def trainable(tmp_path_factory) -> Path:
    return cached_archive(tmp_path_factory, ipc=1)


@pytest.mark.parametrize("command", ["train", "grid"])
@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_issue13_image_findings_exit_2_with_one_line(trainable: Path, tmp_path: Path, finding: str,
                                                     command: str) -> None:
    make, size, defect = FINDINGS[finding]
    images = make()
    good = (_png_of(Image.fromarray(PHOTO[:size, :size])), "png") if size <= 32 else images[0]
    images += [good] * (8 - len(images))  # a full batch: train's own checks pass, the images are what fails
    archive = _rewrite(trainable, tmp_path / "bad.hellopack", images, size)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if command == "train":
        argv = ["train", str(archive), "--arch", "convnet", "--out", str(out_dir / "run"), "--epochs", "1",
                "--device", "cpu", "-q"]
    else:
        argv = ["inspect", str(archive), "--grid", str(out_dir / "sheet.png")]
    expected = f"hellopack: error: {archive}: {defect}"
    res = CliRunner().invoke(app, argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [expected]
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no run folder, no sheet, no temporary file


def test_inspect_verify_refuses_the_same(trainable: Path, tmp_path: Path) -> None:
    make, size, defect = FINDINGS["rgba-as-png"]
    archive = _rewrite(trainable, tmp_path / "bad.hellopack", make(), size)
    res = CliRunner().invoke(app, ["inspect", str(archive), "--verify"])
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1].endswith(defect)
