"""LoraLayout: the typed form of the manifest's ``lora`` object, and the one module that reads and writes it.

The summary keys (``rank_encoder``, ``rank_head``, ``parameters``) are derived from the targets,
never typed separately: a writer cannot make them disagree, and a reader refuses an archive whose
summary disagrees with its targets (spec/FORMAT.md 4.7). Pure Python: no torch, no numpy import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hellopack.archive.format import LORA, ArchiveError

HEAD = "head"  # the head's target name; every other target is in the image encoder
# kind -> the format minor that introduced it; a writer writes the lowest minor that describes its
# targets, so an archive without a 1.2 kind stays a 1.1 archive, byte for byte (spec/FORMAT.md 13)
KIND_SINCE = {"conv2d": 1, "linear": 1, "mha_in_proj": 2}
KINDS = tuple(KIND_SINCE)
DTYPES = ("fp16", "int8")
_INCONSISTENT = "the archive is inconsistent, rebuild it"


def shown(name: str) -> str:
    """A target or tensor name from an archive, escaped and cut, so an error stays one short line."""
    s = repr(name)[1:-1]
    return s if len(s) <= 80 else s[:77] + "..."


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class LoraTarget:
    """One adapted module: ``lora_A`` [rank, in, kh, kw] (linear, mha_in_proj: [rank, in]) and
    ``lora_B`` [out, rank, 1, 1] (linear, mha_in_proj: [out, rank]); the update is scaled by
    ``alpha / rank``. ``mha_in_proj`` adapts a MultiheadAttention's packed q/k/v weight:
    in = embed_dim, out = 3 * embed_dim."""

    name: str
    kind: str  # "conv2d" | "linear" | "mha_in_proj"
    rank: int
    alpha: float
    in_features: int
    out_features: int
    kernel_size: tuple[int, int] | None = None  # required for conv2d; a linear layer is 1 x 1

    @property
    def parameters(self) -> int:
        """Elements of ``lora_A`` and ``lora_B``: rank * (in * kh * kw + out)."""
        a, b = self.shapes()
        return _numel(a) + _numel(b)

    @property
    def fans(self) -> tuple[int, int]:
        """(fan in, fan out): in * kh * kw and out. A rank above the smaller one adds parameters, not
        expressiveness, and a reader refuses it (spec section 5.1)."""
        a, b = self.shapes()
        return _numel(a) // self.rank, _numel(b) // self.rank

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of ``lora_A`` and ``lora_B`` (spec/FORMAT.md 3.3); the kernel_size of a linear
        or mha_in_proj target plays no part."""
        r, fin, fout = self.rank, self.in_features, self.out_features
        if self.kind == "conv2d":
            kh, kw = self.kernel_size or (1, 1)
            return (r, fin, kh, kw), (fout, r, 1, 1)
        return (r, fin), (fout, r)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "rank": self.rank, "alpha": self.alpha,
                "in_features": self.in_features, "out_features": self.out_features,
                "kernel_size": None if self.kernel_size is None else list(self.kernel_size)}

    @classmethod
    def from_json(cls, t: Mapping[str, Any]) -> "LoraTarget":
        """From a target entry whose types validate_manifest has checked."""
        ks = t.get("kernel_size")
        return cls(name=t["name"], kind=t["kind"], rank=t["rank"], alpha=float(t["alpha"]),
                   in_features=t["in_features"], out_features=t["out_features"],
                   kernel_size=None if ks is None else (ks[0], ks[1]))


@dataclass(frozen=True)
class LoraLayout:
    """Every LoRA target in module order (encoder targets, then ``head``) and the stored dtype."""

    targets: tuple[LoraTarget, ...]
    dtype: str = "fp16"

    @property
    def encoder_targets(self) -> tuple[LoraTarget, ...]:
        return tuple(t for t in self.targets if t.name != HEAD)

    @property
    def head(self) -> LoraTarget:
        for t in self.targets:
            if t.name == HEAD:
                return t
        raise ArchiveError("manifest", f"lora.targets has no '{HEAD}' target; {_INCONSISTENT}")

    @property
    def rank_encoder(self) -> int:
        ranks = sorted({t.rank for t in self.encoder_targets})
        if len(ranks) != 1:
            found = "no encoder target" if not ranks else "encoder targets of ranks " + ", ".join(map(str, ranks))
            raise ArchiveError("manifest", f"lora.targets has {found}, format 1.x needs one encoder rank; "
                                           f"{_INCONSISTENT}")
        return ranks[0]

    @property
    def rank_head(self) -> int:
        return self.head.rank

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.targets)

    @property
    def format_minor(self) -> int:
        """The lowest format minor whose target kinds cover this layout (what a writer writes)."""
        return max(KIND_SINCE[t.kind] for t in self.targets)

    def with_dtype(self, dtype: str) -> "LoraLayout":
        return LoraLayout(self.targets, dtype)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``lora`` object: the summary keys come from the targets."""
        return {"dtype": self.dtype, "rank_encoder": self.rank_encoder, "rank_head": self.rank_head,
                "parameters": self.parameters, "targets": [t.to_json() for t in self.targets]}

    @classmethod
    def from_manifest(cls, lora: Mapping[str, Any]) -> "LoraLayout":
        """From a ``lora`` object whose key types validate_manifest has checked; refuses a summary
        that disagrees with the targets, naming both values."""
        layout = cls(tuple(LoraTarget.from_json(t) for t in lora["targets"]), lora["dtype"])
        for key, derived, what in (("rank_encoder", layout.rank_encoder, "the encoder targets have rank"),
                                   ("rank_head", layout.rank_head, f"the '{HEAD}' target has rank"),
                                   ("parameters", layout.parameters, "the targets hold")):
            if lora[key] != derived:
                raise ArchiveError("manifest", f"lora.{key} is {lora[key]} but {what} {derived}; {_INCONSISTENT}")
        for t in layout.targets:  # q, k and v stacked: the packed projection is embed -> 3 * embed
            if t.kind == "mha_in_proj" and t.out_features != 3 * t.in_features:
                raise ArchiveError("manifest", f"lora target '{shown(t.name)}' of kind mha_in_proj has out_features "
                                               f"{t.out_features}, not 3 x in_features {t.in_features}; {_INCONSISTENT}")
        return layout

    def check_tensors(self, tensors: Mapping[str, Any]) -> None:
        """Every target has ``<name>.lora_A`` and ``<name>.lora_B`` of exactly the shapes of 3.3
        (``tensors``: name -> array with ``.shape``)."""
        for t in self.targets:
            n = shown(t.name)
            a, b = tensors.get(f"{t.name}.lora_A"), tensors.get(f"{t.name}.lora_B")
            if a is None or b is None:
                raise ArchiveError(LORA, f"target '{n}' lacks {n}.lora_A or {n}.lora_B")
            want_a, want_b = t.shapes()
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise ArchiveError(LORA, f"target '{n}': shapes {list(a.shape)}/{list(b.shape)}, the manifest's "
                                         f"layout needs {list(want_a)}/{list(want_b)}")
