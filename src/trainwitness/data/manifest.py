"""The dataset manifest: every sample's content digest, grouped by declared source, under one Merkle root.

Sample digest (``format`` of a source other than ``tensors``): ``domain_hash("sample-record", record)``,
i.e. SHA-256 over ``b"trainwitness:sample-record:v1\\0" || len(record) as 8 bytes big-endian || record``,
where the record is the sample's raw bytes (``trainwitness.data.records``). For a ``tensors`` source
(a dataset built in code) it is ``digest_tensors("sample", tensors of the sample)``.

Leaf i (global sample id i; sources are numbered one after the other in declaration order) is the
canonical JSON of ``{"digest", "id", "record", "size", "source", "type": "manifest-sample"}``, with
``record`` the position within its source and ``size`` the record's length in bytes. The manifest
root is the RFC 9162 Merkle root over the leaves (leaf hash ``SHA-256(0x00 || leaf)``), computed
here as a stream so that memory stays flat however many samples there are.

The manifest file is JSON lines: a header (the ``ManifestSummary``: format, root, counts, sources)
then one line per sample, the leaf without its ``type``. Only the summary is signed; the file is
checked against it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from trainwitness.commit.atomic import atomic_write_with, temporary_path, writing
from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hashing import Digest, domain_hash, file_sha256, format_digest, parse_digest
from trainwitness.commit.json_fields import get_field, is_int
from trainwitness.commit.merkle import MerkleTree, StreamingMerkleRoot, verify_inclusion
from trainwitness.commit.safe_open import open_regular
from trainwitness.data.records import detect_format, iter_records, record_offsets
from trainwitness.errors import CommitmentError, MalformedInputError, MissingInputError

__all__ = [
    "MANIFEST_FORMAT",
    "MAX_SOURCES",
    "SourceDeclaration",
    "SampleEntry",
    "ManifestSummary",
    "ManifestBuilder",
    "ManifestIndex",
    "SourceInput",
    "record_digest",
    "build_manifest",
    "read_manifest",
]

MANIFEST_FORMAT = "trainwitness-manifest/v1"
LEAF_TYPE = "manifest-sample"
MAX_SOURCES = 1024
MAX_TEXT = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SOURCE_FORMATS = ("files", "file", "lines", "npy-rows", "tensors")

# (samples done, bytes done) -> None
Progress = Callable[[int, int], None]


def record_digest(record: bytes) -> Digest:
    return format_digest(domain_hash("sample-record", record))


def check_source_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MalformedInputError(f"{where}: source name {name!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
    return name


@dataclass(frozen=True)
class SourceDeclaration:
    """One data source as signed: what it is, where to get it, under which licence, how it is read."""

    name: str
    uri: str | None  # where a copy can be obtained: a URL or a path
    archive_sha256: str | None  # "sha256:<hex>" of the file at uri, when the source is one file
    license: str  # an SPDX licence expression; "NOASSERTION" when not declared
    description: str
    format: str
    compression: str | None
    num_samples: int
    total_bytes: int

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "archive_sha256": self.archive_sha256,
            "compression": self.compression,
            "description": self.description,
            "format": self.format,
            "license": self.license,
            "name": self.name,
            "num_samples": self.num_samples,
            "total_bytes": self.total_bytes,
            "uri": self.uri,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> SourceDeclaration:
        expected = {"archive_sha256", "compression", "description", "format", "license", "name", "num_samples", "total_bytes", "uri"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise MalformedInputError(f"{where}: a source declaration has exactly the fields {sorted(expected)}")
        archive = get_field(obj, "archive_sha256", str, where, optional=True)
        if archive is not None:
            parse_digest(archive, f"{where}.archive_sha256")
        declaration = cls(
            name=check_source_name(obj["name"], where),
            uri=get_field(obj, "uri", str, where, optional=True),
            archive_sha256=archive,
            license=get_field(obj, "license", str, where),
            description=get_field(obj, "description", str, where),
            format=get_field(obj, "format", str, where),
            compression=get_field(obj, "compression", str, where, optional=True),
            num_samples=get_field(obj, "num_samples", int, where),
            total_bytes=get_field(obj, "total_bytes", int, where),
        )
        if declaration.format not in SOURCE_FORMATS:
            raise MalformedInputError(f"{where}.format {declaration.format!r} is not one of {SOURCE_FORMATS}")
        if declaration.compression not in (None, "gzip"):
            raise MalformedInputError(f"{where}.compression must be null or 'gzip'")
        if declaration.num_samples < 0 or declaration.total_bytes < 0:
            raise MalformedInputError(f"{where}: negative counts")
        if max(len(declaration.license), len(declaration.description), len(declaration.uri or "")) > MAX_TEXT:
            raise MalformedInputError(f"{where}: a text field is longer than {MAX_TEXT} characters")
        return declaration


@dataclass(frozen=True)
class SampleEntry:
    id: int
    source: str
    record: int
    digest: Digest
    size: int

    def to_json(self) -> dict[str, JSONValue]:
        return {"digest": self.digest, "id": self.id, "record": self.record, "size": self.size, "source": self.source}

    def leaf(self) -> bytes:
        return canonical_json({**self.to_json(), "type": LEAF_TYPE})


@dataclass(frozen=True)
class ManifestSummary:
    """What the attestation signs about the data: the root, the totals, and every source's declaration."""

    root: Digest
    num_samples: int
    total_bytes: int
    sources: tuple[SourceDeclaration, ...]

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "format": MANIFEST_FORMAT,
            "num_samples": self.num_samples,
            "root": self.root,
            "sources": [s.to_json() for s in self.sources],
            "total_bytes": self.total_bytes,
        }

    def source(self, name: str) -> SourceDeclaration:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for s in self.sources:
            out[s.name] = start
            start += s.num_samples
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = "manifest") -> ManifestSummary:
        if not isinstance(obj, dict) or set(obj) != {"format", "num_samples", "root", "sources", "total_bytes"}:
            raise MalformedInputError(f"{where}: expected exactly format, num_samples, root, sources, total_bytes")
        if obj["format"] != MANIFEST_FORMAT:
            raise MalformedInputError(f"{where}: format is not {MANIFEST_FORMAT}")
        root = get_field(obj, "root", str, where)
        parse_digest(root, f"{where}.root")
        raw_sources = get_field(obj, "sources", list, where)
        if not 1 <= len(raw_sources) <= MAX_SOURCES:
            raise MalformedInputError(f"{where}: between 1 and {MAX_SOURCES} sources are expected")
        sources = tuple(SourceDeclaration.from_json(s, f"{where}.sources[{i}]") for i, s in enumerate(raw_sources))
        if len({s.name for s in sources}) != len(sources):
            raise MalformedInputError(f"{where}: two sources share a name")
        summary = cls(root=root, num_samples=get_field(obj, "num_samples", int, where), total_bytes=get_field(obj, "total_bytes", int, where), sources=sources)
        if summary.num_samples != sum(s.num_samples for s in sources) or summary.total_bytes != sum(s.total_bytes for s in sources):
            raise MalformedInputError(f"{where}: the totals are not the sums over the sources")
        return summary


class ManifestBuilder:
    """Writes a manifest file as samples stream in; sample lines go to a temporary file until the header is known."""

    def __init__(self, out: Path) -> None:
        self._out = out
        self._tmp = temporary_path(out, "samples")  # a temporary name: cleaned after a kill like any other
        with writing(out):
            self._samples = open(self._tmp, "wb")  # noqa: SIM115 (closed in finish/abort)
        self._root = StreamingMerkleRoot()
        self._sources: list[SourceDeclaration] = []

    def add_source(
        self,
        *,
        name: str,
        uri: str | None,
        archive_sha256: str | None,
        license: str,
        description: str,
        format: str,
        compression: str | None,
        samples: Iterable[tuple[Digest, int]],
        progress: Progress | None = None,
        offsets: Iterable[int | None] | None = None,
    ) -> SourceDeclaration:
        """Append one source's samples ((digest, size) in record order); returns its declaration.

        ``offsets``, when given, is where each record starts in the source file (``records.record_offsets``):
        written on the sample line as ``offset`` (not part of the leaf: a reader by byte range uses it,
        and proves the bytes it fetched by their digest, so a wrong offset cannot pass).
        """
        check_source_name(name, "manifest")
        if any(s.name == name for s in self._sources):
            raise MalformedInputError(f"manifest: source {name!r} is declared twice")
        count = total = 0
        where = iter(offsets) if offsets is not None else None
        for digest, size in samples:
            entry = SampleEntry(id=self._root.size, source=name, record=count, digest=digest, size=size)
            line = entry.to_json()
            offset = next(where, None) if where is not None else None
            if offset is not None:
                line["offset"] = offset
            with writing(self._out):
                self._samples.write(canonical_json(line) + b"\n")
            self._root.add(entry.leaf())
            count += 1
            total += size
            if progress is not None and count % 1024 == 0:
                progress(self._root.size, total)
        declaration = SourceDeclaration(
            name=name, uri=uri, archive_sha256=archive_sha256, license=license or "NOASSERTION", description=description,
            format=format, compression=compression, num_samples=count, total_bytes=total,
        )
        self._sources.append(declaration)
        if progress is not None:
            progress(self._root.size, total)
        return declaration

    def finish(self) -> ManifestSummary:
        """Write ``header + sample lines`` to the output path (atomically) and return the summary.

        Raises ``OutputError`` naming the output when it cannot be written; no temporary file is left.
        """
        summary = ManifestSummary(
            root=format_digest(self._root.root()),
            num_samples=self._root.size,
            total_bytes=sum(s.total_bytes for s in self._sources),
            sources=tuple(self._sources),
        )

        def fill(out: BinaryIO) -> None:
            out.write(canonical_json(summary.to_json()) + b"\n")
            with open(self._tmp, "rb") as samples:
                for block in iter(lambda: samples.read(1 << 20), b""):
                    out.write(block)

        try:
            with writing(self._out):
                self._samples.close()
            atomic_write_with(self._out, fill)
        finally:
            self.abort()
        return summary

    def abort(self) -> None:
        """Close and remove the temporary sample lines (after ``finish``, or instead of it)."""
        with contextlib.suppress(OSError):  # closing after a failed write retries the write: it may fail again
            self._samples.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


@dataclass(frozen=True)
class SourceInput:
    """A source given on the command line: a path, and what to declare about it."""

    name: str
    path: Path
    license: str = "NOASSERTION"
    description: str = ""
    uri: str | None = None


def _digests(records: Iterator[bytes]) -> Iterator[tuple[Digest, int]]:
    for record in records:
        yield record_digest(record), len(record)


def build_manifest(inputs: Iterable[SourceInput], out: Path, progress: Progress | None = None) -> ManifestSummary:
    """Stream every record of every source into a manifest file at ``out``."""
    builder = ManifestBuilder(out)
    try:
        for source in inputs:
            if not source.path.exists():
                raise MissingInputError(f"data source {source.path} does not exist")
            fmt, compression = detect_format(source.path)
            archive = format_digest(file_sha256(str(source.path))) if source.path.is_file() else None
            builder.add_source(
                name=source.name, uri=source.uri or str(source.path), archive_sha256=archive, license=source.license,
                description=source.description, format=fmt, compression=compression,
                samples=_digests(iter_records(source.path, fmt, compression)), progress=progress,
                offsets=record_offsets(source.path, fmt, compression),
            )
        return builder.finish()
    except BaseException:
        builder.abort()
        raise


class ManifestIndex:
    """A manifest file read back and checked against a signed summary; hands out proven entries."""

    def __init__(self, summary: ManifestSummary, digests: list[bytes], sizes: list[int], offsets: list[int | None] | None = None) -> None:
        self.summary = summary
        self._digests = digests
        self._sizes = sizes
        self._offsets_in_file = offsets if offsets is not None else [None] * len(digests)
        self._names = [s.name for s in summary.sources]
        self._source_index: list[int] = []
        for number, s in enumerate(summary.sources):
            self._source_index.extend([number] * s.num_samples)
        self._offsets = summary.offsets()
        self._tree = MerkleTree([self._entry(i).leaf() for i in range(len(digests))])
        self._root = parse_digest(summary.root, "manifest root")

    def _entry(self, i: int) -> SampleEntry:
        name = self._names[self._source_index[i]]
        return SampleEntry(id=i, source=name, record=i - self._offsets[name], digest=format_digest(self._digests[i]), size=self._sizes[i])

    def __len__(self) -> int:
        return len(self._digests)

    def byte_range(self, sample_id: int) -> tuple[int, int] | None:
        """[start, end) of the sample's record in its source file, as the manifest line gives it (unsigned: a
        hint for readers by range, whose bytes are then proven by digest); None when not recorded."""
        start = self._offsets_in_file[sample_id]
        return None if start is None else (start, start + self._sizes[sample_id])

    @property
    def computed_root(self) -> bytes:
        return self._tree.root

    def total_size(self, sample_ids: Iterable[int]) -> int:
        """The bytes of the records ``sample_ids`` (each counted once), as the checked manifest lists them."""
        return sum(self._sizes[i] for i in set(sample_ids) if 0 <= i < len(self._sizes))

    def proven_entry(self, sample_id: int) -> SampleEntry:
        """Entry ``sample_id``, after its inclusion proof verifies against the signed root."""
        if not 0 <= sample_id < len(self._digests):
            raise CommitmentError(f"sample {sample_id} is outside the manifest of {len(self._digests)} samples")
        entry = self._entry(sample_id)
        verify_inclusion(self._root, entry.leaf(), self._tree.proof(sample_id))
        return entry


MAX_MANIFEST_LINE = 1 << 20  # one sample's entry is a few hundred bytes; the header lists the sources


def _open_store_manifest(path: Path) -> Iterator[bytes]:
    opened, _ = open_regular(path, f"manifest {path}", None)  # streamed line by line: no whole-file limit
    with opened as f:
        while line := f.readline(MAX_MANIFEST_LINE + 1):
            if len(line) > MAX_MANIFEST_LINE:
                raise MalformedInputError(f"manifest {path} has a line longer than {MAX_MANIFEST_LINE} bytes")
            if not line.endswith(b"\n"):
                raise MalformedInputError(f"manifest {path} ends in an unfinished line")
            yield line[:-1]


def read_manifest(path: Path, signed: ManifestSummary) -> ManifestIndex:
    """Read a manifest file and check it against the signed summary: header, every entry, the root."""
    lines = _open_store_manifest(path)
    header = next(lines, None)
    if header is None:
        raise MalformedInputError(f"manifest {path} is empty")
    if ManifestSummary.from_json(parse_json(header, f"manifest {path} header"), f"manifest {path}") != signed:
        raise CommitmentError(f"manifest {path}: its header is not the signed data summary")
    positions = ((s.name, r) for s in signed.sources for r in range(s.num_samples))
    digests: list[bytes] = []
    sizes: list[int] = []
    offsets: list[int | None] = []
    for number, line in enumerate(lines):
        where = f"manifest {path} sample line {number + 1}"
        obj = parse_json(line, where)
        if not isinstance(obj, dict) or set(obj) - {"offset"} != {"digest", "id", "record", "size", "source"}:
            raise MalformedInputError(f"{where}: expected exactly digest, id, record, size, source (and optionally offset)")
        offset = obj.get("offset")
        if offset is not None and (not is_int(offset) or offset < 0):
            raise MalformedInputError(f"{where}: offset must be a non-negative integer")
        offsets.append(offset)
        if (obj["source"], obj["record"]) != next(positions, None) or obj["id"] != number:
            raise CommitmentError(f"{where}: sample {obj.get('id')!r} is not where the signed sources put it")
        digests.append(parse_digest(get_field(obj, "digest", str, where), f"{where} digest"))
        sizes.append(get_field(obj, "size", int, where))
    if len(digests) != signed.num_samples:
        raise CommitmentError(f"manifest {path} lists {len(digests)} samples, the attestation declares {signed.num_samples}")
    start = 0
    for source in signed.sources:
        if sum(sizes[start : start + source.num_samples]) != source.total_bytes:
            raise CommitmentError(f"manifest {path}: the sizes of source {source.name} do not add up to its declared total")
        start += source.num_samples
    index = ManifestIndex(signed, digests, sizes, offsets)
    if format_digest(index.computed_root) != signed.root:
        raise CommitmentError(f"manifest {path} does not hash to the signed manifest root")
    return index
