"""The build pipeline (data -> teachers -> projector fit -> RDED selection -> image update -> archive).

``from hellopack.distill import BuildConfig, build``; `hellopack teach` lives in
``hellopack.distill.teach`` (TeachConfig, teach, load_trajectory). Heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path

from hellopack.distill.config import BuildConfig
from hellopack.progress import NULL, Reporter


def build(cfg: BuildConfig, reporter: Reporter = NULL) -> Path:
    """Run or resume a build; returns the archive path (see hellopack.distill.pipeline)."""
    from hellopack.distill.pipeline import build as _build

    return _build(cfg, reporter)


__all__ = ["BuildConfig", "build"]
