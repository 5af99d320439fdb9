"""LoRA for Conv2d, Linear and MultiheadAttention's packed in-projection, following peft's rules.

Base weights are frozen and never modified; A is kaiming-uniform random and B is
zero, so a freshly injected model computes exactly what the base computes;
the update is scaled by alpha / r; merging folds ``scaling * B @ A`` into a copy
of the base weight and refuses a non-finite result.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.func import functional_call

from hellopack.archive.layout import LoraTarget
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

    def _base_weight(self) -> torch.Tensor:
        """The frozen weight the delta is added to (same shape as ``delta_weight()``)."""
        return self.base.weight

    def _merged_weight(self, name: str) -> torch.Tensor:
        base = self._base_weight()
        with torch.no_grad():
            w = base.detach().float() + self.delta_weight().float()
        if not torch.isfinite(w).all():
            raise HellopackError(f"LoRA merge produced non-finite weights in layer '{name or type(self).__name__}'; "
                                 f"the fitted deltas diverged (lower the learning rate and rebuild)")
        return w.to(base.dtype)


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
        # type(b): an attention's out_proj stays a NonDynamicallyQuantizableLinear
        lin = type(b)(b.in_features, b.out_features, b.bias is not None,
                      device=b.weight.device, dtype=b.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self._merged_weight(name))
            if b.bias is not None:
                lin.bias.copy_(b.bias)
        return lin.requires_grad_(False)


class LoRAMultiheadAttention(_LoRABase):
    """LoRA on ``nn.MultiheadAttention``'s packed q/k/v projection ``in_proj_weight`` [3E, E]:
    A [r, E], B [3E, r], and attention runs with ``in_proj_weight + scaling * B @ A``.

    Why the in-projection and not only ``out_proj`` and the MLP: queries, keys and values are
    what LoRA adapts in a transformer (the LoRA paper's W_q, W_v), and a ViT's attention pattern
    can only change through them. ``in_proj_weight`` is a bare parameter, so, as peft's
    MultiheadAttention layer does, the delta goes into the weight and the base module's own
    forward runs with the merged weight (``functional_call``: nothing of the base is modified).
    An ``out_proj`` wrapped by LoRALinear is folded in the same way, because the base forward
    reads ``out_proj.weight`` and never calls ``out_proj``. With B = 0 both merged weights equal
    the base's bit for bit, so the output is exactly the base's.
    """

    def __init__(self, base: nn.MultiheadAttention, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if not _supports_mha(base):
            raise HellopackError("LoRA supports only MultiheadAttention with one packed in_proj_weight "
                                 "(kdim = vdim = embed_dim)")
        self.base = base
        w, e = base.in_proj_weight, base.embed_dim
        self.lora_A = nn.Parameter(torch.empty(rank, e, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(3 * e, rank, dtype=w.dtype, device=w.device))
        self._init_factors(rank, alpha)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.in_proj_weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.in_proj_bias

    @property
    def batch_first(self) -> bool:
        return self.base.batch_first

    def _base_weight(self) -> torch.Tensor:
        return self.base.in_proj_weight

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, *args, **kwargs):  # the signature of nn.MultiheadAttention.forward
        weights = {"in_proj_weight": self.base.in_proj_weight + self.delta_weight()}
        out = self.base.out_proj
        if isinstance(out, LoRALinear):
            weights["out_proj.base.weight"] = out.base.weight + out.delta_weight()
        return functional_call(self.base, weights, args, kwargs, strict=False)

    def merged_layer(self, name: str = "") -> nn.MultiheadAttention:
        mha = copy.deepcopy(self.base)
        if isinstance(mha.out_proj, _LoRABase):
            mha.out_proj = mha.out_proj.merged_layer(f"{name}.out_proj" if name else "out_proj")
        mha.in_proj_weight = nn.Parameter(self._merged_weight(name))
        return mha.requires_grad_(False)


def _supports_lora(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


def _supports_mha(attn: nn.Module) -> bool:
    return (type(attn) is nn.MultiheadAttention and attn._qkv_same_embed_dim
            and attn.in_proj_weight is not None)


def _block_targets(block: nn.Module) -> list[nn.Module]:
    """An open_clip transformer block's adapted modules: attention (in-projection), out_proj, MLP."""
    attn, mlp = block.attn, block.mlp
    found = [attn, attn.out_proj] if _supports_mha(attn) else []
    return found + [m for m in (getattr(mlp, "c_fc", None), getattr(mlp, "c_proj", None))
                    if isinstance(m, nn.Linear)]


def lora_targets(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of everything ``inject_lora`` would wrap, in module order.

    Every groups=1 ``nn.Conv2d`` (a ResNet tower's convolutions, a ViT's patch embedding), and in
    each open_clip ``ResidualAttentionBlock`` (a ViT tower) the attention's packed in-projection,
    its ``out_proj`` and the MLP's ``c_fc`` and ``c_proj``. Other linears (an RN tower's attention
    pool) are left alone, so RN archives keep their targets.
    """
    in_blocks = {id(m) for b in module.modules() if isinstance(b, ResidualAttentionBlock)
                 for m in _block_targets(b)}
    return [(path, child) for path, child in module.named_modules()
            if _supports_lora(child) or id(child) in in_blocks]


def target_shape(m: nn.Module) -> tuple[str, int, int, tuple[int, int] | None]:
    """(kind, in_features, out_features, kernel_size) a layout records for the base module ``m``."""
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return "conv2d", m.in_channels, m.out_channels, (kh, kw)
    if isinstance(m, nn.MultiheadAttention):
        return "mha_in_proj", m.embed_dim, 3 * m.embed_dim, (1, 1)
    return "linear", m.in_features, m.out_features, (1, 1)


def _fans(m: nn.Module) -> tuple[int, int]:
    """(fan in, fan out) of ``m`` as the archive's reader counts them (LoraTarget.fans)."""
    kind, fan_in, fan_out, kernel = target_shape(m)
    return LoraTarget("", kind, 1, 1.0, fan_in, fan_out, kernel).fans


def max_rank(m: nn.Module) -> int:
    """The largest rank an archive allows on ``m``: its smaller side (spec: rank <= min(fan in, fan out)).
    Format 1.x has one encoder rank, so a base's encoder rank is capped by its smallest layer."""
    return min(_fans(m))


def max_encoder_rank(module: nn.Module) -> int:
    """The largest encoder rank ``inject_lora`` accepts on ``module`` (e.g. 8 on hellopack-tiny-rn: its stem)."""
    return min(max_rank(m) for _, m in lora_targets(module))


def _wrap(child: nn.Module, rank: int, alpha: float | None) -> _LoRABase:
    if isinstance(child, nn.Conv2d):
        return LoRAConv2d(child, rank, alpha)
    if isinstance(child, nn.MultiheadAttention):
        return LoRAMultiheadAttention(child, rank, alpha)
    return LoRALinear(child, rank, alpha)


def inject_lora(module: nn.Module, rank: int, alpha: float | None = None, prefix: str = "") -> list[str]:
    """Wrap every module ``lora_targets`` lists with its LoRA layer, in place.

    Returns the target names ``<prefix>.<module path>`` (or the bare path without prefix)
    in module order; a target keeps its base module's path (``...attn.out_proj``) though it
    sits under the attention's wrapper. As peft does, every other parameter of ``module``
    is frozen: only the LoRA factors train.
    """
    for path, child in module.named_modules():
        if isinstance(child, _LoRABase):
            raise HellopackError(f"module already has LoRA at '{path}'; inject once")
    targets = lora_targets(module)
    if not targets:
        raise HellopackError("no groups=1 Conv2d layer or transformer block found to put LoRA on")
    smallest = min(targets, key=lambda t: max_rank(t[1]))
    if rank > max_rank(smallest[1]):
        fan_in, fan_out = _fans(smallest[1])
        raise HellopackError(f"LoRA rank {rank} is above layer '{smallest[0]}' of this base ({fan_in} inputs, "
                             f"{fan_out} outputs): an archive's encoder rank must be at most "
                             f"{max_rank(smallest[1])}; pass --rank-encoder {max_rank(smallest[1])} or less")
    module.requires_grad_(False)
    # module order, so A's random initialisation draws in the order it always has
    for path, child in targets:
        parent_path, _, attr = path.rpartition(".")
        setattr(_through_wrappers(module, parent_path), attr, _wrap(child, rank, alpha))
    return [f"{prefix}.{path}" if prefix else path for path, _ in targets]


def _through_wrappers(module: nn.Module, path: str) -> nn.Module:
    """The module at a base module path, stepping into a wrapper's ``base`` (an attention wrapped
    before its out_proj)."""
    for step in path.split(".") if path else []:
        module = getattr(module, step)
        if isinstance(module, _LoRABase):
            module = module.base
    return module


def named_lora_modules(module: nn.Module) -> list[tuple[str, _LoRABase]]:
    """(target path, LoRA module) in module order; a target's path is its base module's path
    (the ``base`` step through an enclosing wrapper is dropped)."""
    out = []
    for path, m in module.named_modules():
        if isinstance(m, _LoRABase) and path:
            steps, parent = [], module
            for step in path.split("."):
                if not (isinstance(parent, _LoRABase) and step == "base"):
                    steps.append(step)
                parent = getattr(parent, step)
            out.append((".".join(steps), m))
    return out


def merge_lora(module: nn.Module, prefix: str = "") -> nn.Module:
    """Replace every LoRA wrapper in ``module`` (in place) by a plain layer with the folded weight.

    A LoRA module passed directly is returned merged. Raises HellopackError naming the
    layer when a merged weight is not finite.
    """
    if isinstance(module, _LoRABase):
        return module.merged_layer(prefix)
    # outermost wrappers only: an attention's wrapper merges the out_proj it holds
    wrapped, inside = [], set()
    for path, m in module.named_modules():
        if isinstance(m, _LoRABase) and id(m) not in inside:
            wrapped.append((path, m))
            inside.update(id(c) for c in m.modules())
    for path, lora in wrapped:
        parent_path, _, attr = path.rpartition(".")
        name = f"{prefix}.{path}" if prefix else path
        setattr(module.get_submodule(parent_path), attr, lora.merged_layer(name))
    return module
