"""ARCHIVE may be an http(s) URL: download it once into a cache, verify it, reuse it next time.

Cache layout: ``<cache>/archives/<sha256(url)>/<file name from the URL>`` so the
archive keeps its own name (the default output folder is named after it).
A file only appears under its final name after the download finished, the
optional ``#sha256=<hex>`` digest matched and every member checksum verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hellopack.errors import HellopackError
from hellopack.progress import NULL, Reporter

CHUNK = 1 << 20
TIMEOUT_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_DIGEST = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HellopackError(f"cannot create cache folder '{target.parent}': {e.strerror}; set HELLOPACK_CACHE or --cache-dir") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = _download(spec, f, reporter)
            f.flush()
            os.fsync(f.fileno())
        if expected is not None and digest != expected:
            raise HellopackError(f"archive downloaded from {spec} has sha256 {digest}, expected {expected}; "
                                 "the server sent a different file (check the URL)")
        _verify(tmp, spec)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    reporter.info(f"downloaded {spec} to {target}")
    return target


def _expected_digest(url: str) -> str | None:
    fragment = urllib.parse.urlsplit(url).fragment
    if not fragment:
        return None
    m = _DIGEST.match(fragment)
    if m is None:
        raise HellopackError(f"URL fragment '#{fragment}' in {url} is not '#sha256=<64 hex digits>'; fix or remove it")
    return m.group(1).lower()


def _download(url: str, out, reporter: Reporter) -> str:
    """Stream ``url`` (without its fragment) into ``out``; return the sha256 hex digest."""
    fetch_url = urllib.parse.urldefrag(url).url
    request = urllib.request.Request(fetch_url, headers={"User-Agent": "hellopack"})
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            got = 0
            with reporter.stage("download", total=total, unit="B") as stage:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    stage.advance(len(chunk))
            if total is not None and got != total:
                raise HellopackError(f"download of {url} stopped after {got} of {total} bytes; try again")
    except urllib.error.HTTPError as e:
        raise HellopackError(f"cannot download archive {url}: HTTP {e.code} {e.reason}; check the URL") from None
    except urllib.error.URLError as e:
        raise HellopackError(f"cannot download archive {url}: {e.reason}; check the URL and your network, "
                             "or download the file yourself and pass its path") from None
    except (socket.timeout, TimeoutError, ConnectionError, OSError) as e:
        raise HellopackError(f"cannot download archive {url}: {e}; check your network and try again") from None
    return h.hexdigest()


def _verify(path: Path, url: str) -> None:
    """Open the downloaded file as an archive and check every member checksum (images not decoded)."""
    from hellopack.archive import ArchiveError, open_archive  # deferred: keeps `import hellopack.train` light

    try:
        open_archive(path).verify(decode_images=False)
    except (ArchiveError, HellopackError) as e:
        raise HellopackError(f"archive downloaded from {url} is not valid ({e}); check the URL") from None
