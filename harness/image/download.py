"""The ``download`` image source: fetch an official cloud image and verify it against SHA512SUMS.

For real hosts that can reach cloud.debian.org (the build machines cannot: docs/platform.md). Only
a file whose sha512 matches its line in SHA512SUMS ever appears under its own name.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from http.client import HTTPResponse
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from harness import log
from harness.errors import BadInput, HarnessError

# Per socket operation, not for the whole transfer: a slow but moving download is fine.
SOCKET_TIMEOUT = 60.0
CHUNK = 1 << 20
PROGRESS_STEP_PERCENT = 10
# Without a Content-Length, progress is logged every this many bytes.
PROGRESS_STEP_BYTES = 100 << 20


def download_verified(url: str, sha512sums_url: str, dest_dir: Path) -> Path:
    """Return ``dest_dir/<file name of url>``, downloaded and verified against SHA512SUMS.

    A file already there is reused if its sha512 still matches. A mismatch is a
    :class:`HarnessError` and leaves nothing behind.
    """
    name = _file_name(url)
    expected = expected_sha512(_fetch_text(sha512sums_url), name, sha512sums_url)
    dest = dest_dir / name
    if dest.is_file():
        if _sha512_of(dest) == expected:
            log.info(f"{dest} is present and matches SHA512SUMS; not downloading")
            return dest
        log.warn(f"{dest} does not match SHA512SUMS; downloading it again")
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = dest_dir / f".{name}.part-{os.getpid()}"
    try:
        actual = _fetch_to(url, partial)
        if actual != expected:
            raise HarnessError(
                f"{name} from {url} does not match SHA512SUMS "
                f"(expected {expected[:16]}…, got {actual[:16]}…); refused",
                hint="a corrupted or tampered download, or SHA512SUMS of another release",
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    log.info(f"{dest} downloaded and verified (sha512 {expected[:16]}…)")
    return dest


def expected_sha512(sums: str, name: str, source: str = "SHA512SUMS") -> str:
    """The hash of ``name`` in a ``sha512sum``-format listing."""
    for line in sums.splitlines():
        digest, _, listed = line.strip().partition(" ")
        # `sha512sum` writes "<hash>  <name>" (text) or "<hash> *<name>" (binary mode).
        if listed.strip().lstrip("*") == name:
            digest = digest.lower()
            if len(digest) != 128 or any(c not in "0123456789abcdef" for c in digest):
                raise HarnessError(f"{source} has a malformed sha512 for {name}: {digest!r}")
            return digest
    raise HarnessError(
        f"{source} has no line for {name}; refusing an image that cannot be verified",
        hint="check that the image URL and SHA512SUMS belong to the same release",
    )


def _file_name(url: str) -> str:
    parsed = urlparse(url)
    name = PurePosixPath(parsed.path).name
    if parsed.scheme not in {"http", "https"} or not name:
        raise BadInput(f"not an http(s) URL of a file: {url!r}")
    return name


def _open(url: str) -> HTTPResponse:
    _file_name(url)  # http(s) only: never file:// or custom schemes
    try:
        response: HTTPResponse = urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT)  # noqa: S310 - scheme checked above
        return response
    except (urllib.error.URLError, OSError) as exc:
        raise HarnessError(
            f"could not fetch {url}: {exc}",
            hint="this host may not reach the image server; use the `build` image source",
        ) from exc


def _fetch_text(url: str) -> str:
    with _open(url) as response:
        data: bytes = response.read()
    return data.decode("utf-8", errors="replace")


def _fetch_to(url: str, target: Path) -> str:
    """Stream ``url`` into ``target``; return its sha512."""
    digest = hashlib.sha512()
    log.info(f"downloading {url}")
    with _open(url) as response, target.open("wb") as sink:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        reported = 0
        while True:
            try:
                chunk: bytes = response.read(CHUNK)
            except OSError as exc:
                raise HarnessError(f"download of {url} broke off after {done} bytes: {exc}") from exc
            if not chunk:
                break
            sink.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if total:
                percent = done * 100 // total
                if percent >= reported + PROGRESS_STEP_PERCENT:
                    reported = percent - percent % PROGRESS_STEP_PERCENT
                    log.info(f"  {reported}% of {total / 2**20:.0f} MiB")
            elif done >= reported + PROGRESS_STEP_BYTES:
                reported = done
                log.info(f"  {done / 2**20:.0f} MiB")
    if total and done != total:
        raise HarnessError(f"download of {url} ended after {done} of {total} bytes")
    return digest.hexdigest()


def _sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
