"""Defects the archive fuzzer (benchmarks/fuzz_archive.py) found in hellopack/archive/, pinned down."""

from __future__ import annotations

import hashlib
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import zstandard
from safetensors.numpy import save as st_save

from hellopack.archive import ArchiveError, decode_lora, open_archive
from test_archive_kit import base_doc, load_make_vectors, write

mv = load_make_vectors()
MiB = 1 << 20


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    return write(base_doc("valid-int8"), tmp_path_factory.mktemp("v") / "v.hellopack").read_bytes()


def with_lora(valid: bytes, lora: bytes) -> bytes:
    m, stored = mv.split(valid)
    stored["lora.safetensors"] = zstandard.ZstdCompressor(write_checksum=True).compress(lora)
    e = next(x for x in m["members"] if x["name"] == "lora.safetensors")
    e["size"], e["sha256"] = len(lora), hashlib.sha256(lora).hexdigest()
    return mv.assemble(m, stored)


def int8_lora(**tensors: np.ndarray) -> bytes:
    return st_save(tensors, metadata={"dtype": "int8"})


def test_int8_tensor_with_zero_rows_is_an_archive_error(valid: bytes, tmp_path: Path) -> None:
    """Was: ValueError 'cannot reshape array of size 0 into shape (0,newaxis)' (a traceback in the CLI)."""
    lora = int8_lora(**{"x.lora_A": np.zeros((0, 3), np.int8), "x.lora_A.scale": np.zeros((0,), np.float16)})
    assert decode_lora(lora)["x.lora_A"].shape == (0, 3)
    p = tmp_path / "z.hellopack"
    p.write_bytes(with_lora(valid, lora))
    with pytest.raises(ArchiveError) as e:
        open_archive(p).verify()
    assert str(e.value) == "lora.safetensors: target 'visual.conv1' lacks visual.conv1.lora_A or visual.conv1.lora_B"


def test_int8_infinite_scale_is_refused_without_a_warning() -> None:
    """Was: numpy printed 'RuntimeWarning: invalid value encountered in multiply' (Inf x 0) before the
    error, so `hellopack inspect --verify` wrote three stderr lines instead of one."""
    lora = int8_lora(**{"x.lora_A": np.array([[0, 1]], np.int8), "x.lora_A.scale": np.array([np.inf], np.float16)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ArchiveError, match=r"^lora\.safetensors: tensor 'x\.lora_A' holds NaN or Inf$"):
            decode_lora(lora)


def test_int8_dequantisation_is_unchanged() -> None:
    q = np.array([[1, -2, 3], [127, -127, 0]], np.int8)
    s = np.array([0.5, 2.0], np.float16)
    out = decode_lora(int8_lora(**{"x": q, "x.scale": s}))["x"]
    assert out.dtype == np.float32
    assert out.tolist() == [[0.5, -1.0, 1.5], [254.0, -254.0, 0.0]]


def test_int8_scalar_message_names_the_problem() -> None:
    """Was: "tensor 'x' is int8, dtype int8 requires int8"."""
    lora = int8_lora(x=np.array(3, np.int8))
    with pytest.raises(ArchiveError) as e:
        decode_lora(lora)
    assert str(e.value) == "lora.safetensors: tensor 'x' is a scalar, int8 tensors need a row dimension"


def test_verify_streams_unknown_members(valid: bytes, tmp_path: Path) -> None:
    """Was: verify read every unknown member of up to 1 GiB into memory (twice: chunks + join), so a
    10 KB archive declaring a zero-filled extra member could make `inspect --verify` take 2 GiB."""
    size = 64 * MiB
    content = b"\0" * size
    m, stored = mv.split(valid)
    stored["zz-extra"] = zstandard.ZstdCompressor(write_checksum=True).compress(content)
    m["members"].insert(2, {"name": "zz-extra", "offset": 0, "stored_size": 0, "size": size,
                            "sha256": hashlib.sha256(content).hexdigest(), "encoding": "zstd"})
    del content
    p = tmp_path / "big.hellopack"
    p.write_bytes(mv.assemble(m, stored))
    assert p.stat().st_size < 20_000
    tracemalloc.start()
    try:
        report = open_archive(p).verify()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.members_checked == 4
    assert peak < 8 * MiB, f"verify peaked at {peak / MiB:.0f} MiB"


@pytest.mark.parametrize("name, shown", [
    ("two\nlines", "two\\nlines"),
    ("x" * 5000, "x" * 77 + "..."),
], ids=["newline", "long"])
def test_hostile_target_name_keeps_the_error_on_one_short_line(valid: bytes, tmp_path: Path, name: str,
                                                               shown: str) -> None:
    """Was: the target name went into the message unescaped (a newline split the CLI's one stderr line)
    and uncut (a 5000-character name gave a 15,000-character message)."""
    m, stored = mv.split(valid)
    m["lora"]["targets"][0]["name"] = name
    p = tmp_path / "t.hellopack"
    p.write_bytes(mv.assemble(m, stored))
    with pytest.raises(ArchiveError) as e:
        open_archive(p).verify()
    assert str(e.value) == f"lora.safetensors: target '{shown}' lacks {shown}.lora_A or {shown}.lora_B"


def test_hostile_tensor_name_is_escaped_and_cut() -> None:
    lora = st_save({"a\nb" + "y" * 200: np.zeros((1, 1), np.float32)}, metadata={"dtype": "fp16"})
    with pytest.raises(ArchiveError) as e:
        decode_lora(lora)
    assert str(e.value) == "lora.safetensors: tensor 'a\\nb" + "y" * 73 + "...' is float32, dtype fp16 requires float16"


def test_small_members_declaring_more_than_64_mib_are_refused_at_open(valid: bytes, tmp_path: Path) -> None:
    # prompts.json and lora.safetensors are parsed in memory: the cap keeps a hostile header cheap.
    from hellopack.archive import MAX_SMALL_MEMBER_BYTES

    m, stored = mv.split(valid)
    next(x for x in m["members"] if x["name"] == "lora.safetensors")["size"] = MAX_SMALL_MEMBER_BYTES + 1
    evil = tmp_path / "evil.hellopack"
    evil.write_bytes(mv.assemble(m, stored))
    with pytest.raises(ArchiveError, match=r"^lora\.safetensors: declared size 67108865 bytes exceeds the "
                                           r"67108864-byte limit for lora\.safetensors$"):
        open_archive(evil)
