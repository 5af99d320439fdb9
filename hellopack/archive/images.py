"""The archive's image encodings (spec section 3.4): one encoder for writers, one checked decoder for readers.

``encode_image`` gives the same bytes for the same pixels and settings with the same Pillow and
codec library (no metadata, every encoder option fixed). ``decode_image`` is the only way hellopack
turns stored bytes into pixels: it checks the magic for the declared extension, reads the pixel
count from the header before decoding anything, refuses animated / multi-frame files and colour
modes other than 8-bit RGB, and turns every decoder failure into one ``ArchiveError`` naming the
member. It opens files with the format's own Pillow plugin, so ``Image.MAX_IMAGE_PIXELS`` (global
state) plays no part: the caps here are explicit.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hellopack.archive.format import IMAGES, MAX_IMAGE_PIXELS, MAX_TOTAL_IMAGE_PIXELS, ArchiveError

# encoding name (build's --image-format) -> file extension inside images.tar
ENCODING_EXTS = {"png": "png", "webp": "webp", "webp-lossless": "webp", "jpeg": "jpg"}
LOSSY = ("webp", "jpeg")
IMAGE_KEYS_1_2 = ("encoding", "quality", "encoder")  # the manifest's images.* keys added in format 1.2
PNG_COMPRESS_LEVEL = 6  # zlib's default, fixed so the bytes do not depend on Pillow's default
WEBP_METHOD = 4  # libwebp's speed/size trade-off, fixed (Pillow's default too)
JPEG_SUBSAMPLING = 2  # 4:2:0, fixed (Pillow's default depends on the quality)
_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpg": (b"\xff\xd8\xff",), "webp": (b"RIFF",)}


@dataclass(frozen=True)
class Codec:
    """How a writer encodes: ``encoding`` one of ENCODING_EXTS, ``quality`` 1..100 (lossy encodings only)."""

    encoding: str = "png"
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODING_EXTS:
            raise ValueError(f"image encoding {self.encoding!r} is not one of {', '.join(ENCODING_EXTS)}")
        if self.encoding in LOSSY and not (isinstance(self.quality, int) and 1 <= self.quality <= 100):
            raise ValueError(f"{self.encoding} needs a quality 1..100, got {self.quality!r}")

    @property
    def ext(self) -> str:
        return ENCODING_EXTS[self.encoding]

    @property
    def lossless(self) -> bool:
        return self.encoding not in LOSSY

    def encode(self, arr: np.ndarray) -> bytes:
        """uint8 HWC RGB -> bytes; no metadata chunks, every option fixed: same pixels, same bytes."""
        from PIL import Image

        im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGB")
        buf = io.BytesIO()
        if self.encoding == "png":
            im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
        elif self.encoding == "webp":
            im.save(buf, format="WEBP", quality=self.quality, method=WEBP_METHOD, exact=False)
        elif self.encoding == "webp-lossless":
            im.save(buf, format="WEBP", lossless=True, quality=100, method=WEBP_METHOD, exact=True)
        else:
            im.save(buf, format="JPEG", quality=self.quality, subsampling=JPEG_SUBSAMPLING, optimize=False,
                    progressive=False)
        return buf.getvalue()

    def manifest(self) -> dict[str, Any]:
        """The manifest's image-encoding keys (format 1.2): format, encoding, quality, encoder."""
        return {"format": self.ext, "encoding": self.encoding, "quality": self.quality,
                "encoder": encoder_identity(self.encoding)}


def encoder_identity(encoding: str) -> str:
    """The library versions whose bytes the archive holds (lossy output may change between versions)."""
    import PIL
    from PIL import features

    lib = {"png": ("zlib", "zlib"), "webp": ("webp", "libwebp"), "webp-lossless": ("webp", "libwebp"),
           "jpeg": ("jpg", "libjpeg")}[encoding]
    version = features.version(lib[0]) or "unknown"
    name = lib[1]
    if encoding == "jpeg" and features.check_feature("libjpeg_turbo"):
        name, version = "libjpeg-turbo", features.version_feature("libjpeg_turbo") or version
    return f"Pillow {PIL.__version__} / {name} {version}"


def check_image_budget(images: Mapping[str, Any], max_pixels: int = MAX_IMAGE_PIXELS,
                       max_total: int = MAX_TOTAL_IMAGE_PIXELS) -> int:
    """Refuse, from the manifest alone (before any decoding), images larger than the per-image cap
    or more decoded pixels in all than the total budget. Returns the declared total."""
    size, count = int(images["size"]), int(images["count"])
    if size * size > max_pixels:
        raise ArchiveError("manifest", f"images.size {size} means {size * size} pixels per image, over the "
                                       f"{max_pixels}-pixel limit")
    total = count * size * size
    if total > max_total:
        raise ArchiveError("manifest", f"images.count {count} x images.size {size}^2 = {total} decoded pixels, "
                                       f"over the {max_total}-pixel budget")
    return total


def _reject(name: str, defect: str) -> ArchiveError:
    return ArchiveError(IMAGES, f"image {name} {defect}")


def _png_header(name: str, data: bytes) -> None:
    # IHDR is the first chunk: bit depth and colour type say whether it is 8-bit RGB before Pillow
    # (which silently narrows 16-bit to 8-bit) sees it.
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _reject(name, "does not decode as png (no IHDR chunk)")
    depth, colour = data[24], data[25]
    if (depth, colour) != (8, 2):
        kind = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}.get(colour, f"colour type {colour}")
        raise _reject(name, f"has mode {kind} (bit depth {depth}), archives store 8-bit RGB")
    idat = data.find(b"IDAT")
    if b"acTL" in (data[:idat] if idat >= 0 else data):  # APNG's animation control precedes the image data
        raise _reject(name, "is animated (APNG), archives store single images")


def _plugin(ext: str) -> Any:
    if ext == "png":
        from PIL.PngImagePlugin import PngImageFile
        return PngImageFile
    if ext == "jpg":
        from PIL.JpegImagePlugin import JpegImageFile
        return JpegImageFile
    from PIL.WebPImagePlugin import WebPImageFile
    return WebPImageFile


def decode_image(name: str, ext: str, data: bytes, max_pixels: int = MAX_IMAGE_PIXELS,
                 size: int | None = None) -> np.ndarray:
    """Stored bytes of image ``name`` (``KEY.ext``) -> uint8 HWC RGB pixels, or ArchiveError('images.tar', ...).

    ``size``: the manifest's images.size, checked from the header before decoding."""
    from PIL import Image

    if ext not in _MAGIC:
        raise _reject(name, f"has extension .{ext}, not one of {', '.join(_MAGIC)}")
    if not data.startswith(_MAGIC[ext]) or (ext == "webp" and data[8:12] != b"WEBP"):
        raise _reject(name, f"does not decode as {ext} (its bytes do not start with the {ext} signature)")
    if ext == "png":
        _png_header(name, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warnings: the caps below are explicit
            im = _plugin(ext)(io.BytesIO(data))
    except Exception as e:  # Pillow raises many types for broken headers
        raise _reject(name, f"does not decode as {ext} ({type(e).__name__})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise _reject(name, f"is {w}x{h}, over the {max_pixels}-pixel limit")
        if size is not None and (w, h) != (size, size):
            raise _reject(name, f"is {w}x{h}, the manifest's images.size is {size}")
        if getattr(im, "n_frames", 1) != 1 or getattr(im, "is_animated", False):
            raise _reject(name, "has several frames (animated), archives store single images")
        if ext == "jpg" and any(m == "APP2" and d.startswith(b"MP\x00") for m, d in im.applist):
            raise _reject(name, "is a multi-picture JPEG (MPO), archives store single images")
        if im.mode != "RGB":
            raise _reject(name, f"has mode {im.mode}, archives store 8-bit RGB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
                arr = np.asarray(im, dtype=np.uint8)
        except Exception as e:
            raise _reject(name, f"does not decode as {ext} ({type(e).__name__})") from None
    if arr.shape != (h, w, 3):
        raise _reject(name, f"decodes to shape {arr.shape}, archives store {h}x{w} RGB")
    return arr
