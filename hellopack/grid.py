"""Contact sheet of an archive's images: one row per class, first classes when there are many."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hellopack.archive import Archive
from hellopack.fsutil import atomic_write

LABEL_WIDTH = 140


def contact_sheet(
    archive: Archive,
    out: str | Path,
    max_classes: int = 20,
    max_per_class: int = 10,
    tile: int = 96,
) -> Path:
    """Write a PNG with up to ``max_per_class`` images for each of the first ``max_classes`` classes."""
    classes = archive.manifest["classes"]
    rows = min(len(classes), max_classes)
    picked: dict[int, list[Image.Image]] = {c: [] for c in range(rows)}
    # streamed through the archive's checked reader (caps, magic, modes): memory holds only the tiles shown
    for rec, arr in archive.decoded_images():
        if rec.cls < rows and len(picked[rec.cls]) < max_per_class:
            picked[rec.cls].append(Image.fromarray(arr, "RGB").resize((tile, tile), Image.Resampling.NEAREST))
    cols = max((len(v) for v in picked.values()), default=1) or 1
    sheet = Image.new("RGB", (LABEL_WIDTH + cols * (tile + 2), rows * (tile + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r in range(rows):
        y = r * (tile + 2)
        name = str(classes[r]["name"])
        draw.text((4, y + tile // 2 - 6), f"{r}: {name[:18]}", fill="black", font=font)
        for c, im in enumerate(picked[r]):
            sheet.paste(im, (LABEL_WIDTH + c * (tile + 2), y))
    out = Path(out)
    with atomic_write(out) as f:
        sheet.save(f, format="PNG")
    return out
