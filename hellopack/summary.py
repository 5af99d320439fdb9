"""What `inspect` shows: a plain dict built from an archive, rendered by the CLI as a table or JSON."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from hellopack.archive import AUG_RECORD_BYTES, Archive, label_storage

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
        "fidelity": m.get("fidelity"),
        "members": [
            {"name": mi.name, "stored_size": mi.stored_size, "size": mi.size, "encoding": mi.encoding, "sha256": mi.sha256}
            for mi in archive.members
        ],
        "replaces": {**asdict(storage), "aug_record_bytes_per_view": AUG_RECORD_BYTES},
        "manifest": m,
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return f"{n:,.2f} TB"


def summary_line(path: str | os.PathLike) -> str:
    """One line after a build: what was written and what it replaces."""
    from hellopack.archive import open_archive

    m = open_archive(path).manifest
    st = label_storage(m)
    return (f"wrote {path}: {m['images']['count']} images ({len(m['classes'])} classes, IPC {m['images']['ipc']}), "
            f"label payload {human_bytes(st.payload_bytes)} replaces {human_bytes(st.total_bytes)} of stored soft labels "
            f"({st.ratio:,.0f}x smaller)")
