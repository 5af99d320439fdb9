"""The reference reader printed in spec/FORMAT.md agrees with hellopack's reader on every vector."""

from __future__ import annotations

import re

import pytest

from hellopack.archive import open_archive
from test_archive_kit import REPO, VECTORS


def reference_reader():
    text = (REPO / "spec" / "FORMAT.md").read_text(encoding="utf-8")
    section = text.split("## 11. Reference reader", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 30
    assert re.findall(r"^import (.*)$", code, re.M) == ["hashlib, json, struct, zstandard"]
    ns: dict = {}
    exec(compile(code, "FORMAT.md", "exec"), ns)
    return ns["read_hellopack"]


@pytest.mark.parametrize("name", ["valid-minimal", "valid-int8", "valid-vit"])
def test_reference_reader_reads_valid_vectors(name: str) -> None:
    manifest, members = reference_reader()(VECTORS / f"{name}.hellopack")
    a = open_archive(VECTORS / f"{name}.hellopack")
    assert manifest == a.manifest
    assert members == {m.name: a.read_member(m.name) for m in a.members}


@pytest.mark.parametrize("name", ["truncated", "flipped-byte", "bad-magic", "unknown-major-version",
                                  "path-traversal", "oversized-manifest", "decompression-bomb",
                                  "checksum-mismatch"])
def test_reference_reader_rejects_malformed_vectors(name: str) -> None:
    with pytest.raises(ValueError):
        reference_reader()(VECTORS / f"{name}.hellopack")
