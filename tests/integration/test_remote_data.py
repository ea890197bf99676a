"""Data sources read from a URL: only the records the drawn segments use, by range, each proven against the signed root."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.data.manifest import SourceInput, build_manifest, read_manifest
from trainwitness.errors import DataMismatchError
from trainwitness.verifier.data_access import BUNDLE_MARKER
from trainwitness.verifier.fetch import Fetcher, FetchSettings
from trainwitness.verifier.remote_data import fetch_remote_sources

from ..support.runs import RecordedRun, record_and_sign
from ..support.servers import Faults, static_server

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


def _lines_source(tmp_path: Path, n: int = 400) -> tuple[Path, list[bytes]]:
    lines = [f'{{"i": {i}, "text": "{"x" * (i % 37)}"}}'.encode() for i in range(n)]
    data = tmp_path / "site" / "corpus.jsonl"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"".join(line + (b"\r\n" if i % 5 == 0 else b"\n") for i, line in enumerate(lines)))  # mixed line ends
    return data, lines


def test_only_the_needed_lines_are_fetched_by_range_and_proven(tmp_path: Path) -> None:
    data, lines = _lines_source(tmp_path)
    summary = build_manifest([SourceInput("corpus", data, license="CC0-1.0")], tmp_path / "m.jsonl")
    manifest = read_manifest(tmp_path / "m.jsonl", summary)
    needed = [3, 4, 5, 150, 399]
    with static_server(tmp_path / "site") as (url, log):
        fetcher = Fetcher(FetchSettings(timeout=2, attempts=1))
        local, stats = fetch_remote_sources(fetcher, manifest, {"corpus": f"{url}/corpus.jsonl"}, needed, tmp_path / "scratch")
    assert stats.by_range == {"corpus": True}
    bundle = local["corpus"]
    assert (bundle / BUNDLE_MARKER).is_file()
    assert {int(p.name): p.read_bytes() for p in bundle.iterdir() if p.name.isdigit()} == {i: lines[i] for i in needed}
    # 3, 4, 5 are neighbours: one request for them (the line ends between them come along), one each for the others.
    assert len([m for m, _ in log.requests if m == "GET"]) == 3
    assert stats.bytes_fetched < data.stat().st_size // 10
    assert stats.bytes_fetched >= sum(len(lines[i]) for i in needed)


def test_a_changed_remote_record_is_rejected_naming_it(tmp_path: Path) -> None:
    data, lines = _lines_source(tmp_path)
    summary = build_manifest([SourceInput("corpus", data, license="CC0-1.0")], tmp_path / "m.jsonl")
    manifest = read_manifest(tmp_path / "m.jsonl", summary)
    body = data.read_bytes()
    at = body.index(lines[150])
    changed = body[:at] + lines[150].replace(b'"i"', b'"j"') + body[at + len(lines[150]) :]
    with static_server(tmp_path / "site", Faults({"/corpus.jsonl": changed})) as (url, _):
        with pytest.raises(DataMismatchError, match=r"sample ids 150 \(no data is substituted\)"):
            fetch_remote_sources(Fetcher(FetchSettings(timeout=2, attempts=1)), manifest, {"corpus": f"{url}/corpus.jsonl"}, [2, 150], tmp_path / "s")


def test_a_gzip_line_file_is_fetched_whole_and_said_so(tmp_path: Path) -> None:
    data, _ = _lines_source(tmp_path)
    packed = data.with_name("corpus.jsonl.gz")
    packed.write_bytes(gzip.compress(data.read_bytes()))
    summary = build_manifest([SourceInput("corpus", packed, license="CC0-1.0")], tmp_path / "m.jsonl")
    manifest = read_manifest(tmp_path / "m.jsonl", summary)
    assert manifest.byte_range(0) is None  # no byte ranges into a DEFLATE stream
    with static_server(tmp_path / "site") as (url, _):
        local, stats = fetch_remote_sources(Fetcher(FetchSettings(timeout=2, attempts=1)), manifest, {"corpus": f"{url}/corpus.jsonl.gz"}, [7], tmp_path / "s")
    assert stats.by_range == {"corpus": False} and "a gzip stream has no random access" in stats.notes[0]
    assert local["corpus"].read_bytes() == packed.read_bytes()


def test_verify_reads_an_npy_source_by_url_fetching_only_the_drawn_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    from ..support.specs.two_source_spec import write_data

    prover_data = tmp_path / "prover-data"
    prover_data.mkdir()
    write_data(prover_data)
    import numpy as np

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(400, 5)).astype(np.float32).round(2)
    rows[:, 4] = np.arange(400) % 2
    while bad := [i for i in range(400) if b"," in rows[i].tobytes()]:  # the spec tells text rows by a comma
        rows[bad, :4] = rng.normal(size=(len(bad), 4)).astype(np.float32).round(2)
    np.save(prover_data / "extra.npy", rows)
    monkeypatch.setenv("TRAINWITNESS_TEST_DATA", str(prover_data))
    run: RecordedRun = record_and_sign(tmp_path / "run", "tests.support.specs.two_source_spec:two_sources", {"total_steps": 20, "checkpoint_interval": 2})
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(prover_data / "extra.npy", site / "extra.npy")
    with static_server(site) as (url, log):
        status = main(run.verify_args("--segments", "1", "--seed", "4", "--data", f"points={prover_data / 'points'}",
                                      "--data", f"extra={url}/extra.npy", "--json", str(tmp_path / "r.json")))
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    import json

    data = json.loads((tmp_path / "r.json").read_text())["data"]
    assert 0 < data["bytes_fetched"] < (site / "extra.npy").stat().st_size // 4  # two steps of 8 samples, not 400 rows
    assert all(m == "GET" for m, _ in log.requests)
