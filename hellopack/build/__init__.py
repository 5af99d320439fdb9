"""The build pipeline (data -> teachers -> projector fit -> RDED selection -> image update -> archive).

``from hellopack.build import BuildConfig, build``; `hellopack teach` lives in
``hellopack.build.teach`` (TeachConfig, teach, load_trajectory). Heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path

from hellopack.build.config import BuildConfig
from hellopack.progress import NULL, Reporter


def build(cfg: BuildConfig, reporter: Reporter = NULL) -> Path:
    """Run or resume a build; returns the archive path (see hellopack.build.pipeline)."""
    from hellopack.build.pipeline import build as _build

    return _build(cfg, reporter)


__all__ = ["BuildConfig", "build"]
