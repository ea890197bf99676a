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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from trainwitness.commit.safe_open import open_regular
from trainwitness.errors import MalformedInputError, MissingInputError

__all__ = ["LINE_SUFFIXES", "detect_format", "list_files", "iter_records", "record_offsets", "read_records"]

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
    """A data file opened by the one safe open (``safe_open``): a FIFO cannot block, a link is refused;
    no size limit, since a source is streamed, never held whole."""
    f, _ = open_regular(path, f"data source {path}", None)
    return f


def _skipped(name: str) -> bool:
    return name.startswith(".")


def list_files(root: Path) -> Iterator[tuple[str, Path]]:
    """The records of a ``files`` source: (relative path, full path), in record order, streamed.

    Each directory is listed on its own, its entries sorted by name bytes with a directory's name
    followed by ``/``, and walked depth first: that visits files exactly in the byte order of their
    full relative paths, while memory holds one listing per level, never every path of the source.
    """
    if not root.is_dir():
        raise MissingInputError(f"data source {root} is not a directory")
    yield from _walk(root, "", root)


def _walk(root: Path, prefix: str, directory: Path) -> Iterator[tuple[str, Path]]:
    entries = []
    with os.scandir(directory) as listing:
        for entry in listing:
            if _skipped(entry.name):
                continue
            if entry.is_symlink():
                raise MalformedInputError(f"data source {root}: {prefix}{entry.name} is a symbolic link")
            is_dir = entry.is_dir(follow_symlinks=False)
            entries.append(((entry.name + "/" if is_dir else entry.name).encode("utf-8"), entry.name, is_dir))
    entries.sort()
    for _, name, is_dir in entries:
        if is_dir:
            yield from _walk(root, f"{prefix}{name}/", directory / name)
        else:
            yield prefix + name, directory / name


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


def _npy_layout(f: IO[bytes], path: Path) -> tuple[int, int, int]:
    """(rows, bytes per row, offset of row 0) of a C-order ``.npy`` file without objects; read with plain reads
    (not a memory map, whose touched pages would count against the process's memory)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
    except (ValueError, OSError) as e:
        raise MalformedInputError(f"data source {path}: not a readable .npy array without objects ({e})") from e
    if dtype.hasobject:
        raise MalformedInputError(f"data source {path}: not a readable .npy array without objects (dtype {dtype})")
    if len(shape) == 0:
        raise MalformedInputError(f"data source {path}: a 0-dimensional array has no rows")
    if fortran_order and len(shape) > 1:
        raise MalformedInputError(f"data source {path}: a Fortran-order array's rows are not contiguous; save it in C order")
    row_bytes = dtype.itemsize
    for extent in shape[1:]:
        row_bytes *= extent
    return shape[0], row_bytes, f.tell()


def _npy_rows(path: Path, wanted: list[int] | None) -> Iterator[tuple[int, bytes]]:
    with _open_regular(path) as f:
        rows, row_bytes, offset = _npy_layout(f, path)
        for i in range(rows) if wanted is None else (i for i in wanted if i < rows):
            if wanted is not None:
                f.seek(offset + i * row_bytes)
            row = f.read(row_bytes)
            if len(row) != row_bytes:
                raise MalformedInputError(f"data source {path}: truncated at row {i}")
            yield i, row


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
        for _, row in _npy_rows(path, None):
            yield row
    else:
        raise MalformedInputError(f"data source {path}: unknown record format {fmt!r}")


def record_offsets(path: Path, fmt: str, compression: str | None) -> Iterator[int | None]:
    """Where each record starts in the source file, in record order: what a reader by byte range needs.

    ``lines`` (uncompressed): the offset of the line's first byte (a record is ``size`` bytes from
    there, whatever its line end); ``npy-rows``: the header's length plus i x the row size; ``file``:
    0. None where a record has no byte range of its own in one file: a ``.gz`` stream (DEFLATE has no
    random access without an index of restart points, each holding 32 KiB of decompressor window) and
    a ``files`` directory (a record is a whole file, located by its relative path).
    """
    if fmt == "lines" and compression is None:
        with _open_regular(path) as f:
            at = 0
            for line in f:
                yield at
                at += len(line)
    elif fmt == "npy-rows":
        with _open_regular(path) as f:
            rows, row_bytes, offset = _npy_layout(f, path)
        for i in range(rows):
            yield offset + i * row_bytes
    elif fmt == "file":
        yield 0
    else:
        for _ in iter_records(path, fmt, compression):
            yield None


def read_records(path: Path, fmt: str, compression: str | None, wanted: Iterable[int]) -> dict[int, bytes]:
    """Only the records at the ``wanted`` positions; a position the source lacks is absent from the result.

    ``files`` and ``npy-rows`` open only what is wanted; ``lines`` must scan to the last wanted line
    (nothing is kept or hashed on the way).
    """
    want = sorted(set(wanted))
    if not want:
        return {}
    if fmt == "npy-rows":
        return dict(_npy_rows(path, want))
    # files: walk the listing, open only the wanted files; lines: scan, keep only the wanted lines.
    positions: Iterator[Path | bytes] = (
        (full for _, full in list_files(path)) if fmt == "files" else iter_records(path, fmt, compression)
    )
    targets, found = set(want), dict[int, bytes]()
    for i, item in enumerate(positions):
        if i in targets:
            found[i] = _read_whole(item) if isinstance(item, Path) else item
        if i >= want[-1]:
            break
    return found

