"""A seeded random draw of real images per class, decoded at a fixed size (DD-Ranking's random subset).

DD-Ranking draws ``ipc`` images per class uniformly without replacement, anew for every evaluation run
(``random.sample`` per class). Here the source is visited in one seeded random order (random-access
sources; a streaming source is read in a seeded shard order, as the build's draw is) and each class keeps
its first ``per_class`` images: the same uniform draw without a list per class. Images pass through the
source's evaluation view (shorter side to size / crop_pct, centre crop to ``size``: how the build's
loaders read real images) and are kept as uint8, like an archive's images.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from hellopack.data.loader import eval_transform
from hellopack.data.types import ImageSource, Sample
from hellopack.errors import HellopackError

SALT = 0x72616E64  # "rand": a stream apart from the build's selection draw ("draw")


def _order(src: ImageSource, seed: int) -> Iterator[Sample]:
    stream_seed = int(np.random.SeedSequence([int(seed), SALT]).generate_state(1)[0])
    if src.random_access:
        order = torch.randperm(int(src.num_samples or 0), generator=torch.Generator().manual_seed(stream_seed))
        entries: Iterator = (src.entry_at(int(i)) for i in order)
    else:
        entries = (entry for _, entry in src.iter_entries(stream_seed))
    for entry in entries:
        sample = src.load_entry(entry)
        if sample is not None:
            yield sample


def random_subset(src: ImageSource, per_class: int | None, seed: int, size: int,
                  class_map: Sequence[int | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of every class (None: all of them), drawn with ``seed``; uint8 [N,3,size,size]
    and class ids [N], class by class.

    ``class_map[source label]`` is the class id to give an image (None: leave the class out); default:
    the source's own labels.
    """
    mapping = list(class_map) if class_map is not None else list(range(src.num_classes))
    wanted = sorted({c for c in mapping if c is not None})
    counts = src.count_per_class()
    if per_class is not None and counts is not None:
        for label, c in enumerate(mapping):
            if c is not None and counts[label] < per_class:
                info = src.classes[label]
                raise HellopackError(f"class '{info.source_id}' ({info.name}) has {counts[label]} images in "
                                     f"'{src.where}' but {per_class} per class are drawn; ask for fewer")
    picked: dict[int, list[torch.Tensor]] = {c: [] for c in wanted}
    to_tensor = eval_transform(size, src.crop_pct)
    full = 0
    for sample in _order(src, seed):
        c = mapping[sample.label]
        if c is None or (per_class is not None and len(picked[c]) >= per_class):
            continue
        picked[c].append(to_tensor(sample.image).mul(255.0).round_().clamp_(0, 255).to(torch.uint8))
        full += per_class is not None and len(picked[c]) == per_class
        if per_class is not None and full == len(wanted):
            break
    for c in wanted:
        if not picked[c] or (per_class is not None and len(picked[c]) < per_class):
            label = mapping.index(c)
            info = src.classes[label]
            raise HellopackError(f"class '{info.source_id}' ({info.name}) has {len(picked[c])} readable images in "
                                 f"'{src.where}' but {per_class or 1} per class are drawn; ask for fewer")
    images = torch.stack([x for c in wanted for x in picked[c]])
    labels = torch.tensor([c for c in wanted for _ in picked[c]], dtype=torch.long)
    return images, labels
