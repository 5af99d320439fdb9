"""The last stage: assemble the manifest, write the archive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from hellopack.archive.images import PNG_COMPRESS_LEVEL, Codec  # noqa: F401 (the level: one declaration)

RUNTIME_FIELDS = ("out", "workdir", "teacher_cache", "device", "workers")  # where/how it ran, not what it made
# Settings that name files on the builder's machine: a shared archive keeps only their file names
# (spec section 2.2: a writer MUST NOT record the builder's file system layout).
PATH_FIELDS = ("data_dir", "teachers_dir", "classes_file", "clip_weights")


def encode_png(img_u8: torch.Tensor) -> bytes:
    """uint8 [3,H,W] -> PNG bytes; no metadata chunks, fixed compression: same pixels, same bytes."""
    return Codec("png").encode(img_u8.permute(1, 2, 0).cpu().numpy())


def image_key(cls: int, j: int) -> str:
    # Zero-padded so the archive's sorted key order is class order, then image order.
    return f"{cls:05d}_{j:04d}"


def prompts_json(classnames: Sequence[str], templates: Sequence[str]) -> bytes:
    return json.dumps({"classnames": list(classnames), "templates": list(templates)},
                      ensure_ascii=False, indent=1).encode("utf-8")


def build_record(build_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's "build" object: the resolved config without runtime-only fields.

    Leaving out the output path, work directory, teacher cache, device and worker count keeps the same
    command byte-identical wherever it writes; every field that changes the content stays.
    """
    out = {k: v for k, v in build_dict.items() if k not in RUNTIME_FIELDS}
    for k in PATH_FIELDS:
        if out.get(k) is not None:
            out[k] = file_name(out[k])
    out["teachers"] = [_teacher_name(t) for t in out.get("teachers") or []]
    if isinstance(out.get("templates"), str) and out["templates"] not in ("openai", "simple"):
        out["templates"] = file_name(out["templates"])
    return out


def file_name(path: str) -> str:
    """The last component of a path or URL (no directory of the builder's machine)."""
    return str(path).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _teacher_name(spec: str) -> str:
    arch, sep, rest = str(spec).partition(":")
    return f"{arch}{sep}{file_name(rest)}" if sep else spec


def dataset_record(name: str, recipe: str, data_dir: str | None, train_images: int) -> dict[str, Any]:
    """The manifest's "dataset": the dataset's identity, never where it lives on the builder's machine."""
    return {"name": name, "recipe": recipe, "source": file_name(data_dir) if data_dir else recipe,
            "train_images": int(train_images)}


@dataclass(frozen=True)
class ManifestParts:
    """What the build knows for the manifest; ``base`` is the hellopack.models.base BaseModel."""

    dataset: Mapping[str, Any]
    classes: Sequence[Any]
    images: Mapping[str, Any]
    base: Any
    lora: Mapping[str, Any]
    recipe: Mapping[str, Any]
    seed: int
    build: Mapping[str, Any]
    fidelity: Mapping[str, Any] | None


def manifest(parts: ManifestParts) -> dict[str, Any]:
    """The format-v1 manifest (docs/ARCHITECTURE.md) without the writer's own keys."""
    p = parts
    dataset, classes, images, base, lora = p.dataset, p.classes, p.images, p.base, p.lora
    recipe, seed, build, fidelity = p.recipe, p.seed, p.build, p.fidelity
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
                  lora_dtype: str, prompts: bytes, images: Iterable[tuple[str, int, bytes]], ext: str = "png") -> Any:
    """Atomic, deterministic archive write through hellopack.archive."""
    from hellopack import __version__
    from hellopack.archive import ArchiveWriter, encode_lora

    with ArchiveWriter(manifest_obj, tool_version=__version__) as w:
        w.add_member("prompts.json", prompts)
        w.add_member("lora.safetensors", encode_lora(dict(lora_tensors), dtype=lora_dtype))
        for key, cls, data in images:
            w.add_image(key, cls, data, ext=ext)
        return w.write(path)
