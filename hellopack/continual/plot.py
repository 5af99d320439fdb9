"""Accuracy against the number of classes seen, one line per label source (the paper's Figure 2).

matplotlib is not a dependency: it is used when installed, otherwise the plot is
drawn with Pillow (axes, ticks, grid, axis labels, legend), same size either way.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes

WIDTH, HEIGHT = 900, 560
COLORS = {"projector": (31, 119, 180), "hard": (255, 127, 14), "teacher": (44, 160, 44)}
OTHER_COLORS = [(214, 39, 40), (148, 103, 189), (140, 86, 75)]
LEGEND = {"projector": "projector labels (HeLlO)", "hard": "hard labels only", "teacher": "teacher labels"}


def series(runs: Mapping[str, Sequence[dict]]) -> dict[str, list[tuple[int, float]]]:
    """``{source: [(classes seen, top-1 %), ...]}`` from continual.json's ``runs``."""
    return {src: [(int(r["classes_seen"]), float(r["top1"])) for r in rows] for src, rows in runs.items() if rows}


def plot_accuracy(runs: Mapping[str, Sequence[dict]], path: str | Path, *, title: str,
                  backend: str = "auto") -> str:
    """Write the PNG atomically; return the backend used ("matplotlib" or "pillow")."""
    data = series(runs)
    if not data:
        raise HellopackError("no finished step to plot yet")
    if backend in ("auto", "matplotlib"):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if backend == "matplotlib":
                raise HellopackError("matplotlib is not installed; install it or use the Pillow plot") from None
        else:
            atomic_write_bytes(Path(path), _matplotlib_png(data, title))
            return "matplotlib"
    atomic_write_bytes(Path(path), _pillow_png(data, title))
    return "pillow"


def _color(src: str, i: int) -> tuple[int, int, int]:
    return COLORS.get(src, OTHER_COLORS[i % len(OTHER_COLORS)])


def y_axis(values: Sequence[float]) -> tuple[float, float]:
    """(top, tick step): 0..top in percent, top a multiple of the step, at most 100 unless a value exceeds it."""
    hi = max(max(values), 1e-9)
    step = 5.0 if hi <= 30 else 10.0
    top = max(step * 2, math.ceil(hi / step) * step)
    return (min(top, 100.0) if hi <= 100 else top), step


def _matplotlib_png(data: dict[str, list[tuple[int, float]]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    ax = fig.subplots()
    for i, (src, pts) in enumerate(data.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", color=tuple(c / 255 for c in _color(src, i)), label=LEGEND.get(src, src))
    top, step = y_axis([y for pts in data.values() for _, y in pts])
    ax.set_ylim(0, top)
    ax.set_yticks([step * k for k in range(int(top / step) + 1)])
    ax.set_xticks(sorted({x for pts in data.values() for x, _ in pts}))
    ax.set_xlabel("classes seen")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, loc="left")
    ax.grid(True, color="#dddddd")
    ax.legend(loc="upper right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _pillow_png(data: dict[str, list[tuple[int, float]]], title: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    def font(size: int):
        try:
            return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
        except TypeError:  # Pillow < 10.1: one bitmap size
            return ImageFont.load_default()

    small, normal, big = font(13), font(15), font(17)
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    left, right, top_m, bottom = 80, WIDTH - 30, 80, HEIGHT - 70
    xs_all = sorted({x for pts in data.values() for x, _ in pts})
    x_lo, x_hi = (0, xs_all[-1]) if len(xs_all) == 1 else (xs_all[0], xs_all[-1])
    pad = (x_hi - x_lo) * 0.04 or 1
    x_lo, x_hi = x_lo - pad, x_hi + pad
    y_top, y_step = y_axis([y for pts in data.values() for _, y in pts])

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left), bottom - y / y_top * (bottom - top_m))

    d.text((left, 16), title, fill="black", font=big)
    # grid and y ticks
    for k in range(int(round(y_top / y_step)) + 1):
        y = k * y_step
        _, yy = px(x_lo, y)
        d.line([(left, yy), (right, yy)], fill=(225, 225, 225))
        d.line([(left - 5, yy), (left, yy)], fill="black")
        d.text((left - 9, yy), f"{y:g}", fill="black", font=small, anchor="rm")
    for x in xs_all:
        xx, _ = px(x, 0)
        d.line([(xx, top_m), (xx, bottom)], fill=(240, 240, 240))
        d.line([(xx, bottom), (xx, bottom + 5)], fill="black")
        d.text((xx, bottom + 9), str(x), fill="black", font=small, anchor="mt")
    d.line([(left, top_m), (left, bottom), (right, bottom)], fill="black", width=2)
    d.text(((left + right) / 2, bottom + 34), "classes seen", fill="black", font=normal, anchor="mt")
    ylabel = Image.new("RGBA", (260, 24), (255, 255, 255, 0))
    ImageDraw.Draw(ylabel).text((130, 12), "top-1 accuracy (%)", fill="black", font=normal, anchor="mm")
    ylabel = ylabel.rotate(90, expand=True)
    img.paste(ylabel, (14, int((top_m + bottom) / 2 - ylabel.height / 2)), ylabel)
    # lines with markers
    for i, (src, pts) in enumerate(data.items()):
        color = _color(src, i)
        coords = [px(x, y) for x, y in pts]
        if len(coords) > 1:
            d.line(coords, fill=color, width=3, joint="curve")
        for cx, cy in coords:
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=color, outline="white")
    # legend: top-right, above the axes, so it never hides a point
    entries = [(LEGEND.get(src, src), _color(src, i)) for i, src in enumerate(data)]
    x = right
    for text, color in reversed(entries):
        w = d.textlength(text, font=normal)
        x -= w
        d.text((x, 54), text, fill="black", font=normal, anchor="lm")
        x -= 34
        d.line([(x, 54), (x + 26, 54)], fill=color, width=3)
        d.ellipse([x + 8, 49, x + 18, 59], fill=color)
        x -= 22
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
