"""``build --teacher-cache DIR``: keep the weak teachers' logits where the views repeat (issue 18).

Builds that differ only in the projector (a rank sweep: same teachers, data, seed and batch
size) show the teachers the same batches: the fit's augmented views are seeded by seed,
epoch and index, and the teacher observer's crops and the held-out images do not depend on
the projector at all. ``CachedTeachers`` wraps the ensemble and keys each batch's mean logits
by content: a batch seen before is read back instead of recomputed.

Key: sha256 over the teachers' identity (the build's teachers stage key: their files' sha256
and the data scan, plus the memory layout they run in), what could change a float of their
result (device, torch version, CPU threads, autocast), and the batch itself (dtype, shape,
strides, bytes). A hit is therefore bit for bit what the teachers would return: the cache
changes no output byte. Files are ``DIR/<key[:2]>/<key>.safetensors`` (one tensor, never a
pickle), written atomically, so concurrent builds may share the folder; one that does not
load as the expected tensor is a miss, recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes

FORMAT = "hellopack-teacher-logits-1"  # in every key and file: a new layout never reads an old one
TENSOR = "logits"
DTYPE = torch.float32  # what TeacherEnsemble returns (each teacher's logits cast to float, then averaged)
MEMORY_BYTES = 64 << 20  # the in-memory layer: about 6,000 CIFAR batches of 128 x 10 logits


class MemoryCache:
    """Least recently used CPU tensors by key, at most ``max_bytes`` of them (0: keeps nothing)."""

    def __init__(self, max_bytes: int = MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, key: str) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()

    def __len__(self) -> int:
        return len(self._items)


# One per process: the stages of a build (fit, select, refine load the teachers each) and the builds
# of a sweep run in one process share it; keys carry the teachers' identity, so sharing is safe.
SHARED = MemoryCache()


def numerics(x: torch.Tensor) -> dict[str, object]:
    """What besides the teachers and the batch can change a float of their logits."""
    kind = x.device.type
    out: dict[str, object] = {"device": kind, "torch": torch.__version__}
    if kind == "cuda":
        out["gpu"] = torch.cuda.get_device_name(x.device)
    if kind == "cpu":
        out["threads"] = torch.get_num_threads()  # reductions may split by thread
    try:
        out["autocast"] = str(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
    except RuntimeError:  # a device type without autocast
        out["autocast"] = None
    return out


def batch_key(identity: str, x: torch.Tensor) -> str:
    """sha256 over the format, the teachers' identity, the numerics, and x's dtype, shape, strides and bytes."""
    head = {"format": FORMAT, "teachers": identity, "numerics": numerics(x), "dtype": str(x.dtype),
            "shape": list(x.shape), "stride": list(x.stride())}
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    h.update(b"\0")
    data = x.detach().to("cpu").contiguous()
    h.update(data.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class CachedTeachers(nn.Module):
    """``teachers`` behind a content-addressed cache in ``folder``; the same output, bit for bit.

    ``identity`` names the teachers and how they were loaded (the build passes its teachers stage
    key and memory format); ``num_classes`` is the logits' width, checked on every file read.
    ``hits`` and ``misses`` count batches (a hit from memory or from a file).
    """

    def __init__(self, teachers: nn.Module, identity: str, folder: str | Path, num_classes: int,
                 memory: MemoryCache | None = None) -> None:
        super().__init__()
        self.teachers = teachers
        self.identity = identity
        self.folder = Path(folder).expanduser()
        self.num_classes = num_classes
        self.memory = SHARED if memory is None else memory
        self.hits = self.misses = 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HellopackError(f"cannot create the teacher cache folder '{self.folder}': {e.strerror or e}; "
                                 f"pass another --teacher-cache") from None

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = batch_key(self.identity, x)
        found = self.memory.get(key)
        if found is None:
            found = self._read(key, len(x))
            if found is not None:
                self.memory.put(key, found)
        if found is not None:
            self.hits += 1
            return found.to(x.device, copy=True)  # the caller may change it in place; the cached copy stays
        self.misses += 1
        out = self.teachers(x)
        stored = out.detach().to("cpu", copy=True).contiguous()
        self._write(key, stored)
        self.memory.put(key, stored)
        return out

    def _read(self, key: str, rows: int) -> torch.Tensor | None:
        """The stored logits, or None when the file is missing or not one tensor of the expected shape."""
        try:
            tensors = st_load(self.path(key).read_bytes())
        except (OSError, SafetensorError, ValueError, RuntimeError):  # missing, unreadable, truncated
            return None
        value = tensors.get(TENSOR)
        if len(tensors) != 1 or value is None or value.dtype != DTYPE or tuple(value.shape) != (rows, self.num_classes):
            return None
        return value

    def _write(self, key: str, value: torch.Tensor) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(exist_ok=True)
        except OSError as e:
            raise HellopackError(f"cannot write the teacher cache folder '{path.parent}': {e.strerror or e}; "
                                 f"pass another --teacher-cache") from None
        atomic_write_bytes(path, st_save({TENSOR: value}, metadata={"format": FORMAT}))


__all__ = ["CachedTeachers", "MemoryCache", "batch_key", "numerics", "SHARED"]
