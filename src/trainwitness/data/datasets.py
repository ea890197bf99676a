"""Datasets as the core sees them: numbered samples, each a dict of tensors.

Two kinds: a ``SourceDataset`` reads its samples as raw records from declared sources (files,
lines, array rows: ``trainwitness.data.records``) and decodes them in code, so a verifier can fetch
exactly the records a replayed step needs from its own copy and prove each against the manifest;
any other ``Dataset`` is built in code and its samples are identified by
``digest_tensors("sample", tensors of sample i)`` (a manifest source of format ``tensors``).
Batch digest: ``digest_tensors("batch", collated batch)``. The manifest itself: ``trainwitness.data.manifest``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from trainwitness.commit.hashing import file_sha256, format_digest
from trainwitness.data.manifest import ManifestBuilder, ManifestSummary, record_digest
from trainwitness.data.records import detect_format, iter_records, record_offsets
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import digest_tensors

__all__ = [
    "Dataset",
    "TensorDataset",
    "DataSource",
    "RecordAccess",
    "LocalRecords",
    "SourceDataset",
    "use_record_access",
    "sample_digest",
    "build_dataset_manifest",
    "batch_digest",
]

Batch = dict[str, torch.Tensor]


class Dataset(Protocol):
    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def sample(self, index: int) -> Batch: ...

    def batch(self, ids: Sequence[int]) -> Batch: ...


@dataclass(frozen=True)
class TensorDataset:
    """Samples are rows of equally long tensors (features, labels, ...)."""

    name: str
    columns: Mapping[str, torch.Tensor]
    license: str = "NOASSERTION"  # SPDX expression for the data; NOASSERTION fails every licence policy
    description: str | None = None

    def __post_init__(self) -> None:
        lengths = {len(t) for t in self.columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"dataset {self.name}: columns have different lengths {sorted(lengths)}")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def sample(self, index: int) -> Batch:
        return {k: v[index] for k, v in self.columns.items()}

    def batch(self, ids: Sequence[int]) -> Batch:
        index = torch.tensor(list(ids), dtype=torch.int64)
        return {k: v.index_select(0, index) for k, v in self.columns.items()}


@dataclass(frozen=True)
class DataSource:
    """A data source as the training code declares it; the prover signs this with the manifest."""

    name: str
    license: str  # SPDX licence expression
    description: str
    locate: Callable[[], Path]  # the local copy to read when none is given (--data NAME=PATH overrides)
    uri: str | None = None  # where a copy can be obtained; default: the located path

    def record_format(self, path: Path) -> tuple[str, str | None]:
        return detect_format(path)


class RecordAccess(Protocol):
    """Where a ``SourceDataset`` gets its records: the prover reads local copies, the verifier proves each."""

    def count(self, source: DataSource) -> int: ...

    def records(self, source: DataSource, positions: Sequence[int]) -> list[bytes]: ...


class LocalRecords:
    """Every record of every source read once from its located copy and kept in memory (training)."""

    def __init__(self) -> None:
        self._records: dict[str, list[bytes]] = {}

    def all_records(self, source: DataSource) -> list[bytes]:
        if source.name not in self._records:
            path = source.locate()
            fmt, compression = source.record_format(path)
            self._records[source.name] = list(iter_records(path, fmt, compression))
        return self._records[source.name]

    def count(self, source: DataSource) -> int:
        return len(self.all_records(source))

    def records(self, source: DataSource, positions: Sequence[int]) -> list[bytes]:
        records = self.all_records(source)
        return [records[p] for p in positions]


_record_access: ContextVar[RecordAccess | None] = ContextVar("trainwitness_record_access", default=None)


@contextlib.contextmanager
def use_record_access(access: RecordAccess) -> Iterator[None]:
    """Datasets built inside this block read their records through ``access`` (the verifier's proven copy)."""
    token = _record_access.set(access)
    try:
        yield
    finally:
        _record_access.reset(token)


class SourceDataset:
    """Samples are records of declared sources (in order, ids numbered across them), decoded in code.

    ``decode`` turns a list of records into a collated batch; it must be a pure function of them.
    """

    def __init__(self, name: str, sources: Sequence[DataSource], decode: Callable[[Sequence[bytes]], Batch]) -> None:
        if not sources or len({s.name for s in sources}) != len(sources):
            raise ValueError(f"dataset {name}: needs at least one source, with distinct names")
        self.name = name
        self.sources = tuple(sources)
        self.decode = decode
        self.access: RecordAccess = _record_access.get() or LocalRecords()  # captured when the spec builds it
        self._counts: list[int] | None = None

    def bind(self, access: RecordAccess) -> None:
        """Read records through ``access`` from now on (the verifier's, if the spec built this dataset early)."""
        self.access = access
        self._counts = None

    def _locate(self, index: int) -> tuple[DataSource, int]:
        if self._counts is None:
            self._counts = [self.access.count(s) for s in self.sources]
        if index >= 0:
            for source, count in zip(self.sources, self._counts, strict=True):
                if index < count:
                    return source, index
                index -= count
        raise IndexError(f"dataset {self.name}: sample {index} does not exist")

    def __len__(self) -> int:
        if self._counts is None:
            self._counts = [self.access.count(s) for s in self.sources]
        return sum(self._counts)

    def records(self, ids: Sequence[int]) -> list[bytes]:
        out = []
        for i in ids:
            source, position = self._locate(i)
            out.extend(self.access.records(source, [position]))
        return out

    def sample(self, index: int) -> Batch:
        return {k: v[0] for k, v in self.decode(self.records([index])).items()}

    def batch(self, ids: Sequence[int]) -> Batch:
        return self.decode(self.records(ids))


def sample_digest(dataset: Dataset, index: int) -> str:
    """The content digest of a sample of a dataset built in code (a ``tensors`` source)."""
    return digest_tensors("sample", dataset.sample(index), None)


def _tensor_samples(dataset: Dataset) -> Iterator[tuple[str, int]]:
    for i in range(len(dataset)):
        sample = dataset.sample(i)
        yield digest_tensors("sample", sample, None), sum(t.numel() * t.element_size() for t in sample.values())


def build_dataset_manifest(dataset: Dataset, out: Path) -> ManifestSummary:
    """The manifest of a training spec's dataset, written to ``out`` (the prover's store)."""
    builder = ManifestBuilder(out)
    try:
        if isinstance(dataset, SourceDataset):
            for source in dataset.sources:
                path = source.locate()
                fmt, compression = source.record_format(path)
                records = dataset.access.records(source, range(dataset.access.count(source)))
                builder.add_source(
                    name=source.name, uri=source.uri or str(path),
                    archive_sha256=format_digest(file_sha256(str(path))) if path.is_file() else None,
                    license=source.license, description=source.description, format=fmt, compression=compression,
                    samples=((record_digest(r), len(r)) for r in records), offsets=record_offsets(path, fmt, compression),
                )
        else:
            try:
                builder.add_source(
                    name=dataset.name, uri=None, archive_sha256=None, license=getattr(dataset, "license", "NOASSERTION"),
                    description=getattr(dataset, "description", None) or f"dataset {dataset.name}, built in code by the training spec",
                    format="tensors",
                    compression=None, samples=_tensor_samples(dataset),
                )
            except MalformedInputError as e:
                raise MalformedInputError(f"dataset {dataset.name!r} cannot name a manifest source: {e}") from e
        return builder.finish()
    except BaseException:
        builder.abort()
        raise


def batch_digest(batch: Batch) -> str:
    return digest_tensors("batch", batch, None)
