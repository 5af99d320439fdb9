"""LoRA for Conv2d and Linear, following peft's rules.

Base weights are frozen and never modified; A is kaiming-uniform random and B is
zero, so a freshly injected model computes exactly what the base computes;
the update is scaled by alpha / r; merging folds ``scaling * B @ A`` into a copy
of the base weight and refuses a non-finite result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hellopack.errors import HellopackError


class _LoRABase(nn.Module):
    base: nn.Module
    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def _init_factors(self, rank: int, alpha: float | None) -> None:
        if rank < 1:
            raise HellopackError(f"LoRA rank must be >= 1 (got {rank})")
        self.rank = int(rank)
        self.set_alpha(rank if alpha is None else alpha)
        self.base.requires_grad_(False)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def set_alpha(self, alpha: float) -> None:
        """The update is scaled by ``alpha / rank`` (an archive records each target's alpha)."""
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank

    # open_clip and torchvision sometimes read ``.weight`` (dtype checks): forward to the base.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def merged_layer(self, name: str = "") -> nn.Module:
        raise NotImplementedError

    def _merged_weight(self, name: str) -> torch.Tensor:
        with torch.no_grad():
            w = self.base.weight.detach().float() + self.delta_weight().float()
        if not torch.isfinite(w).all():
            raise HellopackError(f"LoRA merge produced non-finite weights in layer '{name or type(self).__name__}'; "
                                 f"the fitted deltas diverged (lower the learning rate and rebuild)")
        return w.to(self.base.weight.dtype)


class LoRAConv2d(_LoRABase):
    """``base(x) + scaling * B(A(x))``; A has the base's kernel, stride, padding and dilation; B is 1x1."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if base.groups != 1:
            raise HellopackError(f"LoRA supports only groups=1 convolutions (got groups={base.groups})")
        self.base = base
        kh, kw = base.kernel_size
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_channels, kh, kw, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(base.out_channels, rank, 1, 1, dtype=w.dtype, device=w.device))
        self._init_factors(rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        h = F.conv2d(x, self.lora_A, None, b.stride, b.padding, b.dilation)
        return b(x) + self.scaling * F.conv2d(h, self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        r = self.rank
        ab = self.lora_B.reshape(-1, r) @ self.lora_A.reshape(r, -1)
        return self.scaling * ab.reshape(self.base.weight.shape)

    def merged_layer(self, name: str = "") -> nn.Conv2d:
        b = self.base
        conv = nn.Conv2d(b.in_channels, b.out_channels, b.kernel_size, b.stride, b.padding, b.dilation,
                         b.groups, b.bias is not None, b.padding_mode, device=b.weight.device, dtype=b.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self._merged_weight(name))
            if b.bias is not None:
                conv.bias.copy_(b.bias)
        return conv.requires_grad_(False)


class LoRALinear(_LoRABase):
    """``base(x) + scaling * x A^T B^T`` with A [r, in], B [out, r]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank, dtype=w.dtype, device=w.device))
        self._init_factors(rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged_layer(self, name: str = "") -> nn.Linear:
        b = self.base
        lin = nn.Linear(b.in_features, b.out_features, b.bias is not None,
                        device=b.weight.device, dtype=b.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self._merged_weight(name))
            if b.bias is not None:
                lin.bias.copy_(b.bias)
        return lin.requires_grad_(False)


def _supports_lora(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


def inject_lora(module: nn.Module, rank: int, alpha: float | None = None, prefix: str = "") -> list[str]:
    """Wrap every groups=1 ``nn.Conv2d`` in ``module`` with LoRAConv2d, in place.

    Returns the target names ``<prefix>.<module path>`` (or the bare path without prefix)
    in module order. Grouped/depthwise convolutions are left alone. As peft does, every
    other parameter of ``module`` is frozen: only the LoRA factors train.
    """
    for path, child in module.named_modules():
        if isinstance(child, _LoRABase):
            raise HellopackError(f"module already has LoRA at '{path}'; inject once")
    targets = lora_targets(module)
    if not targets:
        raise HellopackError("no groups=1 Conv2d layer found to put LoRA on")
    module.requires_grad_(False)
    names = []
    for path, conv in targets:
        parent_path, _, attr = path.rpartition(".")
        setattr(module.get_submodule(parent_path), attr, LoRAConv2d(conv, rank, alpha))
        names.append(f"{prefix}.{path}" if prefix else path)
    return names


def lora_targets(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(module path, conv) of every convolution ``inject_lora`` would wrap, in module order."""
    return [(path, child) for path, child in module.named_modules() if _supports_lora(child)]


def merge_lora(module: nn.Module, prefix: str = "") -> nn.Module:
    """Replace every LoRA wrapper in ``module`` (in place) by a plain layer with the folded weight.

    A LoRA module passed directly is returned merged. Raises HellopackError naming the
    layer when a merged weight is not finite.
    """
    if isinstance(module, _LoRABase):
        return module.merged_layer(prefix)
    wrapped = [(p, m) for p, m in module.named_modules() if isinstance(m, _LoRABase)]
    for path, lora in wrapped:
        parent_path, _, attr = path.rpartition(".")
        name = f"{prefix}.{path}" if prefix else path
        setattr(module.get_submodule(parent_path), attr, lora.merged_layer(name))
    return module
