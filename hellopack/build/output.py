"""The last stage: PNG-encode the distilled images, assemble the manifest, write the archive."""

from __future__ import annotations

import io
import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

PNG_COMPRESS_LEVEL = 6  # zlib's default, fixed so the bytes do not depend on Pillow's default
RUNTIME_FIELDS = ("out", "workdir", "device", "workers")  # where/how it ran, not what it made


def encode_png(img_u8: torch.Tensor) -> bytes:
    """uint8 [3,H,W] -> PNG bytes; no metadata chunks, fixed compression: same pixels, same bytes."""
    arr = np.ascontiguousarray(img_u8.permute(1, 2, 0).cpu().numpy())
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def image_key(cls: int, j: int) -> str:
    # Zero-padded so the archive's sorted key order is class order, then image order.
    return f"{cls:05d}_{j:04d}"


def prompts_json(classnames: Sequence[str], templates: Sequence[str]) -> bytes:
    return json.dumps({"classnames": list(classnames), "templates": list(templates)},
                      ensure_ascii=False, indent=1).encode("utf-8")


def build_record(build_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's "build" object: the resolved config without runtime-only fields.

    Leaving out the output path, work directory, device and worker count keeps the same
    command byte-identical wherever it writes; every field that changes the content stays.
    """
    return {k: v for k, v in build_dict.items() if k not in RUNTIME_FIELDS}


def manifest(*, dataset: Mapping[str, Any], classes: Sequence[Any], images: Mapping[str, Any],
             base: Any, lora: Mapping[str, Any], recipe: Mapping[str, Any], seed: int,
             build: Mapping[str, Any], fidelity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The format-v1 manifest (docs/ARCHITECTURE.md) without the writer's own keys."""
    return {
        "dataset": dict(dataset),
        "classes": [{"index": c.index, "name": c.name, "source_id": c.source_id} for c in classes],
        "images": dict(images),
        "base": {"kind": "open_clip", "name": base.name, "pretrained": base.pretrained, "custom": bool(base.custom),
                 "fingerprint": base.fingerprint, "bytes": base.bytes, "image_size": int(base.image_size)},
        "lora": dict(lora),
        "head": {"init": "text", "logit_scale": float(base.logit_scale), "embed_dim": int(base.embed_dim)},
        "recipe": dict(recipe),
        "seeds": {"build": int(seed)},
        "build": dict(build),
        "fidelity": dict(fidelity) if fidelity is not None else None,
    }


def write_archive(path: Any, manifest_obj: Mapping[str, Any], lora_tensors: Mapping[str, np.ndarray],
                  lora_dtype: str, prompts: bytes, images: Iterable[tuple[str, int, bytes]]) -> Any:
    """Atomic, deterministic archive write through hellopack.archive."""
    from hellopack import __version__
    from hellopack.archive import ArchiveWriter, encode_lora

    with ArchiveWriter(manifest_obj, tool_version=__version__) as w:
        w.add_member("prompts.json", prompts)
        w.add_member("lora.safetensors", encode_lora(dict(lora_tensors), dtype=lora_dtype))
        for key, cls, data in images:
            w.add_image(key, cls, data, ext="png")
        return w.write(path)
