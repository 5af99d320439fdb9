"""label_storage: the soft-label bytes an archive replaces, exact numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellopack.archive import AUG_RECORD_BYTES, label_storage, label_storage_from_counts, open_archive
from test_archive_kit import base_doc, write


def test_imagenet_ipc10_numbers() -> None:
    s = label_storage_from_counts(classes=1000, images=10_000, epochs=300, payload_bytes=1_800_000)
    assert AUG_RECORD_BYTES == 41
    assert s.soft_label_bytes == 6_000_000_000
    assert s.aug_record_bytes == 123_000_000
    assert s.total_bytes == 6_123_000_000
    assert s.ratio == pytest.approx(3401.6666, rel=1e-6)


def test_from_manifest_uses_recipe_epochs_and_stored_sizes(tmp_path: Path) -> None:
    a = open_archive(write(base_doc(), tmp_path / "a.hellopack"))
    stored = {m.name: m.stored_size for m in a.members}
    s = label_storage(a.manifest)
    assert (s.epochs, s.images, s.classes) == (300, 2, 2)
    assert s.soft_label_bytes == 300 * 2 * 2 * 2
    assert s.aug_record_bytes == 300 * 2 * 41
    assert s.payload_bytes == stored["lora.safetensors"] + stored["prompts.json"]
    assert s.ratio == s.total_bytes / s.payload_bytes
    assert label_storage(a.manifest, epochs=1).soft_label_bytes == 8
