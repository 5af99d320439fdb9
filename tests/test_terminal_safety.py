"""A stranger's strings (archive text, file names, server replies) never reach the terminal raw (issue 13).

Checked on bytes: no C0 control but the newlines a table itself prints, no DEL, no C1 control, no bidi
override; an error stays one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from hellopack.textsafe import is_printable, printable
from hellopack_cli.app import app
from test_archive_kit import VECTORS, load_make_vectors
from test_train_kit import small_archive  # noqa: F401  (session fixture)

mv = load_make_vectors()
EVIL = "x\x1b]0;pwned\x07\ny\u202e\x9b[2J"
SHOWN = "x\\x1b]0;pwned\\x07\\ny\\u202e\\x9b[2J"
# raw bytes a terminal acts on: C0 but \n, DEL, C1 (UTF-8 C2 80..9F), bidi controls (UTF-8 E2 80 AA..AE, E2 81 A6..A9)
_RAW = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\x8e\x8f\xaa-\xae]|\xe2\x81[\xa6-\xa9]")


def _hostile(path: Path, recipe: bool = True, source: Path = VECTORS / "valid-minimal.hellopack") -> Path:
    m, stored = mv.split(source.read_bytes())
    m["classes"][0]["name"] = EVIL
    m["base"]["name"] = EVIL
    m["dataset"]["name"] = EVIL
    m["tool"]["version"] = EVIL
    if recipe:
        m["recipe"]["optimizer"] = EVIL
        m["recipe"]["loss"] = EVIL
        m["recipe"]["schedule"] = EVIL
    path.write_bytes(mv.assemble(m, stored))
    return path


def test_printable_escapes_controls_bidi_and_truncates() -> None:
    assert printable(EVIL) == SHOWN
    assert printable("tab\there\r\x00\x7f") == "tab\\there\\r\\x00\\x7f"
    assert printable("a\u2028b\u2066c\ud800") == "a\\u2028b\\u2066c\\ud800"
    assert printable("golden retriever, café, 猫, …") == "golden retriever, café, 猫, …"  # text stays text
    assert printable("x" * 300) == "x" * 199 + "…" and len(printable("x" * 300)) == 200
    assert printable("x" * 300, limit=None) == "x" * 300
    assert printable(3.5) == "3.5" and is_printable(printable(EVIL)) and not is_printable(EVIL)


def test_inspect_table_shows_hostile_strings_inert(tmp_path: Path) -> None:
    archive = _hostile(tmp_path / "e\x1b[2J.hellopack")
    r = CliRunner().invoke(app, ["inspect", str(archive)])
    assert r.exit_code == 0, r.stderr
    out = r.stdout_bytes
    assert _RAW.search(out) is None, _RAW.search(out)
    assert b"e\\x1b[2J.hellopack" in re.sub(rb" *\n", b"", out)  # a long tmp path wraps the header line
    flat = re.sub(r"\s*[│┃]\s*", " ", r.stdout)  # the table may wrap: join its cells again
    flat = re.sub(r"\s+", " ", flat)
    for row in ("dataset", "classes", "base model", "recipe", "format", "protocol"):
        assert row in flat
    assert flat.count(SHOWN) >= 4, flat  # dataset, class, base, format at least; fold may split the others


def test_inspect_json_is_strict_and_escaped(tmp_path: Path) -> None:
    archive = _hostile(tmp_path / "e.hellopack")
    r = CliRunner().invoke(app, ["inspect", str(archive), "--json"])
    assert r.exit_code == 0, r.stderr
    assert _RAW.search(r.stdout_bytes) is None
    s = json.loads(r.stdout)  # JSON keeps the exact text, escaped by the encoder
    assert s["classes"]["first"][0] == EVIL and s["base"]["name"] == EVIL


def test_train_error_is_one_inert_line(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = _hostile(tmp_path / "e.hellopack", recipe=False, source=small_archive)
    r = CliRunner().invoke(app, ["train", str(archive), "--arch", "convnet", "--out", str(tmp_path / "run"),
                                 "--epochs", "1", "--device", "cpu", "-q"])
    assert r.exit_code == 2
    err = r.stderr_bytes
    assert err.startswith(b"hellopack: error: ") and err.count(b"\n") == 1 and err.endswith(b"\n")
    assert _RAW.search(err) is None, err
    assert SHOWN.encode() in err  # the base name, escaped (the first thing train refuses)
    assert not (tmp_path / "run").exists()


def test_cli_error_printer_escapes_and_caps(capsys) -> None:
    from cli.errors import MAX_ERROR_CHARS, fail

    fail(f"folder '{EVIL}' " + "y" * 5000)
    err = capsys.readouterr().err
    assert err.startswith(f"hellopack: error: folder '{SHOWN}' y") and err.count("\n") == 1
    kept = MAX_ERROR_CHARS - 1  # characters of the message, then "…"
    assert len(err) == len("hellopack: error: ") + kept + len(SHOWN) - len(EVIL) + 2 and err.endswith("y…\n")


def test_reporter_warnings_are_escaped(capsys) -> None:
    from cli.reporter import QuietReporter

    QuietReporter().warn(f"class {EVIL} has few images")
    assert capsys.readouterr().err == f"warning: class {SHOWN} has few images\n"


def test_describe_protocol_escapes_recipe_strings() -> None:
    from hellopack.summary import describe_protocol

    line = describe_protocol({"protocol": EVIL, "schedule": EVIL, "lr": 0.1, "decay": "all", "mix": EVIL})
    assert is_printable(line) and line.startswith(f"{SHOWN}: {SHOWN} schedule, lr 0.1, decay None on all")
