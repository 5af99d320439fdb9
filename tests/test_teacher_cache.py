"""`build --teacher-cache DIR` (issue 18): the teachers' logits are kept by batch content and reused
by builds that show the teachers the same batches; no archive byte changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from hellopack.distill import BuildConfig, build
from hellopack.distill import teacher_cache
from hellopack.distill.teacher_cache import CachedTeachers, MemoryCache, batch_key
from hellopack.distill.teachers import TeacherEnsemble, load_ensemble
from hellopack.errors import HellopackError

from helpers_build import SYN, TINY_BUILD, tiny_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return tiny_teacher(tmp_path_factory.mktemp("teacher") / "convnet.safetensors")


def ensemble(teacher: Path) -> TeacherEnsemble:
    return load_ensemble([f"convnet:{teacher}"], 4, 32, (0.49,) * 3, (0.21,) * 3, torch.device("cpu"))


class Refuses(torch.nn.Module):
    """Teachers that must not be asked: every answer has to come from the cache."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teachers were called on a cached batch")


def cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ---- the wrapper ----------------------------------------------------------------------------

def test_a_hit_is_the_teachers_output_bit_for_bit_and_the_file_is_safetensors(teacher, tmp_path):
    ens = ensemble(teacher)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = ens(x)
    cached = CachedTeachers(ens, "teachers-a", tmp_path, 4, memory=MemoryCache(0))
    first = cached(x)
    assert (cached.misses, cached.hits) == (1, 0)
    again = cached(x)
    assert (cached.misses, cached.hits) == (1, 1)
    for out in (first, again):
        assert out.dtype == expected.dtype == torch.float32 and out.shape == (5, 4)
        assert torch.equal(out.view(torch.int32), expected.view(torch.int32))  # the bits, not only the values
    # from the file alone: other wrapper, empty memory, teachers that refuse to run
    from_file = CachedTeachers(Refuses(), "teachers-a", tmp_path, 4, memory=MemoryCache(0))(x)
    assert torch.equal(from_file.view(torch.int32), expected.view(torch.int32))
    # one file, DIR/<key[:2]>/<key>.safetensors, one float32 tensor and no pickle
    key = batch_key("teachers-a", x)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert cache_files(tmp_path) == [tmp_path / key[:2] / f"{key}.safetensors"]
    with safe_open(str(cache_files(tmp_path)[0]), framework="pt") as f:
        assert list(f.keys()) == ["logits"] and f.metadata() == {"format": "hellopack-teacher-logits-1"}
        assert torch.equal(f.get_tensor("logits"), expected)


def test_a_changed_pixel_or_other_teachers_miss(teacher, tmp_path):
    ens = ensemble(teacher)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cached = CachedTeachers(ens, "teachers-a", tmp_path, 4, memory=MemoryCache())
    cached(x)
    y = x.clone()
    y[2, 1, 31, 0] += 1 / 255
    out = cached(y)
    assert (cached.misses, cached.hits) == (2, 0)
    assert torch.equal(out, ens(y)) and not torch.equal(out, ens(x))
    other = CachedTeachers(ens, "teachers-b", tmp_path, 4, memory=cached.memory)
    other(x)
    assert (other.misses, other.hits) == (1, 0)
    assert len(cache_files(tmp_path)) == 3
    # the batch's dtype, shape and layout and the autocast state are part of the key too
    keys = {batch_key("t", x), batch_key("t", x.double()), batch_key("t", x[:2]),
            batch_key("t", x.contiguous(memory_format=torch.channels_last))}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys.add(batch_key("t", x))
    assert len(keys) == 5


def test_a_damaged_file_is_a_miss_recomputed_and_rewritten(teacher, tmp_path):
    ens = ensemble(teacher)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = ens(x)
    CachedTeachers(ens, "t", tmp_path, 4, memory=MemoryCache(0))(x)
    (path,) = cache_files(tmp_path)
    whole = path.read_bytes()
    from safetensors.torch import save
    for damaged in (whole[: len(whole) // 2], b"", save({"logits": torch.zeros(2, 5)}),  # truncated, empty, shape
                    save({"logits": torch.zeros(2, 4, dtype=torch.float64)}),  # dtype
                    save({"logits": expected, "extra": expected.clone()})):  # not one tensor
        path.write_bytes(damaged)
        cached = CachedTeachers(ens, "t", tmp_path, 4, memory=MemoryCache(0))
        out = cached(x)
        assert (cached.misses, cached.hits) == (1, 0)
        assert torch.equal(out, expected) and path.read_bytes() == whole  # overwritten with the right tensor


def test_the_memory_layer_keeps_the_most_recent_within_its_bytes():
    mem = MemoryCache(max_bytes=3 * 40)
    for i in range(4):
        mem.put(str(i), torch.full((10,), float(i)))  # 40 bytes each
    assert len(mem) == 3 and mem.get("0") is None and mem.bytes == 120
    assert mem.get("1") is not None  # now the most recent
    mem.put("4", torch.zeros(10))
    assert mem.get("2") is None and mem.get("1") is not None
    mem.put("big", torch.zeros(100))  # larger than the whole budget: not kept
    assert mem.get("big") is None and len(mem) == 3


def test_an_unusable_folder_is_one_line_naming_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HellopackError, match=r"^cannot create the teacher cache folder '.*file/cache': .*; "
                                             r"pass another --teacher-cache$"):
        CachedTeachers(Refuses(), "t", blocker / "cache", 4)


# ---- builds ---------------------------------------------------------------------------------

def _config(tmp: Path, teacher: Path, name: str, **kw) -> BuildConfig:
    # update off and a short refine: every stage that asks the teachers (fit, fidelity, select, refine) sees
    # the same batches in builds that differ only in the projector's rank
    settings = {**TINY_BUILD, "update": False, "refine_steps": 2, **kw}
    return BuildConfig(recipe="synthetic", out=str(tmp / f"{name}.hellopack"), workdir=str(tmp / f"{name}.work"),
                       synthetic=SYN, teachers=(f"convnet:{teacher}",), **settings)


def test_a_second_build_takes_every_teacher_answer_from_the_cache_and_no_byte_changes(teacher, tmp_path,
                                                                                     monkeypatch):
    calls: list[int] = []
    forward = TeacherEnsemble.forward

    def counted(self, x):
        calls.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(TeacherEnsemble, "forward", counted)
    wrappers: list[CachedTeachers] = []
    init = CachedTeachers.__init__

    def recorded(self, *args, **kwargs):
        init(self, *args, **kwargs)
        wrappers.append(self)

    monkeypatch.setattr(CachedTeachers, "__init__", recorded)
    monkeypatch.setattr(teacher_cache, "SHARED", MemoryCache())  # this test's own memory layer
    cache = tmp_path / "cache"

    plain = build(_config(tmp_path, teacher, "plain"))
    assert not wrappers and not cache.exists()  # without the option: the ensemble itself
    asked = len(calls)
    assert asked > 10

    cold = build(_config(tmp_path, teacher, "cold", teacher_cache=str(cache)))
    assert cold.read_bytes() == plain.read_bytes()
    assert len(wrappers) == 3  # fit + fidelity, select's observer, refine
    misses = len(calls) - asked
    assert sum(w.misses for w in wrappers) == misses and sum(w.hits for w in wrappers) == asked - misses
    # already in this build: refine's 8 held-out view batches (after = before's views) and its fidelity batch
    assert asked - misses == 8 + 1
    stored = len(cache_files(cache))
    assert stored == misses  # one file per batch computed

    monkeypatch.setattr(teacher_cache, "SHARED", MemoryCache(0))  # from the files this time, not from memory
    del wrappers[:], calls[:]
    warm = build(_config(tmp_path, teacher, "warm", teacher_cache=str(cache), rank_encoder=3))
    assert calls == []  # fit, fidelity, select and refine: all from the cache
    assert sum(w.hits for w in wrappers) == asked and sum(w.misses for w in wrappers) == 0
    assert len(cache_files(cache)) == stored

    reference = build(_config(tmp_path, teacher, "reference", rank_encoder=3))
    assert warm.read_bytes() == reference.read_bytes() != plain.read_bytes()


def test_the_flag_reaches_the_config_and_stays_out_of_the_manifest(tmp_path, monkeypatch):
    from hellopack.distill.output import build_record
    from hellopack_cli.app import app

    seen: list[BuildConfig] = []

    def stop(cfg, reporter):
        seen.append(cfg)
        raise HellopackError("stopped before the build")

    monkeypatch.setattr("hellopack.distill.build", stop)
    res = CliRunner().invoke(app, ["build", "synthetic", "--out", str(tmp_path / "a.hellopack"),
                                   "--teacher-cache", str(tmp_path / "logits")])
    assert res.exit_code == 2 and "stopped before the build" in res.output
    assert seen[0].teacher_cache == str(tmp_path / "logits")
    assert "teacher_cache" not in build_record(seen[0].to_dict())
    assert BuildConfig(recipe="synthetic", out="a").teacher_cache is None
