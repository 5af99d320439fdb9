"""`hellopack train --labels stored:FILE`: labels read from a `labels record` file instead of a model.

``stored_labeler`` opens the file and refuses one recorded for another archive, seed or recipe,
naming the setting and the flag that matches it. ``StoredLabeler`` is a labeler keyed by the
training step: ``source_step(step)`` is the recorded batch that step trains on (itself, or a kept
batch when LPLD's pruning dropped its labels: hellopack.labels.prune), and ``labeler(x, step)``
gives that batch's labels as logits, the form train's loss takes. The classes outside the top K
get FKD's marginal smoothing (FKD's ``Recover_soft_label``, label type ``marginal_smoothing``):
the probability the top K leave, spread evenly over the other classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hellopack.errors import HellopackError
from hellopack.labels import format as fmt
from hellopack.labels.prune import source_step
from hellopack.labels.record import identity, planned_images

PREFIX = "stored:"
# the smallest probability a class outside the top K gets: fp16's smallest subnormal, what the file resolves
REST_FLOOR = 2.0 ** -24

# identity key -> (what it is, the train flag that sets it)
SETTINGS = {
    "seed": ("seed", "--seed"), "epochs": ("epochs", "--epochs"), "batch_size": ("batch size", "--batch-size"),
    "mix": ("mix", "--mix"), "mix_alpha": ("mix alpha", "--mix-alpha"), "crop_scale": ("crop scale", "--crop-scale"),
    "patch_shuffle": ("patch shuffle", "--patch-shuffle"), "drop_last": ("drop-last", "drop_last"),
}


class StoredLabeler:
    """Labels of the recorded views, by training step; logits [B, C] on the batch's device."""

    def __init__(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        ident = header["identity"]
        self.path, self.images_sha256 = header.get("path", "?"), ident.get("images_sha256")
        self.num_classes, self.seed = int(ident["classes"]), int(ident["seed"])
        self.kept = arrays["steps"].astype(np.int64)
        self._row = {int(s): i for i, s in enumerate(self.kept)}
        n, bs, drop = int(ident["images"]), int(ident["batch_size"]), bool(ident["drop_last"])
        from hellopack.train.images import steps_images

        sizes = [steps_images(n, bs, drop, int(s) + 1) - steps_images(n, bs, drop, int(s)) for s in self.kept]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.lse = torch.from_numpy(arrays["lse"].astype(np.float32))
        self.values = torch.from_numpy(arrays["values"].astype(np.float32))
        self.classes = torch.from_numpy(arrays["classes"].astype(np.int64))

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse training images other than those the views were recorded from (another random subset,
        another decoder's pixels): the labels would belong to other pictures."""
        from hellopack.labels.record import images_sha256

        if self.images_sha256 is not None and images_sha256(images) != self.images_sha256:
            raise HellopackError(f"stored labels '{self.path}' were recorded from other training images than "
                                 "this run's (pixel digest differs); record the labels with the same --images, "
                                 "--data-dir and --seed as train, on this machine's decoder")

    def source_step(self, step: int) -> int:
        """The recorded batch training step ``step`` trains on."""
        return source_step(step, self.kept, self.seed, int(step) in self._row)

    def rows(self, step: int) -> slice:
        i = self._row[self.source_step(step)]
        return slice(int(self._offsets[i]), int(self._offsets[i + 1]))

    def __call__(self, x01: torch.Tensor, step: int) -> torch.Tensor:
        r = self.rows(step)
        logits = dense_logits(self.values[r], self.classes[r], self.lse[r], self.num_classes)
        if len(logits) != len(x01):
            raise HellopackError(f"stored labels hold {len(logits)} views for step {step}, the batch has {len(x01)}; "
                                 "record the labels for this run")
        return logits.to(x01.device)


def dense_logits(values: torch.Tensor, classes: torch.Tensor, lse: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[V, C] logits: top-K log-probabilities + lse at their classes; the rest share the leftover probability."""
    k = values.shape[1]
    out = torch.empty(len(values), num_classes)
    if k < num_classes:
        rest = (1.0 - values.exp().sum(1)).div(num_classes - k).clamp_min(REST_FLOOR)
        out[:] = rest.log()[:, None]
    out.scatter_(1, classes, values)
    return out + lse[:, None]


def stored_path(labels: str) -> str | None:
    """The FILE of ``--labels stored:FILE``, or None for the other label sources."""
    return labels[len(PREFIX):] if labels.startswith(PREFIX) else None


def stored_labeler(path: str | Path, cfg: Any, recipe: Any, manifest: dict, world_size: int = 1) -> StoredLabeler:
    """Open ``path`` and check it was recorded for this archive, seed and recipe (``cfg``: a TrainConfig)."""
    path = Path(path)
    if not path.is_file():
        raise HellopackError(f"stored labels '{path}' do not exist; record them with hellopack labels record")
    header = fmt.read_header(path)
    if cfg.seeds != 1:
        raise HellopackError(f"stored labels '{path}' hold the views of one seed ({header['identity']['seed']}); "
                             "train them with --seeds 1")
    if world_size != 1:
        raise HellopackError(f"stored labels '{path}' were recorded for one process; train them without torchrun")
    want = identity(cfg, recipe, manifest, planned_images(cfg, manifest))
    check_identity(path, header["identity"], want)
    header, arrays = fmt.read(path)
    return StoredLabeler({**header, "path": str(path)}, arrays)


def check_identity(path: Path, have: dict[str, Any], want: dict[str, Any]) -> None:
    sha = "archive_manifest_sha256"
    if have.get(sha) != want[sha]:
        raise HellopackError(f"stored labels '{path}' were recorded from another archive (manifest sha256 "
                             f"{str(have.get(sha))[:16]}..., this archive's is {want[sha][:16]}...); record them "
                             "from this archive with hellopack labels record")
    for key, value in want.items():
        if have.get(key) == value:
            continue
        what, flag = SETTINGS.get(key, (key.replace("_", " "), None))
        raise HellopackError(f"stored labels '{path}' were recorded with {what} {_shown(have.get(key))}, this run "
                             f"has {_shown(value)}; {_fix(flag, have.get(key))}record the labels for this run")


def _fix(flag: str | None, value: Any) -> str:
    """``train with --FLAG VALUE or `` where a train flag gives the recorded value."""
    if not flag or not flag.startswith("--") or value is None:
        return ""
    if isinstance(value, bool):
        return f"train with {flag if value else '--no-' + flag[2:]} or "
    return f"train with {flag} {_shown(value)} or "


def _shown(v: Any) -> str:
    return " ".join(str(x) for x in v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)
