"""`hellopack eval rank`: DD-Ranking's scores (HLR, IOR, LRS, ARS) for an archive.

``scores`` is pure (no torch); ``rank`` trains the rows through hellopack.train.train.
"""

from __future__ import annotations

from typing import Any

from hellopack.progress import NULL, Reporter
from hellopack.rank.config import RankConfig


def rank(cfg: RankConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train the rows DD-Ranking compares and score them; returns rank.json's content (hellopack.rank.run)."""
    from hellopack.rank.run import rank as _rank

    return _rank(cfg, reporter)


__all__ = ["RankConfig", "rank"]
