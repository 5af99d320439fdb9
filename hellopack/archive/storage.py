"""What an archive replaces: the soft-label files SRe2L-style pipelines store, in bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hellopack.archive.format import LORA, PROMPTS

LOGIT_BYTES = 2  # one fp16 logit
# Per augmented view, SRe2L/RDED label files also keep the augmentation that produced it:
# crop box 4 x float32 (16) + flip flag 1 byte + mix partner int32 (4) + mix box 4 x float32 (16)
# + mix lambda float32 (4) = 41 bytes.
AUG_RECORD_BYTES = 4 * 4 + 1 + 4 + 4 * 4 + 4


@dataclass(frozen=True)
class LabelStorage:
    epochs: int
    images: int
    classes: int
    soft_label_bytes: int  # epochs x images x classes x 2
    aug_record_bytes: int  # epochs x images x AUG_RECORD_BYTES
    total_bytes: int  # soft labels + augmentation records
    payload_bytes: int  # stored size of lora.safetensors + prompts.json
    ratio: float  # total_bytes / payload_bytes


def label_storage_from_counts(classes: int, images: int, epochs: int, payload_bytes: int) -> LabelStorage:
    soft = epochs * images * classes * LOGIT_BYTES
    aug = epochs * images * AUG_RECORD_BYTES
    total = soft + aug
    return LabelStorage(epochs, images, classes, soft, aug, total, payload_bytes,
                        total / payload_bytes if payload_bytes else float("inf"))


def label_storage(manifest: Mapping[str, Any], *, epochs: int | None = None) -> LabelStorage:
    """Label bytes this archive replaces, from a (validated) manifest; epochs default to recipe.epochs."""
    stored = {m["name"]: m["stored_size"] for m in manifest["members"]}
    return label_storage_from_counts(
        classes=len(manifest["classes"]),
        images=manifest["images"]["count"],
        epochs=manifest["recipe"]["epochs"] if epochs is None else epochs,
        payload_bytes=stored[LORA] + stored[PROMPTS],
    )


@dataclass(frozen=True)
class WholeStorage:
    """The whole archive against what a stored-label user ships for the same images: the images as
    stored here (the same encoded bytes) plus the soft labels and augmentation records."""

    images_bytes: int  # stored size of images.tar
    archive_bytes: int  # images + label payload (what hellopack ships, members as stored)
    stored_label_bytes: int  # images + soft labels + augmentation records
    ratio: float  # stored_label_bytes / archive_bytes
    label_ratio: float  # the label-only ratio (LabelStorage.ratio)


def whole_storage(manifest: Mapping[str, Any], *, epochs: int | None = None) -> WholeStorage:
    from hellopack.archive.format import IMAGES

    labels = label_storage(manifest, epochs=epochs)
    images = {m["name"]: m["stored_size"] for m in manifest["members"]}[IMAGES]
    ours, theirs = images + labels.payload_bytes, images + labels.total_bytes
    return WholeStorage(images, ours, theirs, theirs / ours if ours else float("inf"), labels.ratio)
