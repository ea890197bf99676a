"""Declared data at verification: only the samples replay needs, from the auditor's copy, each proven."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json
from trainwitness.errors import NotReplayableError
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store
from trainwitness.run.sampler import ShuffledEpochSampler
from trainwitness.verifier.data_access import CheckedRecords
from trainwitness.workloads.digits import digits_csv_path

from ...support.runs import RecordedRun, record_and_sign

SOURCE = "uci-digits"


def _digits_lines() -> list[bytes]:
    return gzip.decompress(digits_csv_path().read_bytes()).split(b"\n")[:-1]


def _auditor_copy(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    return path


def _first_batch() -> list[int]:
    return ShuffledEpochSampler(num_samples=1797, batch_size=32, seed=1).batch_ids(0)


def _forge_step_ids(run: RecordedRun, step: int, ids: list[int]) -> None:
    """A forger rewrites one step's committed sample ids and re-signs with the prover's key."""
    index = run.store / "index.jsonl"
    lines = index.read_bytes().split(b"\n")
    for n, line in enumerate(lines):
        if line:
            record = json.loads(line)
            if record["kind"] == "step" and record["step"] == step:
                record["sample_ids"] = ids
                lines[n] = canonical_json(record)
    index.write_bytes(b"\n".join(lines))
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), replay_check=False, allow_local_uri=True))


def test_digits_verifies_bitwise_from_an_auditor_copy_and_reports_bytes_read(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    copy = _auditor_copy(tmp_path / "elsewhere.csv.gz", _digits_lines())
    report_path = tmp_path / "report.json"
    args = digits_run.verify_args("--segments", "1", "--seed", "3", "--data", f"{SOURCE}={copy}", "--json", str(report_path))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "data read:" in out
    data = json.loads(report_path.read_text())["data"]
    assert data["total_bytes"] == sum(len(line) for line in _digits_lines())
    assert 0 < data["bytes_read"] < data["total_bytes"]  # two segments (one drawn, the last) do not read the whole dataset
    assert data["samples_read"] <= 2 * 20 * 32


def test_verify_rejects_a_changed_sample_naming_it(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    lines = _digits_lines()
    changed = _first_batch()[0]
    lines[changed] = lines[changed].replace(b"0,", b"1,", 1)
    copy = _auditor_copy(tmp_path / "changed.csv.gz", lines)
    assert main(digits_run.verify_args("--all", "--data", f"{SOURCE}={copy}")) == 1
    out = capsys.readouterr().out
    assert f"source {SOURCE}: differ from the manifest: sample ids {changed}" in out
    assert "REJECT" in out


def test_verify_rejects_missing_samples_naming_them(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    lines = _digits_lines()
    dropped = max(_first_batch())
    copy = _auditor_copy(tmp_path / "short.csv.gz", lines[:dropped])
    assert main(digits_run.verify_args("--all", "--data", f"{SOURCE}={copy}")) == 1
    out = capsys.readouterr().out
    assert f"source {SOURCE}: missing from {copy}: sample ids {dropped}" in out
    assert "no data is substituted" in out


def test_verify_rejects_a_reordered_batch(digits_run: RecordedRun, capsys) -> None:
    ids = ShuffledEpochSampler(num_samples=1797, batch_size=32, seed=1).batch_ids(5)
    swapped = [ids[1], ids[0], *ids[2:]]
    _forge_step_ids(digits_run, 5, swapped)
    assert main(digits_run.verify_args("--segments", "1")) == 1
    out = capsys.readouterr().out
    assert f"step 5: the committed batch reorders sample ids {ids[1]}, {ids[0]}" in out


def test_verify_rejects_a_batch_with_a_sample_from_outside_the_dataset(digits_run: RecordedRun, capsys) -> None:
    ids = ShuffledEpochSampler(num_samples=1797, batch_size=32, seed=1).batch_ids(7)
    _forge_step_ids(digits_run, 7, [*ids[:-1], 5000])
    assert main(digits_run.verify_args("--segments", "1")) == 1
    out = capsys.readouterr().out
    assert "step 7: the committed batch holds sample ids 5000 from outside the dataset of 1797" in out


def test_verify_rejects_a_forged_manifest_file(digits_run: RecordedRun, capsys) -> None:
    manifest = digits_run.store / "manifest.jsonl"
    lines = manifest.read_bytes().split(b"\n")
    entry = json.loads(lines[5])
    entry["digest"] = "sha256:" + "0" * 64
    lines[5] = canonical_json(entry)
    manifest.write_bytes(b"\n".join(lines))
    assert main(digits_run.verify_args("--segments", "1")) == 1
    assert "does not hash to the signed manifest root" in capsys.readouterr().out


def test_verify_refuses_data_for_an_undeclared_source(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--data", f"imagenet={tmp_path}")) == 2
    assert "imagenet" in capsys.readouterr().err


def test_recording_refuses_augmentation_from_an_uncommitted_generator(tmp_path: Path) -> None:
    with pytest.raises(NotReplayableError, match=r"step 0: the step drew from a torch.Generator created at .*uncommitted_rng_spec.py:\d+"):
        record_and_sign(tmp_path / "noisy", "tests.support.specs.uncommitted_rng_spec:noisy_digits", {"total_steps": 20, "checkpoint_interval": 10})


def test_two_sources_verify_from_auditor_copies_and_a_missing_file_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    from ...support.specs.two_source_spec import write_data

    prover_data = tmp_path / "prover-data"
    prover_data.mkdir()
    write_data(prover_data)
    monkeypatch.setenv("TRAINWITNESS_TEST_DATA", str(prover_data))
    run = record_and_sign(tmp_path / "run", "tests.support.specs.two_source_spec:two_sources", {})
    manifest = json.loads((run.store / "manifest.jsonl").read_bytes().split(b"\n")[0])
    assert [(s["name"], s["format"], s["num_samples"]) for s in manifest["sources"]] == [("points", "files", 24), ("extra", "npy-rows", 16)]

    auditor = tmp_path / "auditor"
    shutil.copytree(prover_data, auditor)
    monkeypatch.setenv("TRAINWITNESS_TEST_DATA", str(tmp_path / "nowhere"))  # only --data can find the data now
    data = ["--data", f"points={auditor / 'points'}", "--data", f"extra={auditor / 'extra.npy'}"]
    assert main(run.verify_args("--all", *data)) == 0
    assert "ACCEPT" in capsys.readouterr().out

    used = sorted({i for step in range(10) for i in ShuffledEpochSampler(40, 8, 3).batch_ids(step)})
    gone = next(i for i in used if i < 24)
    (auditor / "points" / "a" / f"{gone:03d}.txt").unlink()  # a later file moves up: every id from here on differs
    assert main(run.verify_args("--all", *data)) == 1
    out = capsys.readouterr().out
    assert f"source points: missing from {auditor / 'points'}: sample ids 23" in out
    assert f"differ from the manifest: sample ids {gone} (file number {gone + 1} in points), " in out


def test_an_uncompressed_auditor_copy_verifies_because_records_not_files_are_proven(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    plain = tmp_path / "digits.csv"
    plain.write_bytes(gzip.decompress(digits_csv_path().read_bytes()))
    assert main(digits_run.verify_args("--segments", "1", "--seed", "0", "--data", f"{SOURCE}={plain}")) == 0
    assert "ACCEPT" in capsys.readouterr().out


def test_a_dataset_built_at_import_still_reads_only_proven_records(tmp_path: Path, capsys) -> None:
    run = record_and_sign(tmp_path / "early", "tests.support.specs.early_dataset_spec:early_digits", {"total_steps": 4, "checkpoint_interval": 2})
    lines = _digits_lines()
    changed = _first_batch()[3]
    lines[changed] = lines[changed].replace(b"0,", b"2,", 1)
    copy = _auditor_copy(tmp_path / "changed.csv.gz", lines)
    # In-process replay, so that the module-level dataset can be inspected here afterwards.
    assert main(run.verify_args("--all", "--data", f"{SOURCE}={copy}", "--sandbox", "off")) == 1
    assert f"differ from the manifest: sample ids {changed}" in capsys.readouterr().out
    from ...support.specs.early_dataset_spec import DATASET

    assert isinstance(DATASET.access, CheckedRecords)  # replay reads the proven records, not the local copy
