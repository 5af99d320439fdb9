"""Shared helpers for the archive tests (inputs come from spec/vectors/inputs) plus kit sanity tests."""

from __future__ import annotations

import copy
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from hellopack.archive import ArchiveWriter, canonical_json, encode_lora, open_archive

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "spec" / "vectors"


def load_make_vectors():
    """Import spec/vectors/make_vectors.py without leaving __pycache__ in spec/."""
    if "make_vectors" in sys.modules:
        return sys.modules["make_vectors"]
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = old
    sys.modules["make_vectors"] = mod
    return mod


def base_doc(name: str = "valid-minimal") -> dict:
    return copy.deepcopy(load_make_vectors().load_inputs(name))


def png(color: tuple[int, int, int], size: int = 4, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format=fmt)
    return buf.getvalue()


def lora_tensors(doc: dict) -> dict[str, np.ndarray]:
    return {n: np.asarray(t["values"], dtype=np.float32).reshape(t["shape"])
            for n, t in doc["lora"]["tensors"].items()}


def writer_for(doc: dict, images: list[tuple[str, int, bytes, str]] | None = None,
               extra: dict[str, bytes] | None = None) -> ArchiveWriter:
    """A writer holding ``doc``'s members; images default to doc's, extra members are added."""
    w = ArchiveWriter(doc["manifest"], doc["tool_version"])
    w.add_member("lora.safetensors", encode_lora(lora_tensors(doc), doc["lora"]["dtype"]))
    w.add_member("prompts.json", canonical_json(doc["prompts"]))
    for name, data in (extra or {}).items():
        w.add_member(name, data)
    if images is None:
        images = [(i["key"], i["cls"], bytes.fromhex(i["hex"]), i["ext"]) for i in doc["images"]]
    for key, cls, data, ext in images:
        w.add_image(key, cls, data, ext)
    return w


def write(doc: dict, path: Path, **kw) -> Path:
    with writer_for(doc, **kw) as w:
        return w.write(path)


def test_kit_writes_a_valid_archive(tmp_path: Path) -> None:
    p = write(base_doc(), tmp_path / "a.hellopack")
    report = open_archive(p).verify()
    assert (report.members_checked, report.images_checked) == (3, 2)
