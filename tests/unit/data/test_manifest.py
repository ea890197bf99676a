"""The dataset manifest: record formats, the exact bytes hashed, the streamed root, and the file checked on reading."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from trainwitness.cli import main
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.merkle import merkle_root
from trainwitness.data.manifest import (
    ManifestSummary,
    SampleEntry,
    SourceInput,
    build_manifest,
    read_manifest,
    record_digest,
)
from trainwitness.data.records import iter_records, read_records
from trainwitness.errors import CommitmentError, MalformedInputError

from ...support.runs import RecordedRun


def test_record_digest_golden_bytes() -> None:
    expected = hashlib.sha256(b"trainwitness:sample-record:v1\0" + (5).to_bytes(8, "big") + b"hello").hexdigest()
    assert record_digest(b"hello") == "sha256:" + expected
    assert expected == "5af02dca35cc3d0b259f9dba59cbc84bca04bfdcd4cd0acb5b23e03b4bb68dc7"


def test_manifest_leaf_golden_bytes() -> None:
    entry = SampleEntry(id=3, source="s", record=1, digest=record_digest(b"hello"), size=5)
    assert entry.leaf() == (
        b'{"digest":"sha256:5af02dca35cc3d0b259f9dba59cbc84bca04bfdcd4cd0acb5b23e03b4bb68dc7",'
        b'"id":3,"record":1,"size":5,"source":"s","type":"manifest-sample"}'
    )


def test_records_of_each_format(tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "b.txt").write_bytes(b"B")
    (tmp_path / "dir" / "a.txt").write_bytes(b"A")
    (tmp_path / "dir" / "sub" / "c.bin").write_bytes(b"C")
    (tmp_path / "dir" / ".hidden").write_bytes(b"skipped")
    (tmp_path / "x.jsonl").write_bytes(b'{"a":1}\r\n{"a":2}\n\n{"a":3}')
    with gzip.open(tmp_path / "x.csv.gz", "wb") as f:
        f.write(b"1,2\n3,4\n")
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.int16).reshape(3, 2))
    assert list(iter_records(tmp_path / "dir", "files")) == [b"A", b"B", b"C"]
    assert list(iter_records(tmp_path / "x.jsonl", "lines")) == [b'{"a":1}', b'{"a":2}', b"", b'{"a":3}']
    assert list(iter_records(tmp_path / "x.csv.gz", "lines", "gzip")) == [b"1,2", b"3,4"]
    assert list(iter_records(tmp_path / "x.npy", "npy-rows")) == [np.array([2 * i, 2 * i + 1], dtype=np.int16).tobytes() for i in range(3)]
    assert read_records(tmp_path / "dir", "files", None, [2, 0, 9]) == {0: b"A", 2: b"C"}
    assert read_records(tmp_path / "x.jsonl", "lines", None, [1]) == {1: b'{"a":2}'}
    assert read_records(tmp_path / "x.npy", "npy-rows", None, [2, 7]) == {2: np.array([4, 5], dtype=np.int16).tobytes()}


def test_manifest_built_from_sources_lists_every_sample(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for i in range(5):
        (tmp_path / "d" / f"{i}.txt").write_bytes(b"x" * i)
    (tmp_path / "t.csv").write_bytes(b"r0\nr1\n")
    out = tmp_path / "m.jsonl"
    summary = build_manifest(
        [SourceInput("files", tmp_path / "d", license="CC0-1.0"), SourceInput("table", tmp_path / "t.csv", license="MIT")], out
    )
    assert (summary.num_samples, summary.total_bytes) == (7, 0 + 1 + 2 + 3 + 4 + 2 + 2)
    assert [s.format for s in summary.sources] == ["files", "lines"]
    lines = out.read_bytes().splitlines()
    assert ManifestSummary.from_json(json.loads(lines[0])) == summary
    entries = [json.loads(line) for line in lines[1:]]
    assert [e["id"] for e in entries] == list(range(7))
    assert entries[5] == {"digest": record_digest(b"r0"), "id": 5, "offset": 0, "record": 0, "size": 2, "source": "table"}
    assert entries[6]["offset"] == 3 and "offset" not in entries[0]  # a line file's records have byte ranges, files do not
    expected_root = merkle_root([SampleEntry(**{k: v for k, v in e.items() if k != "offset"}).leaf() for e in entries])
    assert summary.root == format_digest(expected_root)
    index = read_manifest(out, summary)
    assert index.proven_entry(6).digest == record_digest(b"r1")
    assert index.byte_range(6) == (3, 5) and index.byte_range(0) is None
    with pytest.raises(CommitmentError, match="sample 7 is outside"):
        index.proven_entry(7)


def test_read_manifest_rejects_a_changed_sample_line(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b"a\nb\nc\n")
    out = tmp_path / "m.jsonl"
    summary = build_manifest([SourceInput("t", tmp_path / "t.jsonl")], out)
    lines = out.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(record_digest(b"b").encode(), record_digest(b"B").encode())
    out.write_bytes(b"\n".join(lines))
    with pytest.raises(CommitmentError, match="does not hash to the signed manifest root"):
        read_manifest(out, summary)


def test_npy_with_objects_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MalformedInputError, match="without objects"):
        build_manifest([SourceInput("o", tmp_path / "o.npy")], tmp_path / "m.jsonl")


def test_cli_manifest_of_the_digits_file_is_the_one_the_prover_signed(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    from trainwitness.workloads.digits import digits_csv_path

    out = tmp_path / "digits-manifest.jsonl"
    assert main(["data", "manifest", f"uci-digits={digits_csv_path()}", "--license", "uci-digits=CC-BY-4.0", "--out", str(out)]) == 0
    assert "1797 samples" in capsys.readouterr().out
    built = json.loads(out.read_bytes().split(b"\n")[0])
    signed = json.loads((digits_run.store / "manifest.jsonl").read_bytes().split(b"\n")[0])
    assert built["root"] == signed["root"]
    assert built["total_bytes"] == signed["total_bytes"]


def test_cli_manifest_refuses_a_missing_source(tmp_path: Path, capsys) -> None:
    assert main(["data", "manifest", f"x={tmp_path / 'absent.csv'}", "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_files_are_records_in_the_byte_order_of_their_relative_paths(tmp_path: Path) -> None:
    # "a.txt" < "a/b" in bytes ('.' is 0x2E, '/' is 0x2F), although the directory "a" sorts before "a.txt" by name.
    for rel in ["a/b", "a.txt", "a-c", "b/z/y", "b/z.txt", "B"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    from trainwitness.data.records import list_files

    paths = [rel for rel, _ in list_files(tmp_path)]
    assert paths == sorted(paths, key=lambda p: p.encode("utf-8"))
    assert paths == ["B", "a-c", "a.txt", "a/b", "b/z.txt", "b/z/y"]
