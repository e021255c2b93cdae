"""download_verified against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.image.download import download_verified, expected_sha512

IMAGE = "debian-13-genericcloud-amd64.qcow2"
CONTENT = b"not really a qcow2\n" * 4096


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL.

    The download honours the environment's proxy, as a real host may need it for the image;
    this stand-in server is on loopback, so the test's own requests must not be proxied.
    """
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _publish(root: Path, sums: str) -> None:
    (root / IMAGE).write_bytes(CONTENT)
    (root / "SHA512SUMS").write_text(sums)


def _good_sums() -> str:
    return f"{'0' * 128}  debian-13-nocloud-amd64.qcow2\n{hashlib.sha512(CONTENT).hexdigest()}  {IMAGE}\n"


def test_verified_download(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    _publish(root, _good_sums())
    dest = tmp_path / "images"
    got = download_verified(f"{base}/{IMAGE}", f"{base}/SHA512SUMS", dest)
    assert got == dest / IMAGE
    assert got.read_bytes() == CONTENT
    assert sorted(p.name for p in dest.iterdir()) == [IMAGE]


def test_verified_file_is_not_downloaded_again(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    _publish(root, _good_sums())
    dest = tmp_path / "images"
    download_verified(f"{base}/{IMAGE}", f"{base}/SHA512SUMS", dest)
    (root / IMAGE).unlink()  # a second download would now fail
    assert download_verified(f"{base}/{IMAGE}", f"{base}/SHA512SUMS", dest).read_bytes() == CONTENT


def test_mismatch_is_refused_and_leaves_nothing(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    _publish(root, f"{hashlib.sha512(b'other').hexdigest()}  {IMAGE}\n")
    dest = tmp_path / "images"
    with pytest.raises(HarnessError, match="does not match SHA512SUMS"):
        download_verified(f"{base}/{IMAGE}", f"{base}/SHA512SUMS", dest)
    assert list(dest.iterdir()) == []


def test_missing_file_name_in_sums_is_refused(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    _publish(root, f"{hashlib.sha512(CONTENT).hexdigest()}  some-other-image.qcow2\n")
    dest = tmp_path / "images"
    with pytest.raises(HarnessError, match="no line for"):
        download_verified(f"{base}/{IMAGE}", f"{base}/SHA512SUMS", dest)
    assert not (dest / IMAGE).exists()


def test_binary_mode_sums_line() -> None:
    digest = hashlib.sha512(CONTENT).hexdigest()
    assert expected_sha512(f"{digest.upper()} *{IMAGE}\n", IMAGE) == digest
