"""Where the soft labels of each augmented batch come from: projector, teachers, or none (hard labels).

A labeler maps a float [B,3,H,W] batch in [0,1] to float32 logits [B,C], or
``None`` for hard-label training. Stored labels (hellopack.labels.stored) are keyed by the
training step instead: they have ``source_step(step)`` and are called as ``labeler(x01, step)``. Labels are computed under inference mode and
returned as ordinary tensors so they can be loss targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from hellopack import device as devices
from hellopack.errors import HellopackError


class Labeler(Protocol):
    def __call__(self, x01: torch.Tensor) -> torch.Tensor | None: ...


class ModelLabeler:
    """Mean logits of frozen models, inference mode, bf16 autocast where the device wants it."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.models = list(models)
        self.device = device
        for m in self.models:
            m.eval().requires_grad_(False)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        """Float [B,3,H,W] in [0,1] on this labeler's device -> float32 logits [B,C] (no autograd history)."""
        with torch.inference_mode(), devices.autocast(self.device):
            logits = torch.stack([m(x01).float() for m in self.models]).mean(0)
        # a plain copy outside inference mode: inference tensors cannot be saved for backward
        return logits.clone()


class ProjectorLabeler(ModelLabeler):
    """The archive's merged projector as a labeler: ``labeler(x01)`` -> soft-label logits [B,C]."""

    def __init__(self, projector: nn.Module, device: torch.device) -> None:
        super().__init__([projector], device)


class TeacherLabeler(ModelLabeler):
    pass


class HardLabeler:
    def __call__(self, x01: torch.Tensor) -> None:
        return None


def projector_from_archive(archive: Any, clip_weights: str | Path | None = None,
                           allow_base_mismatch: bool = False, device: torch.device | str = "cpu",
                           warn=None) -> nn.Module:
    """Rebuild the archive's projector: public base + text head from the stored prompts + merged LoRA.

    Refuses a base whose weight fingerprint differs from the manifest's unless
    ``allow_base_mismatch`` (then ``warn(message)`` is called: a ``Reporter.warn``, no "warning:" prefix).
    """
    from hellopack.models.base import load_base
    from hellopack.models.projector import Projector

    manifest = archive.manifest
    base_info = manifest.get("base") or {}
    name, tag = base_info.get("name"), base_info.get("pretrained")
    if not name:
        raise HellopackError(f"archive '{archive.path}' has no base model in its manifest; it cannot regenerate labels "
                             "(use --labels hard or --labels teacher)")
    if base_info.get("custom") and clip_weights is None:
        raise HellopackError(f"archive '{archive.path}' was built on custom {name} weights "
                             f"({base_info.get('fingerprint')}); pass the same file with --clip-weights FILE")
    base = load_base(name=name, pretrained=tag, weights=Path(clip_weights) if clip_weights else None)
    want = base_info.get("fingerprint")
    if base.fingerprint != want:
        msg = (f"base model fingerprint {base.fingerprint} does not match the archive's {want} ({name}"
               f"{'/' + tag if tag else ''}); pass the CLIP weights the archive was built with "
               "(--clip-weights FILE) or --allow-base-mismatch to use these anyway")
        if not allow_base_mismatch:
            raise HellopackError(msg)
        if warn is not None:
            warn(f"{msg.split(';')[0]}; continuing because of --allow-base-mismatch")

    # the reader's validated accessors only: strict JSON, one '{}' per template, budgets (spec 5.1)
    prompts = archive.read_prompts()
    classnames, templates = list(prompts.classnames), list(prompts.templates)
    # the reader's validated layout: every rank and alpha, checked against the summary and the tensors
    layout = archive.lora_layout
    tensors = archive.read_lora()
    projector = Projector.from_layout(base, layout, classnames, templates)
    state = {f"{t.name}.lora_{k}": torch.from_numpy(tensors[f"{t.name}.lora_{k}"]) for t in layout.targets for k in "AB"}
    try:
        projector.load_lora_state_dict(state)
    except HellopackError:
        raise
    except (KeyError, RuntimeError, ValueError) as e:
        raise HellopackError(f"archive '{archive.path}': lora.safetensors does not fit base {name} "
                             f"({str(e).splitlines()[0][:160]}); the archive needs the base it was built with") from None
    merged = projector.merged()
    merged.eval().requires_grad_(False)
    return merged.to(device)


@dataclass(frozen=True)
class TeacherSet:
    """``--labels teacher``'s models: checkpoint specs, and the classes and input they were trained for."""

    specs: Sequence[str]
    num_classes: int
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]


def build_labeler(kind: str, *, archive: Any, teachers: TeacherSet, device: torch.device,
                  clip_weights: str | None = None, allow_base_mismatch: bool = False, warn=None) -> Labeler:
    """The labeler for ``--labels projector|teacher|hard``."""
    if kind == "projector":
        proj = projector_from_archive(archive, clip_weights, allow_base_mismatch, device, warn=warn)
        return ProjectorLabeler(proj, device)
    if kind == "teacher":
        from hellopack.models.teachers import load_teacher

        t = teachers
        models = [load_teacher(spec, t.num_classes, t.image_size, tuple(t.mean), tuple(t.std)).to(device)
                  for spec in t.specs]
        return TeacherLabeler(models, device)
    if kind == "hard":
        return HardLabeler()
    raise HellopackError(f"--labels '{kind}' is not one of projector, teacher, hard")
