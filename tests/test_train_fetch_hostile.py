"""`train URL` against a hostile HTTP server on 127.0.0.1 (issue 13): every attack ends in one
HellopackError line free of control characters, and leaves nothing behind (no .part file, no cache
entry). Servers are bounded: at most ENDLESS_CAP bytes and a few seconds per request, loopback only."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import hellopack.train.fetch as fetch
from hellopack.errors import HellopackError
from hellopack.train.fetch import cached_path, resolve_archive
from test_archive_kit import VECTORS, load_make_vectors

mv = load_make_vectors()
VALID = (VECTORS / "valid-minimal.hellopack").read_bytes()
ENDLESS_CAP = 256 * 1024**2  # what an "endless" body sends at most (today's code would take all of it)
BLOCK = 64 * 1024
REPO = Path(__file__).resolve().parents[1]


def _checksum_valid_but_broken() -> bytes:
    """Every hash recomputed, but the manifest says 8-px images where the images are 4 px."""
    m, stored = mv.split(VALID)
    m["images"]["size"] = 8
    return mv.assemble(m, stored)


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sent: dict[str, int] = {}
    archive: bytes = VALID  # what any other path (the long URL) serves

    def log_message(self, *args: object) -> None:
        pass

    def _head(self, code: int = 200, length: int | None = None, reason: str | None = None,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code, reason)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()

    def _pump(self, make: Callable[[int], bytes], *, first: bytes = b"", every: float = 0.0,
              limit_s: float = 20.0) -> None:
        """Write ``first`` then blocks from ``make`` until the client hangs up or a bound is hit."""
        t0, n = time.monotonic(), 0
        try:
            if first:
                self.wfile.write(first)
                n += len(first)
            while n < ENDLESS_CAP and time.monotonic() - t0 < limit_s:
                block = make(n)
                self.wfile.write(block)
                self.wfile.flush()
                n += len(block)
                if every:
                    time.sleep(every)
        except OSError:
            pass
        finally:
            type(self).sent[self.path] = n

    def do_GET(self) -> None:  # noqa: N802
        p = self.path
        if p == "/garbage.hellopack":  # endless, and not an archive at all
            self._head()
            self._pump(lambda n: b"X" * BLOCK)
        elif p == "/endless.hellopack":  # a real archive, then zeros forever
            self._head()
            self._pump(lambda n: b"\0" * BLOCK, first=VALID)
        elif p == "/trickle.hellopack":  # one byte of a real archive every 50 ms
            self._head(length=len(VALID))
            self._pump(lambda n: VALID[n:n + 1], every=0.05, limit_s=10)
        elif p == "/stall.hellopack":  # the first bytes, then silence
            self._head(length=len(VALID))
            self.wfile.write(VALID[:100])
            self.wfile.flush()
            time.sleep(3)
        elif p == "/short-chunked.hellopack":
            self._head(extra={"Transfer-Encoding": "chunked"})
            half = VALID[: len(VALID) // 2]
            self.wfile.write(b"%x\r\n" % len(VALID) + half)  # the chunk promises more than it holds
            self.wfile.flush()
        elif p.startswith("/redirect-"):
            target = {"/redirect-file.hellopack": "file:///etc/passwd",
                      "/redirect-ftp.hellopack": "ftp://127.0.0.1/x.hellopack"}[p]
            self._head(302, 0, extra={"Location": target})
        elif p == "/reason.hellopack":
            self._head(404, 0, reason="Not\x1b]0;pwned\x07 Found\x1b[2J")
        elif p == "/broken.hellopack":
            blob = _checksum_valid_but_broken()
            self._head(length=len(blob))
            self.wfile.write(blob)
        else:  # any other path (the long URL): the valid archive
            self._head(length=len(self.archive))
            self.wfile.write(self.archive)


@contextlib.contextmanager
def hostile_server(archive: bytes = VALID) -> Iterator[tuple[str, dict[str, int]]]:
    """The hostile server on 127.0.0.1 in a thread: (base URL, bytes sent per path)."""
    handler = type("H", (_Hostile,), {"sent": {}, "archive": archive})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.sent
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[tuple[str, dict[str, int]]]:
    with hostile_server() as h:
        yield h


def _fails(url: str, cache: Path, pattern: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(HellopackError) as e:
        resolve_archive(url, cache)
    msg = str(e.value)
    import re

    assert re.search(pattern, msg), msg
    assert "\n" not in msg and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in msg), repr(msg)
    assert _left(cache) == [], "a failed download left files in the cache"
    assert time.monotonic() - t0 < 15
    return msg


def _left(cache: Path) -> list[str]:
    """Everything under the cache's archives folder (no .part files, no per-URL folders)."""
    root = cache / "archives"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_endless_garbage_stops_at_the_magic(hostile, tmp_path: Path) -> None:
    base, sent = hostile
    url = f"{base}/garbage.hellopack"
    _fails(url, tmp_path / "c", rf"^archive downloaded from {url} is not valid \(header: bad magic "
                                r"\(not a hellopack archive\)\); check the URL$")
    time.sleep(0.2)
    assert sent["/garbage.hellopack"] < 16 * 1024**2  # stopped within the first read, not after the whole body


def test_endless_body_stops_past_the_declared_size(hostile, tmp_path: Path) -> None:
    base, sent = hostile
    url = f"{base}/endless.hellopack"
    _fails(url, tmp_path / "c", rf"^download of {url} sent more than the {len(VALID):,} bytes its header and "
                                r"manifest declare; stopped \(")
    time.sleep(0.2)
    assert sent["/endless.hellopack"] < 16 * 1024**2


def test_absolute_cap(hostile, tmp_path: Path, monkeypatch) -> None:
    base, _ = hostile
    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 1000)  # below the 2.7 KB archive
    url = f"{base}/endless.hellopack"
    _fails(url, tmp_path / "c", rf"^archive at {url} is too large to download \(its header and manifest declare "
                                rf"{len(VALID):,} bytes, the limit is 1,000\); download the file yourself")


def test_trickle_hits_the_deadline(hostile, tmp_path: Path, monkeypatch) -> None:
    base, _ = hostile
    monkeypatch.setattr(fetch, "DEADLINE_S", 0.5)
    monkeypatch.setattr(fetch, "RATE_WINDOW_S", 60)
    url = f"{base}/trickle.hellopack"
    _fails(url, tmp_path / "c", rf"^download of {url} did not finish within 0\.5 s \(\d+ bytes received\); ")


def test_trickle_is_too_slow(hostile, tmp_path: Path, monkeypatch) -> None:
    base, _ = hostile
    monkeypatch.setattr(fetch, "RATE_WINDOW_S", 0.5)
    url = f"{base}/trickle.hellopack"
    _fails(url, tmp_path / "c", rf"^download of {url} is too slow \(\d+ B/s over \d+ s, at least 1,024 B/s needed\); ")


def test_silence_hits_the_read_timeout(hostile, tmp_path: Path, monkeypatch) -> None:
    base, _ = hostile
    monkeypatch.setattr(fetch, "READ_TIMEOUT_S", 0.5)
    url = f"{base}/stall.hellopack"
    _fails(url, tmp_path / "c", rf"^cannot download archive {url}: no data for 0\.5 s after 100 bytes \(timed out\)")


def test_short_chunked_body(hostile, tmp_path: Path) -> None:
    base, _ = hostile
    url = f"{base}/short-chunked.hellopack"
    _fails(url, tmp_path / "c", rf"^download of {url} stopped after \d+ bytes \(the server closed the connection "
                                r"mid-transfer\); try again$")


@pytest.mark.parametrize("where, target", [("file", "file:///etc/passwd"), ("ftp", "ftp://127.0.0.1/x.hellopack")])
def test_redirects_stay_on_http(hostile, tmp_path: Path, where: str, target: str) -> None:
    base, _ = hostile
    url = f"{base}/redirect-{where}.hellopack"
    _fails(url, tmp_path / "c", rf"^cannot download archive {url}: the server redirects to {target}, which is not "
                                r"http\(s\); check the URL$")


def test_reason_phrase_is_escaped(hostile, tmp_path: Path) -> None:
    base, _ = hostile
    url = f"{base}/reason.hellopack"
    msg = _fails(url, tmp_path / "c", rf"^cannot download archive {url}: HTTP 404 ")
    assert msg == f"cannot download archive {url}: HTTP 404 Not\\x1b]0;pwned\\x07 Found\\x1b[2J; check the URL"


def test_long_url_segment_is_cached_under_a_short_name(hostile, tmp_path: Path) -> None:
    base, _ = hostile
    url = f"{base}/{'a' * 300}.hellopack"
    p = resolve_archive(url, tmp_path / "c")
    assert p == cached_path(url, tmp_path / "c") and p.read_bytes() == VALID
    assert p.name == "a" * 110 + ".hellopack" and len(p.name) == fetch.MAX_NAME_CHARS
    assert _left(tmp_path / "c") == [p.parent.name, f"{p.parent.name}/{p.name}"]


def test_checksum_valid_but_broken_archive_is_not_cached(hostile, tmp_path: Path) -> None:
    base, _ = hostile
    url = f"{base}/broken.hellopack"
    for _ in range(2):  # refused again on the next run: nothing was cached
        _fails(url, tmp_path / "c", rf"^archive downloaded from {url} is not valid \(images.tar: image "
                                    r"c0000_00000\.png is 4x4, the manifest's images\.size is 8\); check the URL$")


def test_sigterm_removes_the_part_file(hostile, tmp_path: Path) -> None:
    """A real process killed with SIGTERM mid-download leaves no .part file and no cache entry."""
    base, _ = hostile
    cache = tmp_path / "c"
    code = ("import sys, hellopack.train.fetch as f; f.DEADLINE_S = 60; "
            f"f.resolve_archive({base + '/trickle.hellopack'!r}, {str(cache)!r})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part") for p in cache.rglob("*")) if cache.exists() else True:
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _left(cache) == []


def test_cli_train_url_error_is_one_clean_line(hostile, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hellopack_cli.app import app

    base, _ = hostile
    url = f"{base}/reason.hellopack"
    res = CliRunner().invoke(app, ["train", url, "--arch", "convnet", "--out", str(tmp_path / "run"),
                                   "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "-q"])
    assert res.exit_code == 2
    err = res.stderr_bytes
    assert err == (f"hellopack: error: cannot download archive {url}: HTTP 404 Not\\x1b]0;pwned\\x07 "
                   "Found\\x1b[2J; check the URL\n").encode()
    assert not any(b < 0x20 for b in err[:-1])
    assert not (tmp_path / "run").exists() and _left(tmp_path / "c") == []
