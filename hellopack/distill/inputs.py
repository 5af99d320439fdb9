"""What each build stage depends on, as one frozen dataclass per stage.

A stage's key (hellopack.distill.stages.stage_key) hashes ``dataclasses.asdict`` of its
inputs plus the key of the stage before it. Every field is required, so a setting cannot be
left out of a key (which would let a changed flag reuse a stale stage); adding a setting to a
stage means adding a field here. Field names and order are those of the dicts the keys were
made from before, so existing work folders still resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hellopack.distill.stages import stage_key


class _Inputs:
    STAGE = ""

    def key(self, upstream: str = "") -> str:
        return stage_key(self.STAGE, asdict(self), upstream)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ScanInputs(_Inputs):
    STAGE = "scan"
    recipe: str
    data_dir: str | None
    classes_file: str | None
    synthetic: Any
    image_size: int | None
    max_bad_fraction: float
    val_fraction: float
    max_images: int | None
    fidelity_images: int | None


@dataclass(frozen=True)
class TeachersInputs(_Inputs):
    STAGE = "teachers"
    specs: list  # each teacher spec with its checkpoint's size and sha256


@dataclass(frozen=True)
class FitInputs(_Inputs):
    STAGE = "fit"
    base: str
    fingerprint: str
    templates: list
    rank_encoder: int
    rank_head: int
    alpha: float
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    lam: float
    seed: int
    world: int


@dataclass(frozen=True)
class SelectInputs(_Inputs):
    STAGE = "select"
    ipc: int
    factor: int
    size: int
    n_real: int
    m_crops: int
    crop_scale: list
    seed: int
    allow_short: bool
    observer: str
    scored_as: dict | None  # a lossy codec the views pass through ({"encoding", "quality"}); None: lossless
    draw: str = "rded"  # RDED's draw: N random images per class (the key of older draws differs)

    def key(self, upstream: str = "") -> str:
        # A lossless encoding stores the pixels the observer scored before codecs existed: its key leaves
        # scored_as out, so PNG / lossless-WebP work folders keep their selection.
        parts = asdict(self)
        if parts["scored_as"] is None:
            del parts["scored_as"]
        return stage_key(self.STAGE, parts, upstream)


@dataclass(frozen=True)
class UpdateInputs(_Inputs):
    STAGE = "update"
    update: bool
    steps: int
    lr: float


@dataclass(frozen=True)
class AugmentInputs:
    crop_scale: list
    factor: int
    patch_shuffle: bool
    shuffle: str
    mix: str
    mix_alpha: float


@dataclass(frozen=True)
class RefineInputs(_Inputs):
    STAGE = "refine"
    steps: int
    lr: float
    weight_decay: float
    batch_size: int
    lam: float
    seed: int
    augment: AugmentInputs
    fit: str  # the fit's key: a refit invalidates the refine even when the update is reused
