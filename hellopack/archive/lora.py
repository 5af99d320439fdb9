"""lora.safetensors: fp16 tensors, or int8 with per-row (first dim) symmetric fp16 scales."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from hellopack.archive.format import LORA, ArchiveError
from hellopack.archive.layout import shown as _shown

SCALE_SUFFIX = ".scale"
_F16_MAX = float(np.finfo(np.float16).max)
_F16_TINY = float(np.finfo(np.float16).smallest_subnormal)



def _quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = x.reshape(x.shape[0], -1).astype(np.float64)
    amax = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    scale = (amax / 127.0).astype(np.float16)
    # The stored (fp16) scale must cover the row max, or clipping would exceed half a step.
    low = scale.astype(np.float64) * 127.0 < amax
    scale[low] = np.nextafter(scale[low], np.float16(np.inf))
    scale[(amax > 0) & (scale == 0)] = np.float16(_F16_TINY)
    s = scale.astype(np.float64)[:, None]
    q = np.divide(rows, s, out=np.zeros_like(rows), where=s > 0)
    q = np.clip(np.rint(q), -127, 127).astype(np.int8)
    return q.reshape(x.shape), scale


def encode_lora(tensors: Mapping[str, np.ndarray], dtype: str = "fp16") -> bytes:
    """Serialise LoRA factors to safetensors bytes (deterministic: names sorted by safetensors)."""
    if dtype not in ("fp16", "int8"):
        raise ValueError(f"LoRA dtype must be 'fp16' or 'int8', got {dtype!r}")
    out: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        a = np.asarray(t)
        if name.endswith(SCALE_SUFFIX):
            raise ArchiveError(LORA, f"tensor name {name!r} ends with the reserved suffix '{SCALE_SUFFIX}'")
        if a.dtype.kind not in "fiu" or a.ndim == 0:
            raise ArchiveError(LORA, f"tensor {name!r} must be a numeric array with at least one dimension")
        a64 = a.astype(np.float64)
        if not np.isfinite(a64).all() or (a64.size and np.abs(a64).max() > _F16_MAX * (127 if dtype == "int8" else 1)):
            raise ArchiveError(LORA, f"tensor {name!r} holds NaN/Inf or values beyond float16 range")
        if dtype == "fp16":
            out[name] = np.ascontiguousarray(a.astype(np.float16))
        else:
            q, scale = _quantize_rows(a)
            out[name] = np.ascontiguousarray(q)
            out[name + SCALE_SUFFIX] = np.ascontiguousarray(scale)
    return st_save(out, metadata={"dtype": dtype})


def _header_dtype(data: bytes) -> str | None:
    import json  # local: only needed to read the safetensors metadata string
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    return meta.get("dtype")


def decode_lora(data: bytes) -> dict[str, np.ndarray]:
    """Parse and dequantise to float32; every defect (bad file, wrong dtype, NaN/Inf) is an ArchiveError."""
    try:
        raw: dict[str, Any] = st_load(data)
        dtype = _header_dtype(data)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ArchiveError(LORA, f"is not a valid safetensors file ({type(e).__name__})") from None
    if dtype not in ("fp16", "int8"):
        raise ArchiveError(LORA, "metadata 'dtype' must be 'fp16' or 'int8'")
    out: dict[str, np.ndarray] = {}
    for name in sorted(raw):
        if name.endswith(SCALE_SUFFIX):
            if dtype != "int8" or name[: -len(SCALE_SUFFIX)] not in raw:
                raise ArchiveError(LORA, f"tensor '{_shown(name)}' is a scale without its int8 tensor")
            continue
        t = raw[name]
        if dtype == "fp16":
            if t.dtype != np.float16:
                raise ArchiveError(LORA, f"tensor '{_shown(name)}' is {t.dtype}, dtype fp16 requires float16")
            f = t.astype(np.float32)
        else:
            scale = raw.get(name + SCALE_SUFFIX)
            if t.dtype != np.int8:
                raise ArchiveError(LORA, f"tensor '{_shown(name)}' is {t.dtype}, dtype int8 requires int8")
            if t.ndim == 0:
                raise ArchiveError(LORA, f"tensor '{_shown(name)}' is a scalar, int8 tensors need a row dimension")
            if scale is None or scale.dtype != np.float16 or scale.shape != (t.shape[0],):
                raise ArchiveError(LORA, f"tensor '{_shown(name)}' lacks a float16 scale of shape [{t.shape[0]}]")
            # Broadcast the scale over each row (a reshape to [rows, -1] fails on zero rows); NaN/Inf
            # (Inf x 0) is reported just below, so numpy must not also print a warning.
            with np.errstate(invalid="ignore", over="ignore"):
                f = t.astype(np.float32) * scale.astype(np.float32).reshape((-1,) + (1,) * (t.ndim - 1))
        if not np.isfinite(f).all():
            raise ArchiveError(LORA, f"tensor '{_shown(name)}' holds NaN or Inf")
        out[name] = f
    return out
