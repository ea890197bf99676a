"""Opening a file from an untrusted place: the one safe open every reader of untrusted bytes uses.

A store, a data directory, a key file or an attestation may hold anything its author put there: a
symlink pointing out of it, a FIFO that blocks the reader forever, a directory, a file of 1 TB. The
open here is ``open(2)`` with

- ``O_NOFOLLOW``: a symlink in the last component is refused (``ELOOP``), never followed;
- ``O_NONBLOCK``: opening a FIFO returns at once instead of waiting for a writer (regular files
  ignore the flag);
- ``O_CLOEXEC``: the descriptor does not leak into a child process;

then ``fstat`` on the open descriptor (never a ``stat`` of the name before opening, which races with
a rename) must show a regular file of at most ``max_bytes``, and a whole-file read returns exactly
the size ``fstat`` gave (a file that changes while it is read is refused).

``open_beneath`` is the variant for a path inside a directory tree (the store): each directory
component is opened relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY``, so a
symlinked ``checkpoints/`` cannot lead the reader outside the tree; the last component is opened by
the same primitive. Every error is one line naming the file: ``MissingInputError`` when it does not
exist or cannot be read, ``MalformedInputError`` when it is a symlink, not a regular file, or too big.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from trainwitness.errors import MalformedInputError, MissingInputError

__all__ = ["open_untrusted", "read_untrusted", "open_beneath", "read_beneath", "open_regular"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _open_error(name: str, e: OSError, beneath: bool, nofollow: bool = True) -> MissingInputError | MalformedInputError:
    if isinstance(e, FileNotFoundError):
        return MissingInputError(f"{name} does not exist")
    if nofollow and (e.errno == errno.ELOOP or (beneath and e.errno == errno.ENOTDIR)):
        why = "it or a directory on its path is a symlink" if beneath else "it is a symlink"
        return MalformedInputError(f"{name} cannot be opened safely ({why})")
    return MissingInputError(f"{name} cannot be read ({e.strerror})")


def open_regular(
    path: str | Path, name: str, max_bytes: int | None, *, dir_fd: int | None = None, follow_symlinks: bool = False
) -> tuple[BinaryIO, int]:
    """Open ``path`` (relative to ``dir_fd`` when given) for reading: a regular file, not a symlink.

    Returns the open binary file (the caller closes it) and its size in bytes from ``fstat``.
    ``max_bytes``: the largest size accepted, or None for a file that is streamed, never held whole.
    ``name`` names the file in every error (``"manifest /s/manifest.jsonl"``). Raises
    ``MissingInputError`` (does not exist, cannot be read), ``MalformedInputError`` (a symlink, not
    a regular file, over ``max_bytes``).

    ``follow_symlinks=True`` only for a path the user named themselves (``--weights``, a key file):
    the link is their choice (a Hugging Face cache links every file to its blob); the file it leads
    to is still held to everything else here. A file found in an untrusted directory never follows one.
    """
    nofollow = 0 if follow_symlinks else _NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | _NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        raise _open_error(name, e, beneath=False, nofollow=not follow_symlinks) from e
    try:
        info = os.fstat(fd)  # the file opened, not whatever the name points to now
        if not stat.S_ISREG(info.st_mode):
            raise MalformedInputError(f"{name} is not a regular file ({_kind(info.st_mode)})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise MalformedInputError(f"{name} is {info.st_size} bytes, over the limit of {max_bytes}")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_whole(f: BinaryIO, size: int, name: str) -> bytes:
    data = f.read(size + 1)  # bounded: one byte more than fstat gave shows a file that grew
    if len(data) != size:
        raise MalformedInputError(f"{name} changed while it was read")
    return data


@contextmanager
def open_untrusted(
    path: str | Path, name: str, max_bytes: int | None, *, follow_symlinks: bool = False
) -> Iterator[tuple[BinaryIO, int]]:
    """``open_regular`` as a ``with`` block: yields the open file and its size, closes it after."""
    f, size = open_regular(path, name, max_bytes, follow_symlinks=follow_symlinks)
    with f:
        yield f, size


def read_untrusted(path: str | Path, name: str, max_bytes: int, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), opened by ``open_regular``."""
    with open_untrusted(path, name, max_bytes, follow_symlinks=follow_symlinks) as (f, size):
        return _read_whole(f, size, name)


def _open_directory_beneath(root: Path, directories: list[str], name: str) -> int:
    """A descriptor of ``root/dir1/dir2/...``, each component below ``root`` opened without following a symlink."""
    try:
        dir_fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError as e:
        raise _open_error(name, e, beneath=True) from e
    try:
        for part in directories:
            inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = inner
    except OSError as e:
        os.close(dir_fd)
        raise _open_error(name, e, beneath=True) from e
    return dir_fd


@contextmanager
def open_beneath(root: Path, relpath: str, name: str, max_bytes: int | None) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``root/relpath`` (``/``-separated, no ``..``) following no symlink at any component below ``root``.

    ``O_NOFOLLOW`` alone guards only the last component: a symlinked directory on the way would be
    followed out of ``root``, so each directory is opened relative to its parent's descriptor, and
    the file itself by ``open_regular``. ``root`` itself may be a symlink (the user named it).
    Yields the open file and its size; errors as ``open_regular``'s.
    """
    *directories, last = relpath.split("/")
    if ".." in directories or last in ("", ".", ".."):
        raise ValueError(f"{relpath!r} is not a path beneath a directory")
    dir_fd = _open_directory_beneath(root, directories, name)
    try:
        f, size = open_regular(last, name, max_bytes, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)  # the open file does not need its directory's descriptor
    with f:
        yield f, size


def read_beneath(root: Path, relpath: str, name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``root/relpath`` (at most ``max_bytes``), opened by ``open_beneath``."""
    with open_beneath(root, relpath, name, max_bytes) as (f, size):
        return _read_whole(f, size, name)
