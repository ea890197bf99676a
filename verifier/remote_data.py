"""Data sources read from a URL (``verify --data NAME=URL``): only the records the drawn segments use.

The verifier knows, before any replay, which samples the drawn segments use: the committed sample
ids of their steps (inclusion-proven against the signed batches root; the replay checks them against
the sampler again). For a source given as a URL it fetches those records and nothing else, by HTTP
range requests (S3 ranged GETs) at the byte ranges the manifest's sample lines record
(``records.record_offsets``; adjacent ranges are merged into one request), and proves each record's
bytes against its manifest entry, itself proven against the signed root. A record whose bytes do not
hash to its entry rejects the run (``DataMismatchError``, naming the sample ids and the URL): nothing
is substituted. The proven records are written into a private directory (a *record bundle*, one file
per record position, and a marker file) that replay reads like a local source, in a sandboxed worker
too (it has no network).

Which formats can be read by range: uncompressed ``lines`` and ``npy-rows`` (and ``file``, one
record). Not by range, so fetched whole and then read like a local copy (the report says so): a
``.gz`` line file, because DEFLATE has no random access (a reader would need an index of restart
points, each with the 32 KiB window of decompressor state at that point: a format of its own, not
built here); a ``files`` directory (a record is a file found by its relative path, which the manifest
does not record); and a manifest written before byte ranges were recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trainwitness.commit.atomic import atomic_write
from trainwitness.data.manifest import ManifestIndex, record_digest
from trainwitness.errors import DataMismatchError, MalformedInputError
from trainwitness.verifier.data_access import BUNDLE_MARKER, describe_ids
from trainwitness.verifier.fetch import Fetcher

__all__ = ["RemoteDataStats", "fetch_remote_sources", "MAX_SOURCE_FILE_BYTES", "MAX_GAP"]

MAX_SOURCE_FILE_BYTES = 64 * 1024**3
MAX_GAP = 256  # two ranges closer than this are fetched as one request (about what a request costs; the gap is counted)


@dataclass
class RemoteDataStats:
    bytes_fetched: int = 0
    requests: int = 0
    by_range: dict[str, bool] = field(default_factory=dict)  # source name -> read by range (False: whole file)
    notes: list[str] = field(default_factory=list)


def _merged(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """(start, end, [members]) requests covering the (position, start, end) ranges, merging near neighbours."""
    out: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for item in sorted(ranges, key=lambda r: r[1]):
        if out and item[1] - out[-1][1] <= MAX_GAP:
            start, end, members = out[-1]
            out[-1] = (start, max(end, item[2]), [*members, item])
        else:
            out.append((item[1], item[2], [item]))
    return out


def fetch_remote_sources(
    fetcher: Fetcher, manifest: ManifestIndex, urls: Mapping[str, str], needed: Iterable[int], scratch: Path,
) -> tuple[dict[str, Path], RemoteDataStats]:
    """For each source NAME -> URL: a local path replay can read (record bundle, or the whole file); and the byte counts."""
    stats = RemoteDataStats()
    offsets = manifest.summary.offsets()
    wanted = sorted(set(needed))
    local: dict[str, Path] = {}
    for name, url in urls.items():
        declared = manifest.summary.source(name)
        if declared.format == "tensors":
            raise MalformedInputError(f"--data {name}={url}: source {name} is built in code; it has no records to fetch")
        start = offsets[name]
        positions = [i - start for i in wanted if start <= i < start + declared.num_samples]
        ranges = [manifest.byte_range(start + p) for p in positions]
        directory = scratch / "data" / name
        directory.mkdir(parents=True, exist_ok=True)
        before = fetcher.bytes_fetched
        if declared.compression is None and all(r is not None for r in ranges) and declared.format in ("lines", "npy-rows", "file"):
            _fetch_by_range(fetcher, manifest, name, url, start, positions, ranges, directory)  # type: ignore[arg-type]
            stats.by_range[name] = True
            local[name] = directory
        else:
            why = (
                "a gzip stream has no random access" if declared.compression == "gzip"
                else "a record of a files source is a whole file" if declared.format == "files"
                else "the manifest records no byte ranges"
            )
            target = directory / url.rstrip("/").rsplit("/", 1)[-1]
            fetcher.download(url, target, MAX_SOURCE_FILE_BYTES, f"data source {name}")
            stats.by_range[name] = False
            stats.notes.append(f"data source {name} was fetched whole from {url} ({why}); its records were then read from that copy")
            local[name] = target
        stats.bytes_fetched += fetcher.bytes_fetched - before
    return local, stats


def _fetch_by_range(
    fetcher: Fetcher, manifest: ManifestIndex, name: str, url: str, start: int, positions: list[int],
    ranges: list[tuple[int, int]], directory: Path,
) -> None:
    changed: list[int] = []
    for first, end, members in _merged([(p, r[0], r[1]) for p, r in zip(positions, ranges, strict=True)]):
        data = fetcher.read_range(url, first, end, f"data source {name}")
        for position, a, b in members:
            record = data[a - first : b - first]
            entry = manifest.proven_entry(start + position)  # inclusion proof against the signed root
            if record_digest(record) != entry.digest:
                changed.append(start + position)
                continue
            atomic_write(directory / str(position), record)
    if changed:
        raise DataMismatchError(
            f"source {name}: the bytes at the manifest's ranges of {url} differ from the manifest for sample ids "
            f"{describe_ids(sorted(changed))} (no data is substituted)"
        )
    atomic_write(directory / BUNDLE_MARKER, f"records of source {name} fetched from {url}, each proven against the manifest\n".encode())
