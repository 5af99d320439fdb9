"""The bad-input matrix (issue 6, item 3): one test per row of the tables in docs/errors.md.

The rows are read from the document, so the table and the tests cannot drift apart: every
row needs a case here (CASES, keyed by the row's id) and every case a row. Each case builds
its input and command; the expected stderr line and exit code come from the table, with
placeholders (<data>, <out>, ...) filled in. An expected line ending in "…" is a stable prefix.

Every error row: exit code 2, exactly one stderr line (commands run with -q, as scripts do;
test_progress_bars_do_not_add_lines checks the default too), no traceback, and nothing under
the output name (no archive, run folder or contact sheet, no temporary file beside them).
Rows that must work check what a user would: the archive verifies, and odd images decode to
the RGB pixels they show.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hellopack_cli.app import app
from helpers_build import CHILD_ENV, tiny_teacher
from test_train_fetch_hostile import VALID, hostile_server, mv
from test_train_kit import CLASS_IDS, cached_archive, class_entries, write_imagefolder

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
VECTOR = REPO / "spec" / "vectors" / "unknown-major-version.hellopack"
FOLDER_MEAN, FOLDER_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BUILD = ["--base", "hellopack-tiny-rn", "--pretrained", "none", "--templates", "simple", "--rank-encoder", "2",
         "--fit-epochs", "1", "--fit-batch-size", "8", "--n-real", "2", "--ipc", "1", "--device", "cpu", "-q"]
TRAIN = ["--epochs", "1", "--device", "cpu", "-q"]
SLOW_ROWS = {"image-10000x10000"}


# ---- the table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    expected: str  # the stderr line ("…" at the end: a prefix), or "" for rows that work
    exit: int


def read_rows(doc: Path = DOC) -> list[Row]:
    """Table rows whose first cell is a backticked id: | `id` | input | command | `expected` or works | exit |"""
    rows = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|", line)
        if not m:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"docs/errors.md: row {m.group(1)} needs 5 cells, has {len(cells)}"
        expected = cells[3]
        code = int(cells[4])
        if code == 0:
            assert expected.lower().startswith("works"), f"row {m.group(1)}: exit 0 rows say what works"
            expected = ""
        else:
            assert expected.startswith("`") and expected.endswith("`"), f"row {m.group(1)}: backtick the message"
            expected = expected[1:-1]
        rows.append(Row(m.group(1), expected, code))
    return rows


ROWS = read_rows()


# ---- shared inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kit:
    root: Path
    good: Path  # 4 classes x 4 images of 32 px (PNG)
    teacher: Path  # 4-class ConvNet
    teacher10: Path  # 10-class ConvNet
    evil_zip: Path  # torch.save of an object whose unpickling runs os.system
    evil_raw: Path  # a bare pickle whose unpickling opens (creates) a file
    marker: Path  # what either pickle would create
    other_weights: Path | None  # the state dict of another open_clip model (hellopack-tiny-rn32)
    archive: Path  # a small train archive (test_train_kit)
    readonly: Path | None  # a folder nobody may write into (None: cannot make one here)
    server: str  # the hostile HTTP server on 127.0.0.1 (test_train_fetch_hostile); other paths serve `archive`


class _RunsCode:
    def __init__(self, fn: Callable, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Iterator[Kit]:
    from hellopack.models.base import TINY_CONFIGS

    root = tmp_path_factory.mktemp("matrix")
    good = write_imagefolder(root / "good", 4, 32, seed=5)
    marker = root / "PWNED"
    import torch

    evil_zip = root / "evil.pt"
    torch.save({"conv.weight": _RunsCode(os.system, f"touch {marker}")}, evil_zip)
    evil_raw = root / "evil-raw.pth"
    evil_raw.write_bytes(pickle.dumps({"conv.weight": _RunsCode(open, str(marker), "w")}))
    other = None
    if "hellopack-tiny-rn32" in TINY_CONFIGS:
        from safetensors.torch import save_file

        from hellopack.models.base import load_base

        state = load_base("hellopack-tiny-rn32").model.state_dict()
        other = root / "tiny-rn32.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(other))
    archive = cached_archive(tmp_path_factory, ipc=4)
    with readonly_folder(root / "ro") as ro, hostile_server(archive.read_bytes()) as (server, _):
        yield Kit(root=root, good=good,
                  teacher=tiny_teacher(root / "teacher.safetensors", 4, 32, FOLDER_MEAN, FOLDER_STD),
                  teacher10=tiny_teacher(root / "teacher10.safetensors", 10, 32, FOLDER_MEAN, FOLDER_STD),
                  evil_zip=evil_zip, evil_raw=evil_raw, marker=marker, other_weights=other,
                  archive=archive, readonly=ro, server=server)


@contextlib.contextmanager
def readonly_folder(path: Path) -> Iterator[Path | None]:
    """A folder this process cannot write into: chmod 555, or for root (who ignores modes) a read-only tmpfs."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---- the cases ----------------------------------------------------------------------------------------

@dataclass
class Case:
    argv: list[str]
    subs: dict[str, str] = field(default_factory=dict)  # placeholder -> value in the expected line
    out_dir: Path | None = None  # where outputs go: after an error it holds nothing (a build's .work may stay)
    works: Callable[[], None] | None = None  # what a row that works must have made
    check: Callable[[], None] | None = None  # more assertions after the run, either way
    patches: dict[str, float] = field(default_factory=dict)  # hellopack.train.fetch budgets for this run


def _data(kit: Kit, tmp: Path) -> Path:
    return Path(shutil.copytree(kit.good, tmp / "data"))


def _build(kit: Kit, tmp: Path, data: Path, *extra: str, teacher: Path | None = None, images: int = 4,
           check: Callable[[dict], None] | None = None) -> Case:
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "x.hellopack"
    teacher = teacher or kit.teacher

    def verify() -> None:
        from hellopack.archive import open_archive

        a = open_archive(out)
        assert a.verify().images_checked == images
        assert a.manifest["images"]["size"] == 32 and a.manifest["images"]["count"] == images
        if check is not None:
            check(a.manifest)

    argv = ["build", "folder", "--data-dir", str(data), "--out", str(out), "--teacher", f"convnet:{teacher}",
            *BUILD, *extra]
    return Case(argv, {"data": str(data), "out": str(out), "teacher": str(teacher)}, out_dir, works=verify)


def _train(kit: Kit, tmp: Path, *extra: str, archive: Path | None = None, out: Path | None = None) -> Case:
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out or out_dir / "run"
    archive = archive or kit.archive
    return Case(["train", str(archive), "--out", str(out), *TRAIN, *extra],
                {"archive": str(archive), "out": str(out)}, out_dir)


def _ro(kit: Kit) -> Path:
    if kit.readonly is None:
        pytest.skip("cannot make a read-only folder here (root, and mounting a read-only tmpfs failed)")
    return kit.readonly


def _other_weights(kit: Kit) -> Path:
    if kit.other_weights is None:
        pytest.skip("the tiny config hellopack-tiny-rn32 is not shipped")
    return kit.other_weights


def _decodes_to(path: Path, *pixels: tuple[tuple[int, int], tuple[int, int, int]], tol: int = 0) -> None:
    """What the data layer (the code every recipe uses) makes of one file: RGB, these pixel values."""
    from hellopack.data.convert import open_rgb

    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (32, 32)
    for xy, rgb in pixels:
        assert all(abs(a - b) <= tol for a, b in zip(img.getpixel(xy), rgb, strict=True)), (xy, img.getpixel(xy), rgb)


def _first_file(data: Path) -> Path:
    folder = min(p for p in data.iterdir() if p.is_dir())
    return min(folder.iterdir())


def _mode_image(kit: Kit, tmp: Path, make: Callable[[], Image.Image], suffix: str, mode: str,
                *pixels: tuple[tuple[int, int], tuple[int, int, int]], tol: int = 0) -> Case:
    """The dataset's first file (the one that decided the natural size) replaced by an image of ``mode``."""
    data = _data(kit, tmp)
    first = _first_file(data)
    first.unlink()
    path = first.with_suffix(suffix)
    make().save(path)
    with Image.open(path) as im:
        assert im.mode == mode, im.mode  # the file really is what the row says
    case = _build(kit, tmp, data)
    built = case.works

    def works() -> None:
        _decodes_to(path, *pixels, tol=tol)
        built()

    case.works = works
    return case


def _bad_file(kit: Kit, tmp: Path, content: bytes | None, *extra: str) -> Case:
    data = _data(kit, tmp)
    target = data / CLASS_IDS[0] / "zz.jpg"
    if content is None:
        os.symlink("zz.jpg", target)  # a link to itself
    else:
        target.write_bytes(content)
    return _build(kit, tmp, data, *extra)


def _jpeg(size: int = 64) -> bytes:
    import io

    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _palette() -> Image.Image:
    arr = np.ones((32, 32), np.uint8)
    arr[:16, :16] = 0
    img = Image.fromarray(arr, "P")
    img.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    return img


def _rgba() -> Image.Image:
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., :3] = (1, 2, 3)
    arr[..., 3] = 255
    arr[0, 0] = (0, 0, 0, 0)  # fully transparent black
    return Image.fromarray(arr, "RGBA")


def _empty_class(kit: Kit, tmp: Path) -> Case:
    data = _data(kit, tmp)
    (data / "zebra").mkdir()
    return _build(kit, tmp, data)


def _short(kit: Kit, tmp: Path, *extra: str) -> Case:
    data = _data(kit, tmp)
    (data / CLASS_IDS[0] / "00003.png").unlink()  # 3 images where --ipc 4 needs 4
    return _build(kit, tmp, data, "--ipc", "4", "--n-real", "4", *extra, images=15,
                  check=lambda m: _eq(m["images"]["ipc"], 4))


def _big(kit: Kit, tmp: Path) -> Case:
    data = _data(kit, tmp)
    Image.new("L", (10_000, 10_000), 77).save(data / CLASS_IDS[1] / "zz.png")
    return _build(kit, tmp, data)


def _one_pixel(kit: Kit, tmp: Path) -> Case:
    data = _data(kit, tmp)
    Image.new("RGB", (1, 1), (9, 9, 9)).save(_first_file(data))
    return _build(kit, tmp, data)


def _symlink_loops(kit: Kit, tmp: Path) -> Case:
    data = _data(kit, tmp)
    d = data / CLASS_IDS[0]
    os.symlink("..", d / "up")  # back to the root: would pull in every other class
    os.symlink(".", d / "again")  # itself
    os.symlink("loop", d / "loop")  # a link to itself (ELOOP), not an image name
    return _build(kit, tmp, data, check=lambda m: _eq(m["dataset"]["train_images"], 16))


def _non_utf8(kit: Kit, tmp: Path) -> Case:
    data = _data(kit, tmp)
    os.rename(os.fsencode(data / CLASS_IDS[0] / "00001.png"), os.fsencode(data / CLASS_IDS[0]) + b"/\xff\xfe.png")
    os.rename(os.fsencode(data / CLASS_IDS[3]), os.fsencode(data) + b"/yellow_\xe9")
    return _build(kit, tmp, data, check=lambda m: _eq([c["source_id"] for c in m["classes"]][-1], "yellow_\\xe9"))


def _eq(a: object, b: object) -> None:
    assert a == b, (a, b)


def _pickle(kit: Kit, tmp: Path, evil: Path, train: bool) -> Case:
    case = (_train(kit, tmp, "--arch", "convnet", "--labels", "teacher", "--teacher", f"convnet:{evil}") if train
            else _build(kit, tmp, kit.good, teacher=evil))
    case.subs["evil"] = str(evil)

    def check() -> None:
        assert not kit.marker.exists(), "the pickle's code ran"

    case.check = check
    return case


def _other_global(kit: Kit, tmp: Path) -> Case:
    import argparse
    import pathlib

    import torch

    evil = tmp / "model_3.pth"
    torch.save({"model": {}, "epoch": 3, "args": argparse.Namespace(data_path=pathlib.PurePosixPath("/data"))}, evil)
    case = _build(kit, tmp, kit.good, teacher=evil)
    case.subs["evil"] = str(evil)
    return case


def _runs_folder(kit: Kit, tmp: Path) -> Case:
    runs = tmp / "runs"
    runs.mkdir()
    shutil.copy(kit.teacher, runs / "model_0.pth")
    case = _build(kit, tmp, kit.good, "--teachers-dir", str(runs))
    case.subs["runs"] = str(runs)
    return case


def _weights(kit: Kit, tmp: Path, train: bool) -> Case:
    w = _other_weights(kit)
    case = (_train(kit, tmp, "--arch", "convnet", "--clip-weights", str(w)) if train
            else _build(kit, tmp, kit.good, "--clip-weights", str(w)))
    case.subs["weights"] = str(w)
    return case


def _val(kit: Kit, tmp: Path) -> Case:
    val = write_imagefolder(tmp / "val", 1, 16, seed=3)
    (val / CLASS_IDS[3]).rename(val / "purple_v")
    case = _train(kit, tmp, "--arch", "convnet", "--val", str(val))
    case.subs["val"] = str(val)
    return case


def _missing_archive(kit: Kit, tmp: Path, train: bool) -> Case:
    archive = tmp / "missing.hellopack"
    if train:
        return _train(kit, tmp, "--arch", "convnet", archive=archive)
    return Case(["inspect", str(archive)], {"archive": str(archive)})


def _future(kit: Kit, tmp: Path, train: bool) -> Case:
    if train:
        case = _train(kit, tmp, "--arch", "convnet", archive=VECTOR)
    else:
        case = Case(["inspect", str(VECTOR), "--verify"], {})
    case.subs["vector"] = str(VECTOR)
    return case


def _unwritable(kit: Kit, tmp: Path, what: str) -> Case:
    ro = _ro(kit)
    if what == "build":
        case = _build(kit, tmp, kit.good)
        case.argv[case.argv.index("--out") + 1] = str(ro / "x.hellopack")
    elif what == "train":
        case = _train(kit, tmp, "--arch", "convnet", out=ro / "run")
    else:
        case = Case(["inspect", str(kit.archive), "--grid", str(ro / "sheet.png")], {})
    case.subs["ro"] = str(ro)
    case.check = lambda: _eq(os.listdir(ro), [])
    return case


def _file_as_out(kit: Kit, tmp: Path) -> Case:
    f = tmp / "run.txt"
    f.write_text("not a folder")
    case = _train(kit, tmp, "--arch", "convnet", out=f)
    case.check = lambda: _eq(f.read_text(), "not a folder")
    return case


def _workdir_in_use(kit: Kit, tmp: Path) -> Case:
    """Another build (here: this process, through its own descriptor) holds the work folder's lock."""
    import fcntl

    work = tmp / "busy.work"
    work.mkdir()
    (work / ".half-written.tmp").write_bytes(b"the other build's write in progress")
    fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    case = _build(kit, tmp, kit.good, "--workdir", str(work))
    case.subs["work"] = str(work)

    def check() -> None:
        try:  # the other build's folder is untouched: its temporaries stay, nothing is removed
            _eq(sorted(p.name for p in work.iterdir()), [".half-written.tmp", ".lock"])
        finally:
            os.close(fd)

    case.check = check
    return case


def _hostile(kit: Kit, tmp: Path, attack: str) -> Case:
    """The small train archive with one hostile edit, every checksum recomputed (tests/helpers_hostile.py)."""
    from helpers_hostile import attacks, resign

    edit, members, _ = attacks([c["name"] for c in class_entries()])[attack]
    archive = tmp / "hostile.hellopack"
    archive.write_bytes(resign(kit.archive.read_bytes(), edit, members))
    case = _train(kit, tmp, "--arch", "convnet", archive=archive)
    case.subs["hostile"] = str(archive)
    return case


def _out_in_use(kit: Kit, tmp: Path) -> Case:
    """Another train (here: this process, through its own descriptor) holds the run folder's lock."""
    import fcntl

    case = _train(kit, tmp, "--arch", "convnet")
    run = Path(case.subs["out"])
    run.mkdir()
    (run / ".last.safetensors.1234.tmp").write_bytes(b"the other train's checkpoint in progress")
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    case.out_dir = None  # the folder is the other run's: check that it is untouched instead

    def check() -> None:
        try:
            _eq(sorted(p.name for p in run.iterdir()), [".last.safetensors.1234.tmp", ".lock"])
        finally:
            os.close(fd)

    case.check = check
    return case


def _missing_out_folder(kit: Kit, tmp: Path) -> Case:
    case = _build(kit, tmp, kit.good)
    out = tmp / "out" / "nowhere" / "x.hellopack"
    case.argv[case.argv.index("--out") + 1] = str(out)
    case.subs["dir"] = str(out.parent)
    return case


def _teach_on_file(kit, tmp):
    data = tmp / "data.txt"
    data.write_text("x")
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "traj"
    return Case(["teach", "folder", "--data-dir", str(data), "--out", str(out), "--device", "cpu", "-q"],
                {"data": str(data), "out": str(out)}, out_dir)


def _grid_folder(kit, tmp):
    d = tmp / "sheets"
    d.mkdir()
    case = Case(["inspect", str(kit.archive), "--grid", str(d)], {"archive": str(kit.archive), "dir": str(d)}, d)
    return case


def _archive_folder(kit, tmp, train):
    folder = tmp / "archives"
    folder.mkdir()
    if train:
        return _train(kit, tmp, "--arch", "convnet", archive=folder)
    return Case(["inspect", str(folder)], {"archive": str(folder)}, folder)


def _val_without_split(kit, tmp):
    val = tmp / "val"
    write_imagefolder(val / "train", 1, 16, seed=3)
    case = _train(kit, tmp, "--arch", "convnet", "--val", str(val))
    case.subs["val"] = str(val)
    return case


def _fifo(kit: Kit, tmp: Path) -> Case:
    import threading

    data = _data(kit, tmp)
    fifo = data / CLASS_IDS[0] / "000.jpg"
    os.mkfifo(fifo)  # sorted first: the file that decides the natural size

    def unblock() -> None:  # a reader stuck in open() gets EOF after 60 s: the row fails instead of hanging
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(60, unblock)
    timer.daemon = True
    timer.start()
    case = _build(kit, tmp, data)
    case.check = timer.cancel
    return case


EVIL = "x\x1b]0;pwned\x07\ny"


def _evil_archive(kit: Kit, tmp: Path) -> Path:
    m, stored = mv.split(kit.archive.read_bytes())
    for where in (m["base"], m["dataset"], m["classes"][0]):
        where["name"] = EVIL
    path = tmp / "evil.hellopack"
    path.write_bytes(mv.assemble(m, stored))
    return path


def _evil(kit: Kit, tmp: Path, train: bool) -> Case:
    archive = _evil_archive(kit, tmp)
    if train:
        return _train(kit, tmp, "--arch", "convnet", archive=archive)
    return Case(["inspect", str(archive)], {"archive": str(archive)})


def _grid_is_archive(kit: Kit, tmp: Path) -> Case:
    archive = Path(shutil.copy(kit.archive, tmp / "a.hellopack"))
    case = Case(["inspect", str(archive), "--grid", str(archive)], {"archive": str(archive),
                                                                    "png": str(tmp / "a.png")})
    case.check = lambda: _eq(archive.read_bytes(), kit.archive.read_bytes())
    return case


def _non_finite(kit: Kit, tmp: Path) -> Case:
    vector = VECTOR.with_name("non-finite-number.hellopack")
    return Case(["inspect", str(vector), "--json"], {"vector": str(vector)})


def _url(kit: Kit, tmp: Path, path: str, **patches: float) -> Case:
    """`train URL` from the hostile server: after an error the cache holds nothing (no .part, no entry)."""
    url = kit.server + path
    out_dir = tmp / "out"
    out_dir.mkdir()
    cache = tmp / "cache"
    case = Case(["train", url, "--arch", "convnet", "--out", str(out_dir / "run"), "--cache-dir", str(cache),
                 *TRAIN], {"url": url, "bytes": f"{len(VALID):,}"}, out_dir, patches=patches)
    case.check = lambda: _eq([p for p in cache.rglob("*") if p != cache / "archives"], [])
    return case


def _url_long(kit: Kit, tmp: Path) -> Case:
    case = _url(kit, tmp, "/" + "a" * 300 + ".hellopack")
    cache = tmp / "cache"

    def works() -> None:
        (cached,) = [p for p in cache.rglob("*.hellopack")]
        _eq((len(cached.name), cached.read_bytes() == kit.archive.read_bytes()), (120, True))
        assert (tmp / "out" / "run" / "result.json").is_file()

    case.check, case.works = None, works
    return case


CASES: dict[str, Callable[[Kit, Path], Case]] = {
    # data
    "missing-dataset": lambda k, t: _build(k, t, t / "nope"),
    "dataset-is-a-file": lambda k, t: _build(k, t, (t / "data.txt", (t / "data.txt").write_text("x"))[0]),
    "empty-dataset": lambda k, t: _build(k, t, (t / "empty", (t / "empty").mkdir())[0]),
    "empty-class-folder": _empty_class,
    "class-too-small": lambda k, t: _short(k, t),
    "class-too-small-allow-short": lambda k, t: _short(k, t, "--allow-short"),
    "corrupt-jpeg": lambda k, t: _bad_file(k, t, _jpeg()[:20] + b"\0garbage" * 50 + _jpeg()[-100:]),
    "corrupt-jpeg-tolerated": lambda k, t: _bad_file(k, t, _jpeg()[:20] + b"\0garbage" * 50,
                                                     "--max-bad-fraction", "0.1"),
    "truncated-jpeg": lambda k, t: _bad_file(k, t, _jpeg()[: len(_jpeg()) // 2]),
    "zero-byte-file": lambda k, t: _bad_file(k, t, b""),
    "symlink-loop-file": lambda k, t: _bad_file(k, t, None),
    "grayscale-png": lambda k, t: _mode_image(k, t, lambda: Image.new("L", (32, 32), 77), ".png", "L",
                                              ((5, 5), (77, 77, 77))),
    "palette-png": lambda k, t: _mode_image(k, t, _palette, ".png", "P",
                                            ((0, 0), (255, 255, 255)), ((31, 31), (200, 0, 0))),
    "rgba-png": lambda k, t: _mode_image(k, t, _rgba, ".png", "RGBA",
                                         ((0, 0), (255, 255, 255)), ((9, 9), (1, 2, 3))),
    "cmyk-jpeg": lambda k, t: _mode_image(k, t, lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)), ".jpg",
                                          "CMYK", ((5, 5), (255, 0, 0)), tol=3),
    "16-bit-png": lambda k, t: _mode_image(k, t, lambda: Image.fromarray(np.full((32, 32), 257 * 100, np.uint16)),
                                           ".png", "I;16", ((5, 5), (100, 100, 100))),
    "image-1x1": _one_pixel,
    "image-10000x10000": _big,
    "symlink-loops": _symlink_loops,
    "non-utf8-names": _non_utf8,
    "fifo-image": _fifo,
    # teachers and the base model
    "teacher-class-mismatch": lambda k, t: _build(k, t, k.good, teacher=k.teacher10),
    "teacher-pickle-runs-code": lambda k, t: _pickle(k, t, k.evil_zip, train=False),
    "teacher-pickle-raw": lambda k, t: _pickle(k, t, k.evil_raw, train=False),
    "train-teacher-pickle-runs-code": lambda k, t: _pickle(k, t, k.evil_zip, train=True),
    "teacher-pickle-other-global": _other_global,
    "teacher-ema-missing": lambda k, t: _build(k, t, k.good, "--teacher", f"convnet:{k.teacher}#ema"),
    "teachers-dir-needs-arch": _runs_folder,
    "wrong-base-weights": lambda k, t: _weights(k, t, train=False),
    "train-wrong-base-weights": lambda k, t: _weights(k, t, train=True),
    "unknown-base": lambda k, t: _build(k, t, k.good, "--base", "RN5O"),
    # flags
    "ipc-zero": lambda k, t: _build(k, t, k.good, "--ipc", "0"),
    "ipc-negative": lambda k, t: _build(k, t, k.good, "--ipc", "-1"),
    "factor-not-dividing": lambda k, t: _build(k, t, k.good, "--factor", "3"),
    "unknown-arch": lambda k, t: _train(k, t, "--arch", "resnet19"),
    # the rest of the line names the CPUs this process may use (hellopack.threads.usable_cpus; tests/test_threads.py)
    "threads-zero": lambda k, t: Case(["--threads", "0", "demo", "--out", str(t / "demo")], {"out": str(t / "demo")},
                                      out_dir=t / "demo"),
    "threads-negative": lambda k, t: Case(["--threads", "-2", "demo", "--out", str(t / "demo")],
                                          {"out": str(t / "demo")}, out_dir=t / "demo"),
    "autocast-unknown": lambda k, t: Case(["--autocast", "fp8", "demo", "--out", str(t / "demo")],
                                          {"out": str(t / "demo")}, out_dir=t / "demo"),
    # outputs
    "output-folder-missing": _missing_out_folder,
    "unwritable-output": lambda k, t: _unwritable(k, t, "build"),
    "train-unwritable-output": lambda k, t: _unwritable(k, t, "train"),
    "train-output-is-a-file": _file_as_out,
    "unwritable-grid": lambda k, t: _unwritable(k, t, "grid"),
    "workdir-in-use": _workdir_in_use,
    "teach-dataset-is-a-file": _teach_on_file,
    "grid-is-a-folder": _grid_folder,
    "grid-is-the-archive": _grid_is_archive,
    "archive-is-a-folder": lambda k, t: _archive_folder(k, t, train=False),
    "train-archive-is-a-folder": lambda k, t: _archive_folder(k, t, train=True),
    "val-without-a-val-split": _val_without_split,
    # archives
    "missing-archive": lambda k, t: _missing_archive(k, t, train=False),
    "train-missing-archive": lambda k, t: _missing_archive(k, t, train=True),
    "future-major-version": lambda k, t: _future(k, t, train=False),
    "train-future-major-version": lambda k, t: _future(k, t, train=True),
    "val-classes-differ": _val,
    "archive-control-characters": lambda k, t: _evil(k, t, train=False),
    "train-archive-control-characters": lambda k, t: _evil(k, t, train=True),
    "non-finite-number": _non_finite,
    # archives from a URL (a hostile server on 127.0.0.1)
    "url-not-an-archive": lambda k, t: _url(k, t, "/garbage.hellopack"),
    "url-endless-body": lambda k, t: _url(k, t, "/endless.hellopack"),
    "url-trickle": lambda k, t: _url(k, t, "/trickle.hellopack", DEADLINE_S=0.5),
    "url-too-slow": lambda k, t: _url(k, t, "/trickle.hellopack", RATE_WINDOW_S=0.5),
    "url-silent": lambda k, t: _url(k, t, "/stall.hellopack", READ_TIMEOUT_S=0.5),
    "url-cut-short": lambda k, t: _url(k, t, "/short-chunked.hellopack"),
    "url-redirect-to-file": lambda k, t: _url(k, t, "/redirect-file.hellopack"),
    "url-redirect-to-ftp": lambda k, t: _url(k, t, "/redirect-ftp.hellopack"),
    "url-control-characters": lambda k, t: _url(k, t, "/reason.hellopack"),
    "url-checksum-valid-but-broken": lambda k, t: _url(k, t, "/broken.hellopack"),
    "url-long-name": _url_long,
    # hostile archives (issue 13): refused before any work, as inspect --verify refuses them
    "prompts-format-width": lambda k, t: _hostile(k, t, "format-width-template"),
    "prompts-100000-templates": lambda k, t: _hostile(k, t, "many-templates"),
    "prompts-is-a-list": lambda k, t: _hostile(k, t, "prompts-list"),
    "prompts-nested-deep": lambda k, t: _hostile(k, t, "prompts-nested"),
    "prompts-classnames-number": lambda k, t: _hostile(k, t, "classnames-int"),
    "prompts-classnames-not-strings": lambda k, t: _hostile(k, t, "classnames-not-str"),
    "prompts-nan": lambda k, t: _hostile(k, t, "prompts-nan"),
    "prompts-duplicate-key": lambda k, t: _hostile(k, t, "prompts-duplicate-key"),
    "lora-rank-200000": lambda k, t: _hostile(k, t, "rank-200000"),
    "lora-60m-numbers": lambda k, t: _hostile(k, t, "lora-60M-numbers"),
    "images-size-2-62": lambda k, t: _hostile(k, t, "images-size-2^62"),
    "train-out-in-use": _out_in_use,
}


# ---- the tests --------------------------------------------------------------------------------------

def test_every_row_has_a_case_and_every_case_a_row():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "duplicate ids in docs/errors.md"
    assert sorted(ids) == sorted(CASES)


def _fill(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace(f"<{key}>", value)
    assert not re.search(r"<[a-z]+>", text), f"unfilled placeholder in {text!r}"
    return text


def _outputs(folder: Path | None) -> list[str]:
    """What a failed command left in its output folder: a build's work folder with finished stages may stay."""
    if folder is None or not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not (p.is_dir() and p.name.endswith(".work")))


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.id in SLOW_ROWS else [])
                                 for r in ROWS])
def test_row(row: Row, kit: Kit, tmp_path: Path, monkeypatch):
    import hellopack.train.fetch as fetch

    case = CASES[row.id](kit, tmp_path)
    for name, value in case.patches.items():
        monkeypatch.setattr(fetch, name, value)
    res = CliRunner().invoke(app, case.argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a crash: show its traceback
    assert res.exit_code == row.exit, res.stderr
    # a stranger's string never reaches the terminal raw: no control character but newlines, no bidi override
    raw = re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", res.stdout + res.stderr)
    assert raw is None, (raw, res.stdout, res.stderr)
    if row.exit != 0:
        expected = _fill(row.expected, case.subs)
        lines = res.stderr.splitlines()
        assert len(lines) == 1, res.stderr
        if expected.endswith("…"):
            assert lines[0].startswith(expected[:-1]), (lines[0], expected)
        else:
            assert lines[0] == expected
        assert "weights_only" not in lines[0]  # never advise loading with code execution on
        assert _outputs(case.out_dir) == []
    elif case.works is not None:
        case.works()
    if case.check is not None:
        case.check()


def test_progress_bars_do_not_add_lines(kit: Kit, tmp_path: Path):
    """Without -q the error is still the only stderr line when it comes before the first progress bar."""
    res = CliRunner().invoke(app, ["build", "folder", "--data-dir", str(tmp_path / "nope"), "--out",
                                   str(tmp_path / "x.hellopack")])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [f"hellopack: error: data dir '{tmp_path / 'nope'}' does not exist; "
                                       "check --data-dir"]


@pytest.mark.slow
def test_a_real_process_exits_2_with_one_line(kit: Kit, tmp_path: Path):
    """The same through `python -m hellopack_cli` (a real exit code and stderr): a pickle with code in it."""
    out = tmp_path / "x.hellopack"
    proc = subprocess.run([sys.executable, "-m", "hellopack_cli", "build", "folder", "--data-dir", str(kit.good),
                           "--out", str(out), "--teacher", f"convnet:{kit.evil_zip}", *BUILD],
                          capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"hellopack: error: refusing to load teacher checkpoint '{kit.evil_zip}'")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not out.exists() and not kit.marker.exists()
