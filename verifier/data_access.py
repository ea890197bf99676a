"""The verifier's data: only the samples replay needs, read from the auditor's copy, each proven against the manifest.

Nothing here substitutes data: a sample that is missing from the auditor's copy, or whose digest is
not the one in the manifest (itself proven against the signed root), rejects the run, naming every
such sample id and its source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from trainwitness.commit.safe_open import read_beneath
from trainwitness.data.datasets import Dataset, DataSource, SourceDataset
from trainwitness.data.manifest import ManifestIndex, record_digest
from trainwitness.data.records import detect_format, read_records
from trainwitness.errors import DataMismatchError, InputError, MalformedInputError, MissingInputError
from trainwitness.tensors.state import digest_tensors

__all__ = ["BUNDLE_MARKER", "CheckedRecords", "prefetch", "check_code_built_samples", "describe_ids"]

# A record bundle (remote_data.py): a directory holding one file per record position of one source,
# written by the verifier itself from records it fetched by range; replay reads it like any copy, and
# proves every record again.
BUNDLE_MARKER = ".trainwitness-record-bundle"
MAX_BUNDLE_RECORD_BYTES = 1 << 40  # no smaller than a record of a source may be (a whole-file source is one record)


def _bundle_records(directory: Path, wanted: Iterable[int]) -> dict[int, bytes]:
    found = {}
    for p in wanted:
        try:  # the bundle's own files only: a record missing, linked or special is not in the bundle
            found[p] = read_beneath(directory, str(p), f"record bundle {directory}: record {p}", MAX_BUNDLE_RECORD_BYTES)
        except (MissingInputError, MalformedInputError):
            continue
    return found


def describe_ids(ids: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class CheckedRecords:
    """A ``RecordAccess`` for ``SourceDataset``: fetches records by id and proves each before handing it out."""

    def __init__(self, manifest: ManifestIndex, paths: Mapping[str, Path | str]) -> None:
        self.manifest = manifest
        self.paths = {name: Path(p) for name, p in paths.items()}
        self.bytes_read = 0
        self.samples_read = 0
        self._proven: dict[int, bytes] = {}  # global sample id -> record, proven
        self._offsets = manifest.summary.offsets()

    def _declared(self, source: DataSource):  # type: ignore[no-untyped-def]
        try:
            declared = self.manifest.summary.source(source.name)
        except KeyError as e:
            raise DataMismatchError(f"the training code reads source {source.name!r}, which the attestation does not declare") from e
        if declared.license != source.license:
            raise DataMismatchError(
                f"source {source.name}: the attestation declares licence {declared.license!r}, the training code {source.license!r}"
            )
        return declared

    def _path(self, source: DataSource) -> Path:
        """The auditor's copy of ``source``: the ``--data`` path, else where the training code locates it."""
        if source.name in self.paths:
            return self.paths[source.name]
        fix = f"give your copy with --data {source.name}=PATH"
        try:
            path = source.locate()
        except InputError as e:
            raise MissingInputError(f"data source {source.name}: {e}; {fix}") from e
        except Exception as e:  # noqa: BLE001 - the training code's own way of finding it failed here
            raise MissingInputError(f"data source {source.name}: the training code cannot locate it here ({type(e).__name__}: {e}); {fix}") from e
        if not os.path.lexists(path):
            raise MissingInputError(f"data source {source.name}: {path} does not exist here; {fix}")
        return Path(path)

    def count(self, source: DataSource) -> int:
        return int(self._declared(source).num_samples)

    def fetch(self, source: DataSource, positions: Iterable[int]) -> None:
        """Read and prove the records at ``positions`` of ``source`` that are not proven yet."""
        declared = self._declared(source)
        offset = self._offsets[source.name]
        wanted = sorted({p for p in positions if offset + p not in self._proven})
        if not wanted:
            return
        outside = [offset + p for p in wanted if not 0 <= p < declared.num_samples]
        if outside:
            raise DataMismatchError(f"source {source.name}: sample ids {describe_ids(outside)} are outside the declared dataset")
        if declared.format == "tensors":
            raise MalformedInputError(f"source {source.name} is built in code; it has no records to read")
        path = self._path(source)
        if (path / BUNDLE_MARKER).is_file():
            found = _bundle_records(path, wanted)
        else:
            # Records are what is proven, not files: a line source may be kept compressed or not.
            compression = detect_format(path)[1] if declared.format == "lines" else declared.compression
            found = read_records(path, declared.format, compression, wanted)
        missing = [offset + p for p in wanted if p not in found]
        changed = []
        for p, record in found.items():
            entry = self.manifest.proven_entry(offset + p)  # inclusion proof against the signed root
            self.bytes_read += len(record)
            self.samples_read += 1
            if record_digest(record) != entry.digest or len(record) != entry.size:
                changed.append(offset + p)
            else:
                self._proven[offset + p] = record
        problems = []
        if missing:
            problems.append(f"missing from {path}: {_records(declared.format, path, missing, offset)}")
        if changed:
            problems.append(f"differ from the manifest: {_records(declared.format, path, sorted(changed), offset)}")
        if problems:
            raise DataMismatchError(f"source {source.name}: " + "; ".join(problems) + " (no data is substituted)")

    def records(self, source: DataSource, positions: Sequence[int]) -> list[bytes]:
        self.fetch(source, positions)
        offset = self._offsets[source.name]
        return [self._proven[offset + p] for p in positions]


def _records(fmt: str, path: Path, ids: Sequence[int], offset: int, limit: int = 5) -> str:
    """Global sample ids with where each lies in the auditor's copy: "sample ids 31 (line 32 of a.jsonl)"."""
    where = {"lines": "line {n} of {file}", "npy-rows": "row {p} of {file}", "files": "file number {n} in {file}"}.get(fmt)
    shown = [
        str(i) + ("" if where is None else f" ({where.format(n=i - offset + 1, p=i - offset, file=path.name)})")
        for i in ids[:limit]
    ]
    more = f" and {len(ids) - limit} more ({describe_ids(ids[limit:])})" if len(ids) > limit else ""
    return "sample ids " + ", ".join(shown) + more


def prefetch(dataset: Dataset, access: CheckedRecords | None, ids: Iterable[int]) -> None:
    """Prove every sample in ``ids`` before replay starts, so that one verdict names every bad sample."""
    wanted = sorted(set(ids))
    if isinstance(dataset, SourceDataset) and access is not None:
        by_source: dict[str, list[int]] = {}
        start = 0
        for source in dataset.sources:
            count = access.count(source)
            by_source[source.name] = [i - start for i in wanted if start <= i < start + count]
            start += count
        outside = [i for i in wanted if i >= start]
        if outside:
            raise DataMismatchError(f"dataset {dataset.name}: sample ids {describe_ids(outside)} are outside the declared dataset")
        for source in dataset.sources:
            access.fetch(source, by_source[source.name])


def check_code_built_samples(dataset: Dataset, manifest: ManifestIndex, ids: Iterable[int]) -> int:
    """For a dataset built in code (a ``tensors`` source): prove the samples replay uses; returns their bytes."""
    changed, total = [], 0
    for i in sorted(set(ids)):
        entry = manifest.proven_entry(i)
        sample = dataset.sample(i)
        size = sum(t.numel() * t.element_size() for t in sample.values())
        if digest_tensors("sample", sample, None) != entry.digest or size != entry.size:  # the entry's size too: nothing taken on trust
            changed.append(i)
        total += size
    if changed:
        source = manifest.summary.sources[0].name
        raise DataMismatchError(f"source {source}: sample ids {describe_ids(changed)} differ from the manifest")
    return total
