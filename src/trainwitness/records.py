"""Sample records: the raw bytes of one sample, read from a data source one at a time.

A source is read in one of four formats (docs/DATA.md):

``files``     a directory; each regular file below it is one record, in the order of the relative
              ``/``-separated paths' UTF-8 bytes; names starting with ``.`` are skipped, links refused.
``file``      a single file is a single record.
``lines``     a JSON-lines or CSV file (``.jsonl``, ``.ndjson``, ``.csv``, ``.tsv``, ``.txt``); each
              line is one record, without its ``\\n`` (and without a ``\\r`` before it). A final
              ``\\n`` ends the last record; it does not start an empty one. ``.gz``: the lines of the
              decompressed stream.
``npy-rows``  a ``.npy`` array (no pickled objects); row i along axis 0 is record i, its bytes in
              C order.

Everything streams: memory does not grow with the size of the source.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import MalformedInputError, MissingInputError

__all__ = ["RECORD_FORMATS", "LINE_SUFFIXES", "detect_format", "iter_records", "read_records", "source_size"]

RECORD_FORMATS = ("files", "file", "lines", "npy-rows")
LINE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".txt")


def detect_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) of a source path, from what it is and its name."""
    if path.is_dir():
        return "files", None
    name = path.name.lower()
    compression = "gzip" if name.endswith(".gz") else None
    stem = name[:-3] if compression else name
    if stem.endswith(LINE_SUFFIXES):
        return "lines", compression
    if stem.endswith(".npy") and compression is None:
        return "npy-rows", None
    return "file", None  # a single file is one record: its bytes as stored, compressed or not


def _open_regular(path: Path) -> IO[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as e:
        raise MissingInputError(f"data source {path} does not exist") from e
    except OSError as e:
        raise MissingInputError(f"data source {path} cannot be opened ({e.strerror})") from e
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise MalformedInputError(f"data source {path} is not a regular file")
    return f


def _skipped(name: str) -> bool:
    return name.startswith(".")


def list_files(root: Path) -> list[tuple[str, Path]]:
    """The records of a ``files`` source: (relative path, full path), in record order."""
    if not root.is_dir():
        raise MissingInputError(f"data source {root} is not a directory")
    found: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not _skipped(d)]
        for link in (d for d in dirnames if (Path(directory) / d).is_symlink()):
            raise MalformedInputError(f"data source {root}: {link} is a symbolic link")
        for name in filenames:
            if not _skipped(name):
                full = Path(directory) / name
                found.append((full.relative_to(root).as_posix(), full))
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return found


def _read_whole(path: Path) -> bytes:
    with _open_regular(path) as f:
        return f.read()


def _lines(path: Path, compression: str | None) -> Iterator[bytes]:
    with _open_regular(path) as raw:
        stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else raw
        try:
            for line in stream:
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                yield line
        except (OSError, EOFError) as e:
            raise MalformedInputError(f"data source {path}: cannot be decompressed ({e})") from e


def _npy(path: Path):  # type: ignore[no-untyped-def]
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise MalformedInputError(f"data source {path}: not a readable .npy array without objects ({e})") from e
    if array.ndim == 0:
        raise MalformedInputError(f"data source {path}: a 0-dimensional array has no rows")
    return array


def iter_records(path: Path, fmt: str, compression: str | None = None) -> Iterator[bytes]:
    """Every record of a source, in order, one at a time."""
    if fmt == "files":
        for _, full in list_files(path):
            yield _read_whole(full)
    elif fmt == "file":
        yield _read_whole(path)
    elif fmt == "lines":
        yield from _lines(path, compression)
    elif fmt == "npy-rows":
        array = _npy(path)
        for i in range(array.shape[0]):
            yield array[i].tobytes(order="C")
    else:
        raise MalformedInputError(f"data source {path}: unknown record format {fmt!r}")


def read_records(path: Path, fmt: str, compression: str | None, wanted: Iterable[int]) -> dict[int, bytes]:
    """Only the records at the ``wanted`` positions; a position the source lacks is absent from the result.

    ``files`` and ``npy-rows`` open only what is wanted; ``lines`` must scan to the last wanted line
    (nothing is kept or hashed on the way).
    """
    want = sorted(set(wanted))
    if not want:
        return {}
    if fmt == "files":
        listing = list_files(path)
        return {i: _read_whole(listing[i][1]) for i in want if i < len(listing)}
    if fmt == "npy-rows":
        array = _npy(path)
        return {i: array[i].tobytes(order="C") for i in want if i < array.shape[0]}
    found: dict[int, bytes] = {}
    targets = set(want)
    for i, record in enumerate(iter_records(path, fmt, compression)):
        if i in targets:
            found[i] = record
        if i >= want[-1]:
            break
    return found


def source_size(path: Path) -> int:
    """Bytes the source occupies on disk (for the report's 'read X of Y')."""
    if path.is_dir():
        return sum(full.stat().st_size for _, full in list_files(path))
    return path.stat().st_size
