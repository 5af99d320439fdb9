"""ARCHIVE may be an http(s) URL: download it once into a cache, verify it, reuse it next time.

Cache layout: ``<cache>/archives/<sha256(url)>/<file name from the URL>`` so the
archive keeps its own name (the default output folder is named after it).
A file only appears under its final name after the download finished, the
optional ``#sha256=<hex>`` digest matched and the whole archive verified
(every member checksum, every image decoded).

The server is a stranger (spec/FORMAT.md, "Downloads"): the header and manifest are
checked as soon as their bytes arrive, the body may not outgrow the size they declare
(nor MAX_DOWNLOAD_BYTES), every read has a timeout and the whole download a deadline,
redirects stay on http(s), and the temporary file goes on every exit path.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterator

from hellopack.errors import HellopackError
from hellopack.progress import NULL, Reporter
from hellopack.textsafe import printable

CHUNK = 1 << 20
READ_TIMEOUT_S = 60.0  # one read that brings no byte for this long ends the download
DEADLINE_S = 6 * 3600.0  # the whole download (a server trickling a byte at a time cannot hold it forever)
RATE_WINDOW_S = 120.0  # a window in which fewer than MIN_RATE_BPS on average arrived ends the download
MIN_RATE_BPS = 1024  # (a trickle never trips the read timeout; below 1 KB/s a real archive takes days)
MAX_DOWNLOAD_BYTES = 32 * 1024**3  # absolute cap whatever the archive declares (spec/FORMAT.md, "Downloads")
OVERRUN_MARGIN = 64 * 1024  # bytes read past the declared size before the download is stopped
MAX_NAME_CHARS = 120  # cache file name from the URL: far below NAME_MAX (255 bytes) with the temp prefix
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_DIGEST = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_SCHEMES = ("http", "https")


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def default_cache_dir() -> Path:
    env = os.environ.get("HELLOPACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hellopack"


def cached_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``url`` lives in the cache (whether or not it has been downloaded)."""
    parsed = urllib.parse.urlsplit(url)
    # only a plain file name from the URL: never "..", separators or control characters
    name = _UNSAFE.sub("_", urllib.parse.unquote(parsed.path).rsplit("/", 1)[-1]).strip(".") or "archive.hellopack"
    if len(name) > MAX_NAME_CHARS:  # the folder (the URL's hash) already tells URLs apart
        _, dot, ext = name.rpartition(".")
        ext = ext if dot and 0 < len(ext) <= 16 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1].rstrip(".") + (f".{ext}" if ext else "")
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "archives" / key / name


def resolve_archive(spec: str, cache_dir: str | os.PathLike | None = None, reporter: Reporter = NULL) -> Path:
    """A local path is returned as is (it must exist); a URL is downloaded once and served from the cache."""
    if not is_url(spec):
        path = Path(spec).expanduser()
        if path.is_dir():
            raise HellopackError(f"archive '{spec}' is a folder; pass the .hellopack file itself")
        if not path.is_file():
            raise HellopackError(f"archive '{spec}' not found; pass an existing .hellopack file or an http(s) URL")
        return path
    target = cached_path(spec, cache_dir)
    if target.is_file():
        reporter.info(f"using cached archive {target}")
        return target
    expected = _expected_digest(spec)
    url = printable(spec, limit=None)
    made = not target.parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HellopackError(f"cannot create cache folder '{target.parent}': {e.strerror}; "
                             "set HELLOPACK_CACHE or --cache-dir") from None
    tmp: Path | None = None
    try:
        with _sigterm_unwinds():
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            except OSError as e:
                raise HellopackError(f"cannot write in cache folder '{target.parent}': {e.strerror or e}; "
                                     "set HELLOPACK_CACHE or --cache-dir") from None
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as f:
                digest = _download(spec, url, f, reporter)
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and digest != expected:
                raise HellopackError(f"archive downloaded from {url} has sha256 {digest}, expected {expected}; "
                                     "the server sent a different file (check the URL)")
            _verify(tmp, url)
            os.replace(tmp, target)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if made and not target.is_file():  # a failed download leaves no cache entry behind
            with contextlib.suppress(OSError):
                target.parent.rmdir()
    reporter.info(f"downloaded {url} to {target}")
    return target


def _expected_digest(url: str) -> str | None:
    fragment = urllib.parse.urlsplit(url).fragment
    if not fragment:
        return None
    m = _DIGEST.match(fragment)
    if m is None:
        raise HellopackError(f"URL fragment '#{printable(fragment)}' in {printable(url, limit=None)} is not "
                             "'#sha256=<64 hex digits>'; fix or remove it")
    return m.group(1).lower()


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit while downloading, so the ``finally`` clauses remove the temporary file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, _exit)
    except (ValueError, OSError):  # no signals here (an embedded interpreter): nothing to restore
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: a server must not send us to file://, ftp:// or data:."""

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, D102
        newurl = headers.get("location") or headers.get("uri")
        if newurl is not None:
            scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
            if scheme not in _SCHEMES:
                fp.close()
                raise HellopackError(f"cannot download archive {printable(req.full_url, limit=None)}: the server "
                                     f"redirects to {printable(newurl)}, which is not http(s); check the URL")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _EarlyCheck:
    """Checks the header, then the manifest, as their bytes arrive; then knows the archive's size."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.header = None
        self.declared: int | None = None  # header + manifest + every member's stored size

    def feed(self, chunk: bytes) -> None:
        from hellopack.archive.format import HEADER_SIZE, parse_header
        from hellopack.archive.manifest import parse_manifest, parse_members, validate_manifest

        if self.declared is not None:
            return
        self.buf += chunk  # bounded: at most the header plus MAX_MANIFEST_BYTES (parse_header checks)
        if self.header is None and len(self.buf) >= HEADER_SIZE:
            self.header = parse_header(bytes(self.buf[:HEADER_SIZE]), sys.maxsize)
        if self.header is None or len(self.buf) < HEADER_SIZE + self.header.manifest_length:
            return
        raw = bytes(self.buf[HEADER_SIZE:HEADER_SIZE + self.header.manifest_length])
        manifest = parse_manifest(raw, self.header.manifest_sha256)
        validate_manifest(manifest, (self.header.major, self.header.minor))
        members = parse_members(manifest, None)
        self.declared = HEADER_SIZE + self.header.manifest_length + sum(m.stored_size for m in members)
        self.buf = bytearray()


def _download(spec: str, url: str, out: BinaryIO, reporter: Reporter) -> str:
    """Stream ``spec`` (without its fragment) into ``out``, checked as it comes; return the sha256 hex
    digest. ``url`` is ``spec`` made printable (for messages)."""
    from hellopack.archive import ArchiveError

    fetch_url = urllib.parse.urldefrag(spec).url
    request = urllib.request.Request(fetch_url, headers={"User-Agent": "hellopack"})
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    h = hashlib.sha256()
    check = _EarlyCheck()
    start = time.monotonic()
    got = 0
    window = [start, 0]  # start time and bytes of the current rate window
    try:
        with opener.open(request, timeout=READ_TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_DOWNLOAD_BYTES:
                raise HellopackError(_too_big(url, f"the server announces {total:,} bytes"))
            with reporter.stage("download", total=total, unit="B") as stage:
                # read1: returns what has arrived, so the deadline is checked even while a server trickles
                while chunk := resp.read1(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    stage.advance(len(chunk))
                    check.feed(chunk)
                    _check_budget(url, got, check.declared, start)
                    _check_rate(url, window, len(chunk))
            if total is not None and got != total:
                raise HellopackError(f"download of {url} stopped after {got} of {total} bytes; try again")
    except ArchiveError as e:
        raise HellopackError(_invalid(url, e)) from None
    except urllib.error.HTTPError as e:
        raise HellopackError(f"cannot download archive {url}: HTTP {e.code} {printable(e.reason)}; "
                             "check the URL") from None
    except urllib.error.URLError as e:
        raise HellopackError(f"cannot download archive {url}: {printable(_reason(e.reason))}; check the URL "
                             "and your network, or download the file yourself and pass its path") from None
    except (socket.timeout, TimeoutError):
        raise HellopackError(f"cannot download archive {url}: no data for {READ_TIMEOUT_S:g} s after {got:,} "
                             "bytes (timed out); check your network and try again") from None
    except http.client.IncompleteRead:
        raise HellopackError(f"download of {url} stopped after {got} bytes (the server closed the connection "
                             "mid-transfer); try again") from None
    except (http.client.HTTPException, ValueError) as e:  # a broken reply: bad status line, chunk size, header
        raise HellopackError(f"cannot download archive {url}: the server sent a broken HTTP reply "
                             f"({type(e).__name__}); check the URL") from None
    except OSError as e:  # connection reset, disk full while writing the temporary file, ...
        raise HellopackError(f"cannot download archive {url}: {printable(_reason(e))}; check your network, "
                             "free disk space, and try again") from None
    return h.hexdigest()


def _check_budget(url: str, got: int, declared: int | None, start: float) -> None:
    """Stop a body that outgrows what the archive declares, the absolute cap, or the deadline."""
    if declared is not None and declared > MAX_DOWNLOAD_BYTES:
        raise HellopackError(_too_big(url, f"its header and manifest declare {declared:,} bytes"))
    if declared is not None and got > declared + OVERRUN_MARGIN:
        raise HellopackError(f"download of {url} sent more than the {declared:,} bytes its header and manifest "
                             "declare; stopped (the server sends another or an endless file; check the URL)")
    if got > MAX_DOWNLOAD_BYTES:
        raise HellopackError(_too_big(url, f"it sent more than {MAX_DOWNLOAD_BYTES:,} bytes"))
    elapsed = time.monotonic() - start
    if elapsed > DEADLINE_S:
        raise HellopackError(f"download of {url} did not finish within {DEADLINE_S:g} s ({got:,} bytes "
                             "received); check your network, or download the file yourself and pass its path")


def _check_rate(url: str, window: list, n: int) -> None:
    """Stop a server that keeps the connection alive with a trickle: each RATE_WINDOW_S must bring
    MIN_RATE_BPS on average."""
    window[1] += n
    elapsed = time.monotonic() - window[0]
    if elapsed < RATE_WINDOW_S:
        return
    if window[1] < MIN_RATE_BPS * elapsed:
        raise HellopackError(f"download of {url} is too slow ({window[1] / elapsed:,.0f} B/s over {elapsed:,.0f} s, "
                             f"at least {MIN_RATE_BPS:,} B/s needed); check your network, or download the file "
                             "yourself and pass its path")
    window[0], window[1] = time.monotonic(), 0


def _too_big(url: str, why: str) -> str:
    return (f"archive at {url} is too large to download ({why}, the limit is {MAX_DOWNLOAD_BYTES:,}); "
            "download the file yourself and pass its path")


def _invalid(url: str, e: Exception) -> str:
    return f"archive downloaded from {url} is not valid ({printable(e, limit=None)}); check the URL"


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _verify(path: Path, url: str) -> None:
    """Open the downloaded file as an archive and verify all of it, images decoded, before caching it:
    an archive whose checksums match but whose content is broken must not be served on every later run."""
    from hellopack.archive import ArchiveError, open_archive  # deferred: keeps `import hellopack.train` light

    try:
        open_archive(path).verify(decode_images=True)
    except (ArchiveError, HellopackError) as e:
        raise HellopackError(_invalid(url, e)) from None
