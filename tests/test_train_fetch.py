"""ARCHIVE as an http(s) URL: downloaded once from a local http.server, verified, then served from the cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from hellopack.errors import HellopackError
from hellopack.progress import RecordingReporter
from hellopack.train.fetch import cached_path, resolve_archive
from test_train_kit import demo_archive, small_archive  # noqa: F401  (session fixtures)


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()



def test_url_downloads_verifies_and_is_reused_from_cache(server, demo_archive, tmp_path: Path) -> None:  # noqa: F811
    base, root, requests = server
    shutil.copy(demo_archive, root / "demo.hellopack")
    digest = hashlib.sha256(demo_archive.read_bytes()).hexdigest()
    url = f"{base}/demo.hellopack#sha256={digest}"
    rec = RecordingReporter()
    p = resolve_archive(url, tmp_path / "cache", rec)
    assert p == cached_path(url, tmp_path / "cache") and p.name == "demo.hellopack"
    assert p.read_bytes() == demo_archive.read_bytes()
    assert rec.stages == [("download", demo_archive.stat().st_size, "B")]
    assert requests == ["/demo.hellopack"]  # the fragment is not sent
    assert resolve_archive(url, tmp_path / "cache", rec) == p
    assert requests == ["/demo.hellopack"]  # second call: no request at all
    assert [f.name for f in p.parent.iterdir()] == ["demo.hellopack"]  # no temp files left


def test_cache_dir_comes_from_the_environment(server, demo_archive, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    base, root, _ = server
    shutil.copy(demo_archive, root / "a.hellopack")
    monkeypatch.setenv("HELLOPACK_CACHE", str(tmp_path / "envcache"))
    p = resolve_archive(f"{base}/a.hellopack")
    assert p.is_relative_to(tmp_path / "envcache")


def test_wrong_digest_is_refused_and_nothing_is_cached(server, demo_archive, tmp_path: Path) -> None:  # noqa: F811
    base, root, _ = server
    shutil.copy(demo_archive, root / "demo.hellopack")
    url = f"{base}/demo.hellopack#sha256={'0' * 64}"
    with pytest.raises(HellopackError, match=r"^archive downloaded from .* has sha256 [0-9a-f]{64}, expected 0{64}; "):
        resolve_archive(url, tmp_path / "cache")
    assert not any(f.is_file() for f in (tmp_path / "cache").rglob("*"))


def test_damaged_download_is_refused(server, demo_archive, tmp_path: Path) -> None:  # noqa: F811
    base, root, _ = server
    data = bytearray(demo_archive.read_bytes())
    data[-10] ^= 0xFF  # flip a byte inside images.tar's compressed stream
    (root / "bad.hellopack").write_bytes(bytes(data))
    with pytest.raises(HellopackError, match=r"^archive downloaded from http://127\.0\.0\.1:\d+/bad\.hellopack is not valid \("):
        resolve_archive(f"{base}/bad.hellopack", tmp_path / "cache")
    assert not any(f.is_file() for f in (tmp_path / "cache").rglob("*"))


def test_network_errors_name_the_url(server, tmp_path: Path) -> None:
    base, _, _ = server
    with pytest.raises(HellopackError, match=r"^cannot download archive http://127\.0\.0\.1:\d+/missing\.hellopack: HTTP 404 "):
        resolve_archive(f"{base}/missing.hellopack", tmp_path / "cache")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.hellopack"
    with pytest.raises(HellopackError, match=rf"^cannot download archive {url}: .*refused"):
        resolve_archive(url, tmp_path / "cache")


def test_cache_file_name_is_a_plain_name_from_the_url() -> None:
    assert cached_path("http://h/a/in1k-ipc10.hellopack#sha256=00", "/c").name == "in1k-ipc10.hellopack"
    assert cached_path("http://h/a%2F..%2F..%2Fb.hellopack", "/c").name == "b.hellopack"
    assert cached_path("http://h/..", "/c").name == "archive.hellopack"
    assert cached_path("http://h/x", "/c").parent.parent == Path("/c/archives")


def test_local_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(HellopackError, match=r"^archive '.*nope\.hellopack' not found; pass an existing"):
        resolve_archive(str(tmp_path / "nope.hellopack"))


def test_local_path_that_is_a_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hellopack_cli.app import app

    with pytest.raises(HellopackError) as e:
        resolve_archive(str(tmp_path))
    assert str(e.value) == f"archive '{tmp_path}' is a folder; pass the .hellopack file itself"
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--arch", "convnet", "--out", str(tmp_path / "run"),
                                   "--device", "cpu", "-q"])
    assert res.exit_code == 2
    assert res.stderr == f"hellopack: error: archive '{tmp_path}' is a folder; pass the .hellopack file itself\n"
    assert list(tmp_path.iterdir()) == []  # no run folder inside it


def test_training_from_a_url(server, small_archive, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    from hellopack.train import TrainConfig, train

    base, root, requests = server
    shutil.copy(small_archive, root / "demo.hellopack")
    monkeypatch.chdir(tmp_path)
    url = f"{base}/demo.hellopack"
    res = train(TrainConfig(archive=url, arch="convnet", device="cpu", epochs=1, cache_dir=str(tmp_path / "c")))
    assert res["timing"]["steps"] == 2 and res["archive"]["path"] == str(cached_path(url, tmp_path / "c"))
    assert (tmp_path / "demo-convnet" / "result.json").is_file()  # named after the archive, not the URL's hash
    assert requests == ["/demo.hellopack"]
