"""Decode any image file into an 8-bit RGB PIL image, or say why it cannot be.

Rules (one place, so every source behaves the same):

- grayscale ``L``/``1``, ``YCbCr``, ``CMYK`` (Pillow undoes Adobe's inverted CMYK on
  decode) and anything else Pillow converts: ``convert("RGB")``;
- transparency (``RGBA``, ``LA``, ``PA``, palette images with a ``transparency`` entry) is
  composited over WHITE. Transparent regions are usually "no background" (logos,
  product shots); dropping alpha would expose whatever colour the encoder left
  under it, often black or noise;
- 16-bit and 32-bit integer modes (``I;16*``, ``I``) are scaled down to 8 bits
  (values above 255 are taken as 16-bit and divided by 257); float ``F`` in [0, 1]
  is scaled by 255, otherwise clipped to [0, 255];
- animated or multi-page files: the first frame.

Pillow's decompression-bomb guard stays at its default (an error above about 179 M
pixels, a warning between 89 M and 179 M): a 10,000 x 10,000 photo is accepted with its
warning silenced, a bomb becomes a :class:`BadImage` that the sources count and skip.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image

# Lower-case extensions every source accepts (ImageFolder trees and WebDataset keys).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
WDS_IMAGE_KEYS = tuple(e[1:] for e in IMAGE_EXTENSIONS) + ("ppm",)


class BadImage(Exception):
    """A file that is not a decodable image; ``str(e)`` is the short reason."""


def is_image_name(name: str | bytes) -> bool:
    low = os.fsdecode(name).lower()
    return low.endswith(IMAGE_EXTENSIONS)


def open_rgb(source: str | bytes | os.PathLike) -> Image.Image:
    """Decode a file path (``str``/``PathLike``) or raw bytes (``bytes``) into RGB.

    Raises :class:`BadImage` with a short reason for anything that is not a complete,
    decodable image (empty, truncated, unknown format, bomb, unreadable file).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadImage("empty file")
        fp: object = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise BadImage("empty file")
        except OSError as e:
            raise BadImage(f"cannot read: {e.strerror or e}") from None
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:  # type: ignore[arg-type]
                img.seek(0)
                img.load()  # decode now: truncated data fails here, not later in a worker
                return to_rgb(img)
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("too many pixels (decompression bomb guard)") from None
    except MemoryError:
        raise
    except Exception as e:  # Pillow plugins raise OSError, ValueError, SyntaxError, EOFError, ...
        raise BadImage(_reason(e)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB (rules in the module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _wide_to_rgb(img)
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImage(f"unsupported image mode {mode}: {e}") from None


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    a = np.asarray(img)
    if a.ndim == 3:  # e.g. I;16 with several channels is not a Pillow mode, but be safe
        a = a[..., 0]
    a = a.astype(np.float64)
    if img.mode == "F":
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
    elif img.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = np.clip(a, 0, 65535) / 257.0
    a = np.nan_to_num(np.clip(np.rint(a), 0, 255)).astype(np.uint8)
    return Image.fromarray(np.stack([a, a, a], axis=-1), "RGB")


def _reason(e: Exception) -> str:
    text = str(e).split("\n", 1)[0].strip()
    if isinstance(e, Image.UnidentifiedImageError) or text.startswith("cannot identify image file"):
        return "not an image Pillow can read"
    if "truncated" in text.lower():
        return "truncated image data"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
