"""Small rules about a training run that the loop applies before it starts."""

from __future__ import annotations


def default_run_name(stem: str, arch: str, labels: str, images: str = "archive") -> str:
    """``ARCHIVE-ARCH`` for projector labels, ``ARCHIVE-ARCH-LABELS`` otherwise, then ``-IMAGES`` for real
    images (--images random/full): runs that differ only in --labels or --images never share a folder."""
    kind = labels.split(":", 1)[0]  # stored:FILE -> stored
    name = f"{stem}-{arch}" if kind == "projector" else f"{stem}-{arch}-{kind}"
    return name if images == "archive" else f"{name}-{images}"


SMALL_INPUT_PX = 112  # torchvision's ImageNet classifiers are designed for 224 px


def input_size_note(arch: str, size: int) -> str | None:
    """A note for an ImageNet architecture trained far below its usual input size (e.g. swin_v2_t at 32 px)."""
    if size >= SMALL_INPUT_PX or arch.startswith("convnet") or arch.endswith("_cifar"):
        return None
    return (f"{arch} is designed for 224 px inputs and the archive's images are {size} px: expect low accuracy "
            "(its stem downsamples them to a few pixels); for small images try convnet or resnet18_cifar")
