"""What `inspect` shows: a plain dict built from an archive, rendered by the CLI as a table or JSON."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from hellopack.archive import AUG_RECORD_BYTES, Archive, label_storage, whole_storage
from hellopack.textsafe import printable

FIRST_CLASSES = 10


def summarize(archive: Archive) -> dict[str, Any]:
    m = archive.manifest
    classes = m["classes"]
    lora = m["lora"]
    storage = label_storage(m)
    return {
        "path": str(archive.path),
        "file_bytes": os.path.getsize(archive.path),
        "format_version": m["format_version"],
        "tool": m["tool"],
        "dataset": m["dataset"],
        "classes": {"count": len(classes), "first": [c["name"] for c in classes[:FIRST_CLASSES]]},
        "images": m["images"],
        "base": m["base"],
        "lora": {
            "dtype": lora["dtype"],
            "rank_encoder": lora["rank_encoder"],
            "rank_head": lora["rank_head"],
            "targets": len(lora["targets"]),
            "encoder_targets": sum(1 for t in lora["targets"] if t["name"] != "head"),
            "parameters": lora["parameters"],
        },
        "recipe": m["recipe"],
        "protocol": describe_protocol(m["recipe"]),
        "observer": (m.get("build") or {}).get("observer", "projector"),  # builds before 0.2 scored with it
        "fidelity": m.get("fidelity"),
        "members": [
            {"name": mi.name, "stored_size": mi.stored_size, "size": mi.size, "encoding": mi.encoding, "sha256": mi.sha256}
            for mi in archive.members
        ],
        "replaces": {**asdict(storage), "aug_record_bytes_per_view": AUG_RECORD_BYTES, **_with_base(m, storage)},
        # the whole archive vs the same images + stored soft labels (what a stored-label user ships)
        "whole": asdict(whole_storage(m)),
        "external": _external(m),
        "manifest": m,
    }


def _external(m: dict[str, Any]) -> list[dict[str, Any]]:
    """What a user needs besides this file: a custom base must be shared once (public CLIP tags are not)."""
    b = m["base"]
    if not b.get("custom"):
        return []
    return [{"what": "base weights", "name": b.get("name"), "fingerprint": b.get("fingerprint"), "bytes": b.get("bytes"),
             "note": "custom base: share the weights file once; every archive built on it reuses it"}]


def _with_base(m: dict[str, Any], storage: Any) -> dict[str, Any]:
    """The storage ratio again with a custom base's file counted against this one archive (worst case)."""
    b = m["base"]
    size = b.get("bytes")
    if not b.get("custom") or not isinstance(size, int) or size <= 0:
        return {}
    with_base = storage.payload_bytes + size
    return {"payload_with_base_bytes": with_base, "ratio_with_base": storage.total_bytes / with_base}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return f"{n:,.2f} TB"


def summary_line(path: str | os.PathLike) -> str:
    """One line after a build: what was written and what it replaces (or that it is not smaller)."""
    from hellopack.archive import open_archive

    m = open_archive(path).manifest
    st = label_storage(m)
    return (f"wrote {path}: {m['images']['count']} images ({len(m['classes'])} classes, IPC {m['images']['ipc']}), "
            f"label payload {human_bytes(st.payload_bytes)} replaces {human_bytes(st.total_bytes)} of stored soft labels "
            f"({ratio_text(st.ratio)})")


def ratio_text(ratio: float) -> str:
    """How the label payload compares with what it replaces (``ratio`` = replaced bytes / payload bytes).

    "92x smaller", "2.62x smaller"; and when the payload is the bigger one (a few images, few epochs),
    it says so: "1.07x larger: at this size stored soft labels take less".
    """
    if ratio >= 1:
        return f"{_times(ratio)}x smaller"
    return f"{_times(1 / ratio)}x larger: at this size stored soft labels take less"


def _times(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 else f"{r:.2f}"  # 92, 1,234; 2.62, 1.07 (never "1" for 1.07)


def describe_protocol(recipe: dict[str, Any]) -> str:
    """One line on how `train` will train a student from this recipe (inspect's "protocol" row)."""
    if "protocol" not in recipe:
        return ("hellopack 0.1 (written before the RDED protocol): per-step cosine to 0, decay on every "
                "parameter, crops (0.08, 1) above 64 px and (0.5, 1) at or below; pass train flags to override")
    r = {k: printable(v) for k, v in recipe.items()}  # the archive's strings, made inert for a terminal
    name = "RDED's evaluation" if recipe["protocol"] == "rded" else r["protocol"]
    lr = "RDED's lr by student" + (f" ({r.get('lr')} for others)" if recipe.get("lr_by_arch") else "")
    if not recipe.get("lr_by_arch"):
        lr = f"lr {r.get('lr')}"
    crop = recipe.get("crop_scale") or []
    return (f"{name}: {r.get('schedule')} schedule, {lr}, decay {r.get('weight_decay')} on "
            f"{r.get('decay')}, batch {r.get('batch_size')}, crops {tuple(crop)}"
            + (" after patch shuffle" if recipe.get("patch_shuffle") else "")
            + f", {r.get('mix')} (alpha {r.get('mix_alpha')}), val resize {r.get('val_resize')}")
