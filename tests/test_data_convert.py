"""Every image mode becomes 8-bit RGB; broken files become BadImage with a short reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from hellopack.data.convert import BadImage, open_rgb, to_rgb


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _px(img: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return img.getpixel(xy)


def test_grayscale_becomes_three_equal_channels():
    img = open_rgb(_encode(Image.new("L", (4, 4), 77)))
    assert img.size == (4, 4) and _px(img) == (77, 77, 77)


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 1  # palette entry 1 (blue) is transparent
    img = open_rgb(_encode(pal))
    assert _px(img, (0, 0)) == (255, 0, 0)
    assert _px(img, (1, 0)) == (255, 255, 255)


def test_palette_without_transparency_keeps_colours():
    pal = Image.new("P", (1, 1))
    pal.putpalette([10, 200, 30] + [0] * 765)
    assert _px(open_rgb(_encode(pal))) == (10, 200, 30)


def test_rgba_half_transparent_red_over_white_is_pink():
    img = open_rgb(_encode(Image.new("RGBA", (3, 3), (255, 0, 0, 128))))
    r, g, b = _px(img)
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_fully_transparent_la_is_white_and_opaque_la_keeps_gray():
    la = Image.new("LA", (2, 1), (50, 0))
    la.putpixel((1, 0), (50, 255))
    img = open_rgb(_encode(la))
    assert _px(img, (0, 0)) == (255, 255, 255)
    assert _px(img, (1, 0)) == (50, 50, 50)


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    img = open_rgb(_encode(cmyk, "JPEG", quality=95))
    r, g, b = _px(img, (4, 4))
    assert r > 240 and g < 15 and b < 15


def test_16_bit_png_is_scaled_to_8_bit():
    a = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 32896 = 128 * 257
    wide = Image.fromarray(a)
    assert wide.mode.startswith("I;16")
    img = open_rgb(_encode(wide))
    assert [_px(img, (x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_32_bit_int_and_float_modes():
    ints = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert [_px(to_rgb(ints), (x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert [_px(to_rgb(floats), (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, g, b = _px(open_rgb(buf.getvalue()))
    assert r > 200 and b < 50


def test_rgb_file_path_roundtrip(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (5, 3), (1, 2, 3)).save(p)
    img = open_rgb(p)
    assert img.size == (5, 3) and _px(img) == (1, 2, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"definitely not an image", "not an image Pillow can read"),
])
def test_broken_bytes(data, reason):
    with pytest.raises(BadImage, match=reason):
        open_rgb(data)


def test_truncated_jpeg_and_empty_file(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _encode(noise, "JPEG")
    with pytest.raises(BadImage, match="truncated image data"):
        open_rgb(data[: len(data) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BadImage, match="empty file"):
        open_rgb(empty)
    with pytest.raises(BadImage, match="cannot read"):
        open_rgb(tmp_path / "missing.jpg")


def test_decompression_bomb_is_bad_and_warning_is_silenced(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warn above 1000 px, error above 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked DecompressionBombWarning would fail here
        assert open_rgb(_encode(Image.new("RGB", (40, 40)))).size == (40, 40)
    with pytest.raises(BadImage, match="decompression bomb"):
        open_rgb(_encode(Image.new("RGB", (50, 50))))
