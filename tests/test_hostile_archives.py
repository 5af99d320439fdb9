"""Issue 13 (part B): one validated read path. `inspect --verify` and `train` run the same checks on prompts.json
and the LoRA layout, refuse the same archives with the same one line, before any work, and `train` stays small.

The hostile archives are hand-made with every checksum recomputed (tests/helpers_hostile.py), so only the
content checks and budgets (spec/FORMAT.md 5.1) stand in the way.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellopack.archive import ArchiveError, open_archive
from hellopack_cli.app import app
from helpers_hostile import MEMORY_BOMBS, attacks, resign
from test_archive_kit import VECTORS
from test_train_kit import class_entries, cached_archive

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
NAMES = [c["name"] for c in class_entries()]
ATTACKS = attacks(NAMES)
BAD_VECTORS = sorted(p.name[: -len(".error.txt")] for p in VECTORS.glob("*.error.txt"))
TRAIN = ["--arch", "convnet", "--epochs", "1", "--device", "cpu", "-q"]


def _matches(pattern: str, line: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), line) is not None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    good = cached_archive(tmp_path_factory, ipc=4).read_bytes()
    folder = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, (edit, members, _) in ATTACKS.items():
        out[name] = folder / f"{name}.hellopack"
        out[name].write_bytes(resign(good, edit, members))
        assert out[name].stat().st_size < 1024**2  # small files, big claims
    return out


def _one_line_exit_2(r, where: str) -> str:
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (where, r.exit_code, r.stderr[-2000:])
    return lines[0]


def _verify_and_train(archive: Path, tmp_path: Path) -> tuple[str, str]:
    v = runner.invoke(app, ["inspect", str(archive), "--verify"])
    t = runner.invoke(app, ["train", str(archive), *TRAIN, "--out", str(tmp_path / "run")])
    got_v, got_t = _one_line_exit_2(v, "inspect --verify"), _one_line_exit_2(t, "train")
    assert not (tmp_path / "run").exists()  # refused before any work: no run folder
    return got_v, got_t


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_verify_and_train_refuse_each_attack_with_the_same_line(name: str, hostile, tmp_path: Path) -> None:
    archive = hostile[name]
    expected = f"hellopack: error: {archive}: {ATTACKS[name][2]}"
    got_v, got_t = _verify_and_train(archive, tmp_path)
    assert _matches(expected, got_v), got_v
    assert got_t == got_v


@pytest.mark.parametrize("name", BAD_VECTORS)
def test_verify_and_train_refuse_every_malformed_vector(name: str, tmp_path: Path) -> None:
    archive = VECTORS / f"{name}.hellopack"
    message = (VECTORS / f"{name}.error.txt").read_text(encoding="utf-8").rstrip("\n")
    got_v, got_t = _verify_and_train(archive, tmp_path)
    assert got_v == f"hellopack: error: {archive}: {message}"
    if name.startswith("image-"):
        # The image vectors are valid-minimal's 4-px images (image-pixel-budget: a 2048-px claim its recipe
        # does not match), which `train` refuses (one line, exit 2, above) before it reads a pixel; its image
        # read path must still refuse them with verify's message.
        from hellopack.train.images import load_archive_images

        a = open_archive(archive)
        with pytest.raises(ArchiveError) as e:
            load_archive_images(a, int(a.manifest["images"]["size"]), len(a.manifest["classes"]))
        assert str(e.value) == message
    else:
        assert got_t == got_v


def test_the_format_width_message_is_the_issues(hostile) -> None:
    with pytest.raises(ArchiveError) as e:
        open_archive(hostile["format-width-template"]).read_prompts()
    assert str(e.value) == ("prompts.json: template 1 has a format spec ('{:>1500000000}'); "
                            "templates may hold only '{}'")


def test_templates_that_work_still_work() -> None:
    from hellopack.archive.prompts import check_template
    from hellopack.models.projector import TEMPLATES

    for t in [*TEMPLATES["openai"], *TEMPLATES["simple"], "{{literal}} braces around {}", "{}"]:
        check_template(t, 1)
    for bad, defect in [("{!r}", "a conversion ('{!r}')"), ("{x}", "a field name ('{x}')"),
                        ("{:s}", "a format spec ('{:s}')"), ("no placeholder", "0 placeholders"),
                        ("{", "unbalanced braces"), ("}", "unbalanced braces")]:
        with pytest.raises(ArchiveError, match=re.escape(defect)):
            check_template(bad, 1)


MEMORY_CHILD = textwrap.dedent("""
    import resource, sys
    cap = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))  # heap and anonymous maps: where a bomb would land
    from hellopack_cli.app import app
    from typer.main import get_command
    try:
        get_command(app)(sys.argv[2:], prog_name="hellopack", standalone_mode=True)
    finally:
        print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stdout)
""")


@pytest.mark.parametrize("name", MEMORY_BOMBS)
def test_train_on_memory_bombs_stays_under_2_gb(name: str, hostile, tmp_path: Path) -> None:
    """A real process under RLIMIT_DATA 2 GiB: train refuses the bomb (exit 2, one line) instead of building it."""
    cap = 2 * 1024**3
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(cap), "train", str(hostile[name]), *TRAIN,
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert _matches(f"hellopack: error: {hostile[name]}: {ATTACKS[name][2]}", lines[0])
    rss = int(r.stdout.split("maxrss_kib")[-1]) * 1024
    assert rss < cap
