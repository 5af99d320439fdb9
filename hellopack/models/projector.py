"""The projector: the frozen CLIP image tower plus LoRA, and a text-initialised linear head.

Before any training (B = 0) its logits are exactly zero-shot CLIP's:
``logit_scale * normalize(E_I(x)) @ W^T`` with W the text head (Proposition 1).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from torch import nn

from hellopack.archive.layout import LoraLayout, LoraTarget, shown
from hellopack.errors import HellopackError
from hellopack.models.base import BaseModel
from hellopack.models.common import ResizeNormalize
from hellopack.models.lora import (LoRALinear, _LoRABase, inject_lora, lora_targets, merge_lora, named_lora_modules,
                                   target_shape)

# Stored as "{}"-placeholder strings: that is the form prompts.json keeps in the archive.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "openai": tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES),
    "simple": tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES),
}


def load_templates(spec: str | Path) -> list[str]:
    """``"openai"`` (80 templates), ``"simple"`` (7), or a text file with one template per line."""
    if isinstance(spec, str) and spec in TEMPLATES:
        return list(TEMPLATES[spec])
    path = Path(spec)
    if not path.is_file():
        raise HellopackError(f"unknown templates '{spec}'; use simple, openai or a file with one template "
                             f"per line containing {{}}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    templates = [ln for ln in lines if ln]
    if not templates:
        raise HellopackError(f"templates file '{path}' is empty; write one template per line, e.g. 'a photo of a {{}}.'")
    for number, line in enumerate(lines, 1):
        if line:
            check_template(line, f"templates file '{path}' line {number}")
    return templates


def check_template(template: str, where: str = "template") -> None:
    try:
        ok = "{}" in template and template.format("x") is not None
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise HellopackError(f"{where} '{template}' needs exactly the placeholder {{}} for the class name "
                             f"(and no other braces)")


@torch.no_grad()
def text_head(base: BaseModel, classnames: Sequence[str], templates: Sequence[str],
              texts_per_batch: int = 1024) -> torch.Tensor:
    """[C, d]: per class, the L2-normalised mean of L2-normalised text embeddings over templates.

    This is open_clip's zero-shot classifier (``build_zero_shot_classifier``), transposed.
    Classes are batched so about ``texts_per_batch`` prompts go through the text tower at once.
    """
    if not classnames:
        raise HellopackError("no class names to build the text head from")
    if not templates:
        raise HellopackError("no prompt templates; use --templates simple|openai|FILE")
    for t in templates:
        check_template(t)
    device = next(base.model.parameters()).device
    per_batch = max(1, texts_per_batch // len(templates))
    w = open_clip.build_zero_shot_classifier(base.model, base.tokenizer, list(classnames), list(templates),
                                             num_classes_per_batch=per_batch, device=device)
    return w.T.float().contiguous()


class _Logits(nn.Module):
    """Shared forward: resize + normalise, image tower, L2-normalise, scaled head."""

    prep: nn.Module
    visual: nn.Module
    head: nn.Module
    logit_scale: torch.Tensor

    def image_features(self, x01: torch.Tensor) -> torch.Tensor:
        """L2-normalised image-tower features of images in [0, 1]; differentiable w.r.t. the input."""
        return F.normalize(self.visual(self.prep(x01)), dim=-1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.head(self.image_features(x01))


class Projector(_Logits):
    """CLIP image tower with LoRA (``lora_targets``: every groups=1 Conv2d, and in a ViT tower each
    block's attention in-projection, out_proj and MLP linears), and a LoRA'd text-initialised head.

    Every encoder target gets exactly ``rank_encoder`` and the head exactly ``rank_head``: the
    build resolves the ranks (``BuildConfig``), an archive's reader gives them (``from_layout``).
    ``alpha`` defaults to the rank of each target (scaling 1). The base model is not modified:
    the image tower is deep-copied and always stays in eval mode (BatchNorm statistics frozen).
    ``head`` may pass a precomputed ``text_head(base, classnames, templates)``.
    """

    def __init__(self, base: BaseModel, classnames: Sequence[str], templates: Sequence[str],
                 rank_encoder: int, rank_head: int, alpha: float | None = None,
                 head: torch.Tensor | None = None) -> None:
        super().__init__()
        num_classes = len(classnames)
        w = text_head(base, classnames, templates) if head is None else head.detach().float()
        if tuple(w.shape) != (num_classes, base.embed_dim):
            raise HellopackError(f"head has shape {list(w.shape)} but {num_classes} classes x embed_dim "
                                 f"{base.embed_dim} were expected")
        self.base_name = base.name
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.num_classes = num_classes
        self.embed_dim = base.embed_dim
        self.rank_encoder = rank_encoder
        self.rank_head = rank_head

        self.prep = ResizeNormalize(base.image_size, base.mean, base.std)
        self.visual = copy.deepcopy(base.model.visual).requires_grad_(False).eval()
        self.encoder_targets = inject_lora(self.visual, rank_encoder, alpha, prefix="visual")
        linear = nn.Linear(base.embed_dim, num_classes, bias=False, device=w.device)
        with torch.no_grad():
            linear.weight.copy_(w)
        self.head = LoRALinear(linear, self.rank_head, alpha)
        self.register_buffer("logit_scale", torch.tensor(float(base.logit_scale)), persistent=False)

    @classmethod
    def from_layout(cls, base: BaseModel, layout: LoraLayout, classnames: Sequence[str],
                    templates: Sequence[str], head: torch.Tensor | None = None) -> "Projector":
        """The projector an archive describes: every target with exactly the layout's rank and alpha.

        Refuses (one line) a base whose LoRA targets or embedding width do not match the layout.
        The LoRA factors are freshly initialised; load the archive's with ``load_lora_state_dict``.
        """
        _check_base_fits(base, layout, len(classnames))
        proj = cls(base, classnames, templates, rank_encoder=layout.rank_encoder, rank_head=layout.rank_head,
                   head=head)
        modules = proj.lora_modules()
        for t in layout.targets:
            modules[t.name].set_alpha(t.alpha)
        return proj

    def train(self, mode: bool = True) -> "Projector":
        super().train(mode)
        self.visual.eval()  # frozen base: never update BatchNorm running statistics
        return self

    # ---- LoRA bookkeeping ---------------------------------------------------------------

    def lora_modules(self) -> dict[str, _LoRABase]:
        """Target name -> LoRA module, encoder targets in module order, then ``head``."""
        mods: dict[str, _LoRABase] = {f"visual.{path}": m for path, m in named_lora_modules(self.visual)}
        mods["head"] = self.head
        return mods

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.lora_modules().values() for p in (m.lora_A, m.lora_B)]

    def num_lora_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, m in self.lora_modules().items():
            out[f"{name}.lora_A"] = m.lora_A.detach().clone()
            out[f"{name}.lora_B"] = m.lora_B.detach().clone()
        return out

    def load_lora_state_dict(self, state: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        """Strict: the same tensor names and shapes as ``lora_state_dict()``, else HellopackError."""
        params = {f"{n}.{k}": getattr(m, k) for n, m in self.lora_modules().items() for k in ("lora_A", "lora_B")}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise HellopackError(f"LoRA deltas do not match this projector ({len(missing)} missing, "
                                 f"{len(unexpected)} unexpected tensors, e.g. '{example}'); the archive was "
                                 f"built for another base model or class list")
        for key, p in params.items():
            t = torch.as_tensor(np.asarray(state[key]) if not isinstance(state[key], torch.Tensor) else state[key])
            if tuple(t.shape) != tuple(p.shape):
                raise HellopackError(f"LoRA tensor '{key}' has shape {list(t.shape)} but this projector expects "
                                     f"{list(p.shape)}; the archive was built with other ranks or another base")
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(torch.as_tensor(state[key]).to(p.dtype))

    def lora_layout(self, dtype: str) -> LoraLayout:
        """What the manifest's ``lora`` object records, with the archive's tensor ``dtype``."""
        targets = []
        for name, m in self.lora_modules().items():
            kind, fin, fout, k = target_shape(m.base)
            targets.append(LoraTarget(name=name, kind=kind, rank=m.rank, alpha=m.alpha, in_features=fin,
                                      out_features=fout, kernel_size=k))
        return LoraLayout(tuple(targets), dtype)

    def merged(self) -> "MergedProjector":
        """A plain copy with every LoRA folded into its base weight (eval mode, frozen)."""
        visual = merge_lora(copy.deepcopy(self.visual), prefix="visual")
        head = merge_lora(copy.deepcopy(self.head), prefix="head")
        return MergedProjector(copy.deepcopy(self.prep), visual, head, float(self.logit_scale))


def _check_base_fits(base: BaseModel, layout: LoraLayout, num_classes: int) -> None:
    """The layout's encoder targets are exactly the base's LoRA targets (``lora_targets``), of the
    same kinds and shapes, and its head maps embed_dim to the class count; else one HellopackError line."""
    fix = "the archive was built for another base model; pass the CLIP weights it was built with"
    have = {f"visual.{path}": target_shape(m) for path, m in lora_targets(base.model.visual)}
    wanted = {t.name: t for t in layout.encoder_targets}
    for name, t in wanted.items():
        if name not in have:
            what = "a convolution" if t.kind == "conv2d" else "a LoRA target"
            raise HellopackError(f"LoRA target '{shown(name)}' is not {what} of base {base.name}; {fix}")
        if _key(t.kind, t.in_features, t.out_features, t.kernel_size) != _key(*have[name]):
            raise HellopackError(f"LoRA target '{shown(name)}' is {_shape(t.kind, t.in_features, t.out_features, t.kernel_size)}"
                                 f" in the archive but {_shape(*have[name])} in base {base.name}; {fix}")
    extra = [name for name in have if name not in wanted]
    if extra:
        what = "convolutions" if all(have[n][0] == "conv2d" for n in extra) else "LoRA targets"
        raise HellopackError(f"base {base.name} has {len(extra)} {what} the archive's LoRA layout lacks "
                             f"(e.g. '{extra[0]}'); {fix}")
    h = layout.head
    if (h.kind, h.in_features, h.out_features) != ("linear", base.embed_dim, num_classes):
        raise HellopackError(f"LoRA target 'head' is {_shape(h.kind, h.in_features, h.out_features, None)} in the "
                             f"archive but the head is linear {base.embed_dim}->{num_classes} (embed_dim -> classes) "
                             f"with base {base.name}; {fix}")


def _key(kind: str, fin: int, fout: int, kernel: tuple[int, int] | None) -> tuple:
    return kind, fin, fout, kernel if kind == "conv2d" else None  # a kernel plays no part elsewhere


def _shape(kind: str, fin: int, fout: int, kernel: tuple[int, int] | None) -> str:
    k = f" kernel {kernel[0]}x{kernel[1]}" if kind == "conv2d" and kernel else ""
    return f"{kind} {fin}->{fout}{k}"


class MergedProjector(_Logits):
    """Projector with LoRA folded in: one plain forward of the base's architecture."""

    def __init__(self, prep: nn.Module, visual: nn.Module, head: nn.Linear, logit_scale: float) -> None:
        super().__init__()
        self.prep, self.visual, self.head = prep, visual, head
        self.register_buffer("logit_scale", torch.tensor(logit_scale), persistent=False)
        self.requires_grad_(False)
        self.eval()
