"""Parallel replay: the worker count changes neither the verdict nor which failure is reported."""

from __future__ import annotations

from trainwitness.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.state import FlatState
from trainwitness.store import find_checkpoint, read_index
from trainwitness.verifier import VerifyOptions, verify_run

from .conftest import RecordedRun


def _verify(run: RecordedRun, workers: int):
    return verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=None, workers=workers))


def test_worker_count_does_not_change_an_honest_report(digits_run: RecordedRun) -> None:
    one, two = _verify(digits_run, 1), _verify(digits_run, 2)
    assert one.accepted and two.accepted
    assert [(s.index, s.first_step, s.last_step) for s in two.segments] == [(s.index, s.first_step, s.last_step) for s in one.segments]
    assert two.checkpoint_bytes_read == one.checkpoint_bytes_read


def test_parallel_replay_reports_the_lowest_failing_segment_like_serial(digits_run: RecordedRun) -> None:
    steps = [c.step for c in read_index(digits_run.store).checkpoints]
    for i in (2, 4):  # two well-formed but altered checkpoints, replayed by different workers
        path = digits_run.store / find_checkpoint(digits_run.store, steps[i])
        flat = decode_checkpoint(path.read_bytes(), str(path))
        altered = {k: (v + 1e-3 if k.startswith("model/") else v) for k, v in flat.tensors.items()}
        path.write_bytes(encode_checkpoint(FlatState(altered, flat.skeleton), 3))
    two = _verify(digits_run, 2)
    assert not two.accepted
    failures = [c.detail for c in two.checks if not c.passed]
    # Segment 2 starts from the altered checkpoint 2 (0000000040), segment 4 from 4 (0000000080), on
    # different workers; serial replay stops at segment 2, and so must the parallel report.
    assert len(failures) == 1 and "0000000040" in failures[0] and "does not hash" in failures[0]
