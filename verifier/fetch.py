"""Fetching remote inputs (``http://``, ``https://``, ``s3://``) through fsspec, with bounded retries.

The verifier reads an attestation, key, weights file or store from a URL exactly as it reads a local
file, once the bytes are here: this module only moves bytes and counts them. Nothing it fetches is
trusted; every caller checks what it got (against the signature, the subject digest or a leaf)
before using it, and only then may it be kept in the cache (``store_reader.VerifiedCache``).

Failure semantics (docs/AUDITOR.md): a missing file (HTTP 404, S3 NoSuchKey) fails at once; a
timeout (connect or read: a stalled server), a body shorter than announced (truncated), a server
error (5xx) or a dropped connection is retried up to ``FetchSettings.attempts`` times with
exponential backoff, then fails. Every failure is a ``FetchError`` (exit status 2) naming the URL:
nothing was decided. A body that arrives whole but holds other bytes is not detected here; the
caller's check rejects it where a byte should match a signed digest.

S3: the endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set (an
S3-compatible store), credentials from the usual AWS environment; without credentials the bucket is
read anonymously (public buckets). Requires the ``remote`` extra (fsspec, aiohttp, s3fs).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwitness.commit.atomic import move_into_place, temporary_path
from trainwitness.errors import FetchError, MalformedInputError, MissingInputError

__all__ = ["REMOTE_SCHEMES", "is_url", "FetchSettings", "Fetcher"]

REMOTE_SCHEMES = ("http://", "https://", "s3://")
_PIECE = 1 << 20

# (url, bytes so far, bytes expected or None) -> None
FetchProgress = Callable[[str, int, int | None], None]


def is_url(text: str | os.PathLike[str]) -> bool:
    """True for the remote schemes this module reads; anything else is a local path."""
    return isinstance(text, str) and text.lower().startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class FetchSettings:
    timeout: float = 60.0  # seconds without progress (connect, or between two reads) before a try is given up
    attempts: int = 3  # tries per file for transient failures (timeouts, truncation, 5xx, dropped connections)
    backoff: float = 0.5  # seconds before the second try, doubling after each


class _Counter:
    """An fsspec callback: counts the bytes of one download, reports progress, stops it past the size limit."""

    def __init__(self, fetcher: Fetcher, url: str, announced: int | None, max_bytes: int, what: str) -> None:
        self.fetcher, self.url, self.announced, self.max_bytes, self.what = fetcher, url, announced, max_bytes, what
        self.value = 0

    def set_size(self, size: int | None) -> None:
        pass

    def absolute_update(self, value: int) -> None:
        self.relative_update(value - self.value)

    def relative_update(self, inc: int = 1) -> None:
        self.value += inc
        self.fetcher.fetched[self.url] = self.fetcher.fetched.get(self.url, 0) + inc
        if self.value > self.max_bytes:
            raise MalformedInputError(f"{self.what} {self.url} holds more than the limit of {self.max_bytes} bytes")
        if self.fetcher.progress is not None:
            self.fetcher.progress(self.url, self.value, self.announced)

    def branched(self, *args: object, **kwargs: object) -> None:
        return None

    def branch_coro(self, fn: object) -> object:
        return fn

    def close(self) -> None:
        pass

    def __enter__(self) -> _Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, *args: object, **kwargs: object) -> None:
        pass


class _NotFound(Exception):
    pass


class _Permanent(Exception):
    pass


@dataclass
class Fetcher:
    """Reads URLs with fsspec; counts every byte fetched, per URL (``fetched``) and in total."""

    settings: FetchSettings = field(default_factory=FetchSettings)
    progress: FetchProgress | None = None
    fetched: dict[str, int] = field(default_factory=dict)  # url -> bytes received (all tries)
    requests: int = 0
    _filesystems: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_fetched(self) -> int:
        return sum(self.fetched.values())

    # -- filesystems ------------------------------------------------------------------------------------

    def _fs(self, url: str) -> tuple[Any, str]:
        try:
            import fsspec
        except ImportError as e:
            raise MissingInputError(f"{url}: reading URLs needs the 'remote' extra: pip install 'trainwitness[remote]'") from e
        scheme = url.split("://", 1)[0].lower()
        if scheme not in self._filesystems:
            self._filesystems[scheme] = self._make_fs(fsspec, scheme, url)
        path = url if scheme in ("http", "https") else url.split("://", 1)[1]
        return self._filesystems[scheme], path

    def _make_fs(self, fsspec: Any, scheme: str, url: str) -> Any:
        t = self.settings.timeout
        try:
            if scheme in ("http", "https"):
                import aiohttp

                timeout = aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)
                # block_size 0: every read streams one GET (no range requests needed by a static server).
                return fsspec.filesystem("http", client_kwargs={"timeout": timeout}, skip_instance_cache=True, block_size=0)
            options: dict[str, Any] = {
                "skip_instance_cache": True,
                # One try per call in botocore: the retries are ours, bounded and counted.
                "config_kwargs": {"connect_timeout": t, "read_timeout": t, "retries": {"max_attempts": 1, "mode": "standard"}},
            }
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
            if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
                    or Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", Path.home() / ".aws" / "credentials")).is_file()):
                options["anon"] = True  # a public bucket: unsigned requests
            return fsspec.filesystem("s3", **options)
        except ImportError as e:
            raise MissingInputError(f"{url}: reading {scheme}:// URLs needs the 'remote' extra: pip install 'trainwitness[remote]'") from e

    # -- one try, classified ------------------------------------------------------------------------------

    @staticmethod
    def _classify(e: BaseException) -> BaseException:
        """_NotFound / _Permanent for failures a retry cannot fix; the error itself when a retry may."""
        if isinstance(e, FileNotFoundError):
            cause = e.__cause__  # fsspec's HTTP info() reports any failed HEAD/GET as not found
            if cause is not None and getattr(cause, "status", 404) != 404:
                return Fetcher._classify(cause)
            if cause is not None and not hasattr(cause, "status") and not isinstance(cause, FileNotFoundError):
                return cause  # a timeout or dropped connection during info(): transient
            return _NotFound(str(e))
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        if status is None:  # botocore ClientError
            status = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(getattr(e, "response", None), dict) else None
        if isinstance(status, int):
            if status == 404:
                return _NotFound(str(e))
            if 400 <= status < 500 and status not in (408, 429):
                return _Permanent(f"HTTP {status}")
        if isinstance(e, PermissionError):
            return _Permanent(str(e) or "permission denied")
        return e

    def _describe(self, e: BaseException) -> str:
        name = type(e).__name__
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        if "Timeout" in name or isinstance(e, TimeoutError):
            return f"no progress for {self.settings.timeout:g} s (timed out)"
        status = getattr(e, "status", None)
        if isinstance(status, int):
            return f"HTTP {status}" + (f" ({text})" if text else "")
        if "Payload" in name or "IncompleteRead" in name or "truncated" in text.lower():
            return f"the body ended early (truncated): {text or name}"
        return f"{name}: {text}" if text else name

    def _retrying(self, url: str, what: str, attempt: Callable[[], Any]) -> Any:
        last: BaseException | None = None
        for n in range(self.settings.attempts):
            if n:
                time.sleep(self.settings.backoff * 2 ** (n - 1))
            self.requests += 1
            try:
                return attempt()
            except (FetchError, MalformedInputError, MissingInputError):
                raise
            except Exception as e:  # noqa: BLE001 - fsspec backends raise many types; each is classified
                kind = self._classify(e)
                if isinstance(kind, _NotFound):
                    missing = FetchError(f"{what} {url} does not exist on the server (not found)")
                    missing.not_found = True  # type: ignore[attr-defined]
                    raise missing from e
                if isinstance(kind, _Permanent):
                    raise FetchError(f"{what} {url} cannot be fetched: {kind}") from e
                last = kind
        if last is None:
            raise ValueError("FetchSettings.attempts must be at least 1")
        raise FetchError(
            f"{what} {url} could not be fetched after {self.settings.attempts} tries: {self._describe(last)}"
        ) from last

    # -- public ------------------------------------------------------------------------------------------

    def size(self, url: str, what: str) -> int | None:
        """The size the server announces, or None when it does not say."""
        fs, path = self._fs(url)
        info = self._retrying(url, what, lambda: fs.info(path))
        size = info.get("size")
        return int(size) if isinstance(size, int) else None

    def exists(self, url: str, what: str) -> bool:
        try:
            self.size(url, what)
        except FetchError as e:
            if getattr(e, "not_found", False):
                return False
            raise
        return True

    def download(self, url: str, dest: Path, max_bytes: int, what: str) -> int:
        """Stream ``url`` into the new file ``dest`` (at most ``max_bytes``); returns its size.

        A try that fails part-way starts again from byte 0 (the partial file is truncated), so what
        ``dest`` holds in the end is one whole response. The body must be as long as the size the
        server announced, when it announced one.
        """
        fs, path = self._fs(url)
        announced = self.size(url, what)
        if announced is not None and announced > max_bytes:
            raise MalformedInputError(f"{what} {url} is {announced} bytes, over the limit of {max_bytes}")

        def attempt() -> int:
            # fsspec writes the body under a temporary name; it is moved into place only whole.
            tmp = temporary_path(dest, "download")
            counter = _Counter(self, url, announced, max_bytes, what)
            try:
                fs.get_file(path, str(tmp), callback=counter)
                got = tmp.stat().st_size
                if announced is not None and got != announced:
                    raise OSError(f"truncated: {got} of the {announced} bytes announced")
                move_into_place(tmp, dest)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            return got

        return int(self._retrying(url, what, attempt))

    def read(self, url: str, max_bytes: int, what: str) -> bytes:
        """The whole body of ``url`` in memory (small inputs: attestation, key, index files)."""
        fs, path = self._fs(url)

        def attempt() -> bytes:
            pieces, got = [], 0
            with fs.open(path, "rb") as remote:
                while piece := remote.read(min(_PIECE, max_bytes + 1 - got)):
                    got += len(piece)
                    self.fetched[url] = self.fetched.get(url, 0) + len(piece)
                    if got > max_bytes:
                        raise MalformedInputError(f"{what} {url} holds more than the limit of {max_bytes} bytes")
                    pieces.append(piece)
                    if self.progress is not None:
                        self.progress(url, got, None)
                expected = getattr(remote, "size", None)
                if isinstance(expected, int) and got != expected:
                    raise OSError(f"truncated: {got} of the {expected} bytes announced")
            return b"".join(pieces)

        return bytes(self._retrying(url, what, attempt))

    def read_range(self, url: str, start: int, end: int, what: str) -> bytes:
        """Bytes ``[start, end)`` of ``url`` with one range request (HTTP ``Range``, S3 ranged GET)."""
        fs, path = self._fs(url)

        def attempt() -> bytes:
            data = bytes(fs.cat_file(path, start=start, end=end))
            self.fetched[url] = self.fetched.get(url, 0) + len(data)
            if len(data) != end - start:
                raise OSError(f"truncated: {len(data)} of the {end - start} bytes of the range")
            return data

        return bytes(self._retrying(url, what, attempt))
