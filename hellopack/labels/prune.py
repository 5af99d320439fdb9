"""LPLD's random label pruning, at the granularity of a batch (a training step).

LPLD (he-y/soft-label-pruning-for-dataset-distillation, relabel_and_validate/
train_FKD_label_pruning_batch.py, commit 63eee18) keeps the labels of a fraction of the
recorded batches (its "pool") and still trains the full number of steps: each step draws a
batch from the pool, uniformly with replacement. Here the kept batches are a seeded random
subset of the steps; a kept step trains on its own batch and a pruned step on a kept batch
drawn uniformly from (seed, step). With nothing pruned every step trains on its own batch, so
stored labels then replay train's run exactly. (LPLD's pool is the first fraction of its
batches and it draws every step, kept or not; both pick i.i.d. random batches.)
"""

from __future__ import annotations

import numpy as np

KEEP_STREAM = 0x6B656570  # "keep": the subset of kept steps
DRAW_STREAM = 0x64726177  # "draw": the kept batch a pruned step trains on


def kept_count(total: int, keep: float) -> int:
    """round(keep * total) steps, at least one."""
    return max(1, min(total, int(round(keep * total))))


def kept_steps(total: int, keep: float, seed: int) -> np.ndarray:
    """The steps whose labels are kept, ascending (all of them when keep is 1)."""
    n = kept_count(total, keep)
    if n == total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), KEEP_STREAM]))
    return np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)


def source_step(step: int, kept: np.ndarray, seed: int, is_kept: bool) -> int:
    """The recorded batch that training step ``step`` trains on."""
    if is_kept:
        return int(step)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step), DRAW_STREAM]))
    return int(kept[int(rng.integers(len(kept)))])
