"""Crash safety: a run killed mid-way resumes from its last intact checkpoint and ends bit-identical."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trainwitness
from trainwitness.cli import main
from trainwitness.commit.store import INDEX_FILE, checkpoint_relpath, read_index
from trainwitness.errors import MalformedInputError
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store, record_run

from ..support.forgery import resign
from ..support.runs import DIGITS, SHORT_DIGITS, RecordedRun

TRAIN_TIMEOUT_S = 300


def _cut_after_step(store: Path, step: int, torn: bytes) -> None:
    """What a crash during step ``step + 1`` leaves: records up to ``step``, then half a line."""
    lines = (store / INDEX_FILE).read_bytes().splitlines(keepends=True)
    last = next(i for i, line in enumerate(lines) if line.startswith(b'{"batch_digest"') and f'"step":{step}}}'.encode() in line)
    (store / INDEX_FILE).write_bytes(b"".join(lines[: last + 1]) + torn)


def _checkpoint_records(store: Path) -> int:
    try:
        return (store / INDEX_FILE).read_bytes().count(b'"kind":"checkpoint"')
    except FileNotFoundError:
        return 0


def test_torn_index_tail_is_dropped_on_resume_and_the_run_ends_identical(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    honest_index = (digits_run.store / INDEX_FILE).read_bytes()
    honest_weights = digits_run.weights.read_bytes()
    digits_run.weights.unlink()
    _cut_after_step(digits_run.store, 70, torn=b'{"batch_digest":"sha256:12')
    # The checkpoint at step 80 was written but its record was not: resume must not trust it either.
    with pytest.raises(MalformedInputError, match="unfinished record"):
        read_index(digits_run.store)
    assert read_index(digits_run.store, allow_torn_tail=True).torn_tail_bytes == len(b'{"batch_digest":"sha256:12')

    run = record_run(DIGITS, SHORT_DIGITS, digits_run.store, digits_run.weights, torch_threads=1)

    assert run.resumed_from_step == 60
    assert (digits_run.store / INDEX_FILE).read_bytes() == honest_index
    assert digits_run.weights.read_bytes() == honest_weights
    resign(digits_run)
    assert main(digits_run.verify_args("--all")) == 0
    assert "ACCEPT" in capsys.readouterr().out


def test_resume_skips_a_checkpoint_whose_file_is_damaged(digits_run: RecordedRun) -> None:
    honest_weights = digits_run.weights.read_bytes()
    _cut_after_step(digits_run.store, 119, torn=b"")  # every step done, the last checkpoint not recorded
    damaged = digits_run.store / checkpoint_relpath(100, compressed=True)
    damaged.write_bytes(damaged.read_bytes()[:1000])

    run = record_run(DIGITS, SHORT_DIGITS, digits_run.store, digits_run.weights, torch_threads=1)

    assert run.resumed_from_step == 80
    assert digits_run.weights.read_bytes() == honest_weights


def test_resume_refuses_a_store_of_a_different_run(digits_run: RecordedRun) -> None:
    with pytest.raises(MalformedInputError, match="holds a different run"):
        record_run(DIGITS, {**SHORT_DIGITS, "lr": 0.01}, digits_run.store, digits_run.weights, torch_threads=1)


def test_record_refuses_a_non_empty_directory_without_run_json(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "stray").write_text("x")
    with pytest.raises(MalformedInputError, match="not empty"):
        record_run(DIGITS, SHORT_DIGITS, tmp_path / "store", tmp_path / "w.safetensors")


def test_training_killed_by_sigkill_resumes_and_verifies(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real process, killed hard after two checkpoints, then run again with the same command."""
    store, weights = tmp_path / "store", tmp_path / "model.safetensors"
    command = [
        sys.executable, "-m", "trainwitness", "train", DIGITS, "--store", str(store), "--weights", str(weights),
        *(f"--set={name}={value}" for name, value in SHORT_DIGITS.items()),
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(trainwitness.__file__).parents[1]))

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    try:
        while _checkpoint_records(store) < 2:
            assert first.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "training wrote no second checkpoint in time"
            time.sleep(0.001)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    killed_at = _checkpoint_records(store)
    assert 2 <= killed_at < 7, killed_at
    assert not weights.exists()
    shutil.copy(digits_run.private_key, tmp_path / "k.key")
    with pytest.raises(MalformedInputError, match="incomplete"):  # what a crash leaves cannot be attested
        attest_store(store, weights, load_private_key(tmp_path / "k.key"))

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
    assert second.returncode == 0, second.stderr
    assert "resumed from the checkpoint at step" in second.stdout

    # An uninterrupted run of the same command (the shared fixture) ended in the very same bytes.
    assert weights.read_bytes() == digits_run.weights.read_bytes()
    assert (store / INDEX_FILE).read_bytes() == (digits_run.store / INDEX_FILE).read_bytes()
    resumed = RecordedRun(tmp_path, store, weights, tmp_path / "attestation.json", tmp_path / "k.key", digits_run.public_key)
    resign(resumed)
    assert main(resumed.verify_args("--all")) == 0
    assert "ACCEPT" in capsys.readouterr().out
