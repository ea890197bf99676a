"""Exit 2, naming the input and the flag that fixes it, for everything this machine's inputs cause;
REJECT (exit 1) only where the evidence contradicts the claim. Each failure is checked in the
verifier's own process before any replay wherever it can be, and is one line with and without the
sandbox, never "the training code failed" nor a traceback."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.store import INDEX_FILE
from trainwitness.identity.code import locate_source_root
from trainwitness.identity.signing import load_private_key
from trainwitness.run.rng import restore_rng
from trainwitness.tensors.state import state_digests
from trainwitness.verifier.draw import choose_segments

from ..support.forgery import (
    checkpoint_record,
    edit_payload,
    index_records,
    load_checkpoint,
    resign,
    write_checkpoint,
    write_index,
)
from ..support.runs import SHORT_DIGITS, RecordedRun, record_and_sign

SANDBOXES = ["off", "auto"]
SOURCE = "uci-digits"


def _exit_2_one_line(status: int, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert "Traceback" not in out + err and "training code failed" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainwitness: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _resign_with(run: RecordedRun, edit: Any) -> None:
    edit_payload(run.attestation, edit, load_private_key(run.private_key))


# -- A1: the auditor's settings ------------------------------------------------------------------------


def test_threads_other_than_recorded_are_refused_before_replay_naming_the_fix(digits_run: RecordedRun, capsys) -> None:
    # Recorded with 1 thread and no exact mode: 2 threads could only ever reject an honest run.
    _exit_2_one_line(
        main(digits_run.verify_args("--all", "--threads", "2", "--sandbox", "off")), capsys,
        "--threads 2: bitwise replay needs the recorded 1 thread: use --threads 1, --bounded, or a run recorded with --exact",
    )


def test_the_recorded_thread_count_or_bounded_mode_is_not_refused(digits_run: RecordedRun, capsys) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--threads", "1", "--sandbox", "off")) == 0
    assert main(digits_run.verify_args("--segments", "1", "--threads", "2", "--bounded", "--sandbox", "off")) == 0


# -- A2: this machine's data, files and memory ------------------------------------------------------------


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_data_given_as_a_directory_where_the_source_is_a_file_names_the_flag(
    digits_run: RecordedRun, tmp_path: Path, sandbox: str, capsys
) -> None:
    folder = tmp_path / "my-data"
    folder.mkdir()
    (folder / "digits.csv.gz").write_bytes(b"")
    line = _exit_2_one_line(
        main(digits_run.verify_args("--all", "--data", f"{SOURCE}={folder}", "--sandbox", sandbox)), capsys,
        f"--data {SOURCE}={folder}: source {SOURCE} is one file (declared format 'lines'); {folder} is a directory",
    )
    assert f"did you mean --data {SOURCE}={folder / 'digits.csv.gz'}?" in line


def test_data_naming_a_missing_path_is_refused_before_replay(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    _exit_2_one_line(
        main(digits_run.verify_args("--all", "--data", f"{SOURCE}={tmp_path / 'absent.csv'}")), capsys,
        f"--data {SOURCE}={tmp_path / 'absent.csv'}: {tmp_path / 'absent.csv'} does not exist",
    )


@pytest.fixture(scope="module")
def _two_sources(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    import os

    from ..support.specs.two_source_spec import write_data

    root = tmp_path_factory.mktemp("two-sources")
    write_data(root / "data")
    previous = os.environ.get("TRAINWITNESS_TEST_DATA")
    os.environ["TRAINWITNESS_TEST_DATA"] = str(root / "data")
    try:
        return record_and_sign(root / "run", "tests.support.specs.two_source_spec:two_sources", {})
    finally:
        if previous is None:
            del os.environ["TRAINWITNESS_TEST_DATA"]
        else:
            os.environ["TRAINWITNESS_TEST_DATA"] = previous


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_source_missing_here_names_the_source_and_the_data_flag(
    _two_sources: RecordedRun, tmp_path: Path, sandbox: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = _two_sources.copied_to(tmp_path / "run")
    monkeypatch.setenv("TRAINWITNESS_TEST_DATA", str(tmp_path / "nowhere"))  # the prover's copy is not on this machine
    _exit_2_one_line(
        main(run.verify_args("--all", "--sandbox", sandbox)), capsys,
        "data source points: ", "give your copy with --data points=PATH",
    )


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_file_the_training_code_reads_that_is_absent_here_is_named(tmp_path: Path, sandbox: str, capsys) -> None:
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("the training code's own file\n")
    run = record_and_sign(tmp_path / "run", "tests.support.specs.hostile_spec:hostile", {"attack": "read", "path": str(vocabulary)})
    assert main(run.verify_args("--all", "--sandbox", sandbox)) == 0
    capsys.readouterr()
    vocabulary.unlink()
    _exit_2_one_line(
        main(run.verify_args("--all", "--sandbox", sandbox)), capsys,
        f"the training code reads '{vocabulary}', which cannot be read here (No such file or directory)",
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"seed": 2**32}, ("hyperparameter 'seed'", "4294967296")),
        ({"data_seed": 2**63}, ("hyperparameter 'data_seed'", "9223372036854775808")),
        ({"batch_size": 1798}, ("hyperparameter 'batch_size'", "1798", "1797 samples")),
    ],
    ids=["seed", "data_seed", "batch_size"],
)
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_signed_core_hyperparameters_out_of_range_are_refused_before_replay(
    digits_run: RecordedRun, edit: dict[str, int], expected: tuple[str, ...], sandbox: str, capsys
) -> None:
    def out_of_range(statement: dict[str, Any]) -> None:
        statement["predicate"]["hyperparameters"].update(edit)
        sampler = statement["predicate"]["data"]["sampler"]  # kept consistent, as a forger would
        sampler["seed"], sampler["batch_size"] = statement["predicate"]["hyperparameters"]["data_seed"], statement["predicate"]["hyperparameters"]["batch_size"]

    _resign_with(digits_run, out_of_range)
    _exit_2_one_line(main(digits_run.verify_args("--all", "--sandbox", sandbox)), capsys, "attestation", *expected)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_signed_model_size_no_machine_can_hold_is_refused_not_crashed(digits_run: RecordedRun, sandbox: str, capsys) -> None:
    _resign_with(digits_run, lambda s: s["predicate"]["hyperparameters"].update(hidden=2**39))
    _exit_2_one_line(
        main(digits_run.verify_args("--all", "--sandbox", sandbox)), capsys,
        "the training code could not allocate the memory its signed hyperparameters ask for on this machine",
    )


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_malformed_manifest_is_read_by_the_verifier_itself_before_any_worker(digits_run: RecordedRun, sandbox: str, capsys) -> None:
    manifest = digits_run.store / "manifest.jsonl"
    lines = manifest.read_bytes().split(b"\n")
    lines[3] = b'{"digest": 1e400}'
    manifest.write_bytes(b"\n".join(lines))
    line = _exit_2_one_line(main(digits_run.verify_args("--all", "--sandbox", sandbox)), capsys, "sample line 3: the number 1e400 overflows a float")
    assert "sandbox" not in line


def _seed_drawing(segment: int, count: int) -> int:
    """A seed whose draw of one segment is ``segment`` (the last, ``count - 1``, is replayed on every draw)."""
    return next(seed for seed in range(10_000) if choose_segments(count, 1, seed) == [segment, count - 1])


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_committed_python_random_word_of_minus_one_is_refused_before_it_is_restored(
    digits_run: RecordedRun, sandbox: str, capsys
) -> None:
    # A forger with the key commits a checkpoint whose Python random state holds -1 (random.setstate
    # raises OverflowError for it): the restore is validated before anything is applied.
    flat = load_checkpoint(digits_run.store, 20)
    words = flat.tensors["rng/python_state"].clone()
    words[0] = -1
    forged = type(flat)({**flat.tensors, "rng/python_state": words}, flat.skeleton)
    write_checkpoint(digits_run.store, 20, forged)
    records = index_records(digits_run.store)
    digests = state_digests(forged)
    checkpoint_record(records, 1).update(weights_digest=digests.weights, rest_digest=digests.rest)
    write_index(digits_run.store, records)
    resign(digits_run)
    with pytest.raises(Exception, match="holds a word outside 0..2\\*\\*32-1"):
        restore_rng(type(flat)({k: v for k, v in forged.tensors.items() if k.startswith("rng/")}, forged.skeleton["rng"]))
    seed = _seed_drawing(1, 6)
    _exit_2_one_line(
        main(digits_run.verify_args("--segments", "1", "--seed", str(seed), "--sandbox", sandbox)), capsys,
        "RNG state: rng/python_state holds a word outside 0..2**32-1",
    )


# -- A3: the store and the code the auditor names ---------------------------------------------------------


def test_a_store_still_being_written_is_incomplete_not_rejected(digits_run: RecordedRun, capsys) -> None:
    index = digits_run.store / INDEX_FILE
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:50]))  # whole records: a prefix, as a running train leaves it
    _exit_2_one_line(
        main(digits_run.verify_args("--all", "--sandbox", "off")), capsys,
        f"store {digits_run.store} is incomplete: its index holds 47 of the 120 attested steps and 3 of 7 checkpoints",
    )


def test_a_store_of_another_run_is_named_as_such(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    other = record_and_sign(tmp_path / "other", overrides={**SHORT_DIGITS, "total_steps": 60})
    status = main(["verify", str(digits_run.attestation), "--store", str(other.store), "--weights", str(digits_run.weights),
                   "--key", str(digits_run.public_key), "--all", "--sandbox", "off"])
    _exit_2_one_line(status, capsys, f"store {other.store} holds another run than the attestation's: its run.json declares total_steps 60 (attested 120)")


def test_code_given_as_the_packages_parent_asks_did_you_mean(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    parent = tmp_path / "checkout"
    shutil.copytree(locate_source_root("trainwitness.workloads.digits:digits"), parent / "workloads",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _exit_2_one_line(
        main(digits_run.verify_args("--segments", "1", "--code", str(parent))), capsys,
        f"did you mean --code {parent / 'workloads'}?",
    )


def test_a_store_given_as_a_tarball_is_named_an_archive(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "store.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(digits_run.store, arcname="store")
    line = _exit_2_one_line(
        main(["verify", str(digits_run.attestation), "--store", str(archive), "--weights", str(digits_run.weights),
              "--key", str(digits_run.public_key)]), capsys,
        f"store {archive} is a file, not a store directory (--store): it looks like an archive; unpack it",
    )
    assert "symlink" not in line


def test_an_allocation_failure_of_the_auditors_machine_is_not_a_verdict() -> None:
    from trainwitness.verifier.verify import _is_allocation_failure

    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)
    assert _is_allocation_failure(caught.value)
    assert not _is_allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
