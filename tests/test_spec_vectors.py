"""spec/vectors: regenerating from inputs reproduces the committed bytes; bad vectors fail exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hellopack.archive import ArchiveError, open_archive
from test_archive_kit import VECTORS, load_make_vectors

mv = load_make_vectors()
BAD = sorted(p.name[: -len(".error.txt")] for p in VECTORS.glob("*.error.txt"))


def test_the_malformed_set_is_complete() -> None:
    assert BAD == sorted(["truncated", "flipped-byte", "bad-magic", "unknown-major-version", "path-traversal",
                          "oversized-manifest", "decompression-bomb", "checksum-mismatch", "missing-member",
                          "bad-recipe-key", "lora-summary-mismatch", "non-finite-number",
                          # budgets (spec 5.2, issue 13)
                          "prompts-format-spec", "too-many-templates", "lora-rank-above-layer",
                          "lora-too-many-parameters", "images-size-over-limit",
                          *mv.IMAGE_EXPECTED])  # + the image vectors (1.2)


def test_regenerating_reproduces_every_committed_byte(tmp_path: Path) -> None:
    files = mv.build_all(tmp_path)
    committed = {p.name for p in VECTORS.iterdir() if p.suffix in (".hellopack", ".json", ".txt")}
    assert set(files) == committed
    for name, blob in files.items():
        assert blob == (VECTORS / name).read_bytes(), name


@pytest.mark.parametrize("name", mv.VALID)
def test_valid_vectors_verify_and_match_their_manifest(name: str) -> None:
    a = open_archive(VECTORS / f"{name}.hellopack")
    assert a.manifest == json.loads((VECTORS / f"{name}.manifest.json").read_text(encoding="utf-8"))
    report = a.verify()
    assert (report.members_checked, report.images_checked) == (3, 2)


@pytest.mark.parametrize("name", sorted(mv.IMAGE_VALID))
def test_image_encoding_vectors_verify_and_match_their_manifest(name: str) -> None:
    a = open_archive(VECTORS / f"{name}.hellopack")
    assert a.manifest == json.loads((VECTORS / f"{name}.manifest.json").read_text(encoding="utf-8"))
    assert a.manifest["format_version"] == [1, 2] and a.manifest["images"]["encoding"] == mv.IMAGE_VALID[name][1]
    assert a.verify().images_checked == 2
    assert [arr.shape for _, arr in a.decoded_images()] == [(4, 4, 3), (4, 4, 3)]


@pytest.mark.parametrize("name", BAD)
def test_malformed_vector_fails_with_its_exact_message(name: str) -> None:
    expected = (VECTORS / f"{name}.error.txt").read_text(encoding="utf-8").rstrip("\n")
    assert expected == {**mv.EXPECTED, **mv.IMAGE_EXPECTED}[name]
    with pytest.raises(ArchiveError) as e:
        open_archive(VECTORS / f"{name}.hellopack").verify()
    assert str(e.value) == expected


def test_vectors_stay_tiny() -> None:
    total = sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    vectors = list(VECTORS.glob("*.hellopack"))
    # 20 vectors of about 2.7 KB (valid-vit: 3.3 KB) plus their error texts, inputs and generator (89 KB),
    # and the 12 image vectors of format 1.2 with their fixed image bytes (inputs/images.json, 10 kB; a
    # 1025x1024 PNG is most of it)
    assert total < 100_000 + 56_000
    assert all(p.stat().st_size < 3_400 for p in vectors if not p.name.startswith(("image-", "images-")))
