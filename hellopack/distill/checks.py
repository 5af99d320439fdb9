"""Warnings a build gives when its projector's labels are unlikely to help a student."""

from __future__ import annotations

import math
from typing import Any, Mapping

MIN_HELD_OUT = 100  # below this the agreement's 95 % interval is wider than +-10 points
NEAR_CHANCE = 1.5  # agreement below this multiple of chance (1 / classes) is "near chance"


def fidelity_warnings(report: Mapping[str, Any], num_classes: int) -> list[str]:
    """What to tell the user about a fidelity report (agreement with the teachers on held-out images)."""
    out = []
    agreement, n = float(report.get("agreement", 0.0)), int(report.get("images", 0))
    chance = 1.0 / max(1, num_classes)
    if n < MIN_HELD_OUT:
        half = 1.96 * math.sqrt(max(agreement * (1 - agreement), 0.25 / max(n, 1)) / max(n, 1))
        out.append(f"the fidelity figures come from {n} held-out image{'s' if n != 1 else ''} only (agreement "
                   f"{agreement:.1%} +- {half:.0%}); they say little. Give more held-out images: a dataset with a "
                   "test or val split, or a larger --val-fraction")
    if agreement * max(1, num_classes) < NEAR_CHANCE:
        out.append(f"the projector agrees with the teachers on {agreement:.1%} of held-out images, near chance "
                   f"({chance:.1%} for {num_classes} classes): its labels may train students worse than hard labels. "
                   "Try more --fit-epochs, a higher --fit-lr, a pretrained base (--clip-weights or `hellopack "
                   "pretrain-base`), or check that the teachers are better than chance")
    return out
