"""Audits over a cluster: replay shares as Dask tasks, and the plain sharded form for batch systems."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.errors import IncompleteAuditError
from trainwitness.tensors.state import FlatState
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.report import Report

from ..support.forgers import Run, load_checkpoint, replace_checkpoints, sign
from ..support.runs import RecordedRun

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

START_TIMEOUT_S = 60


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *command], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def dask_cluster(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A scheduler and one worker (no nanny: killing it is final) on loopback; the scheduler gives up on a task
    whose worker dies (allowed-failures 0). Yields (address, worker process); both stop when the test ends."""
    scheduler_file = tmp / "scheduler.json"
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)], env)
    worker = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = _start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard"], env)
        from distributed import Client

        with Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=START_TIMEOUT_S)
        yield address, worker
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)


def _verify(run: RecordedRun, **options: object) -> Report:
    return verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(**options))  # type: ignore[arg-type]


def _summary(report: Report) -> tuple[str, list[tuple[str, bool]], list[int], list[int]]:
    return report.verdict, [(c.name, c.passed) for c in report.checks], report.sampled, [s.index for s in report.segments]


def test_an_audit_on_a_dask_cluster_gives_the_verdict_of_one_worker(digits_run: RecordedRun, tmp_path: Path) -> None:
    with dask_cluster(tmp_path) as (address, _):
        on_cluster = _verify(digits_run, segments=4, seed=5, workers=2, cluster=address)
    alone = _verify(digits_run, segments=4, seed=5, workers=1)
    assert on_cluster.accepted, on_cluster.to_text()
    assert _summary(on_cluster)[0] == _summary(alone)[0] == "ACCEPT"
    assert [name for name, _ in _summary(on_cluster)[1]] == [name for name, _ in _summary(alone)[1]]
    assert _summary(on_cluster)[2:] == _summary(alone)[2:] and len(on_cluster.segments) == 5  # 4 drawn and the last
    assert any(f"2 tasks on the Dask cluster at {address}" in note for note in on_cluster.notes)
    assert any(note.startswith("cluster task: sandbox") for note in on_cluster.notes)


def test_a_forgery_is_rejected_on_the_cluster_as_by_one_worker(digits_run: RecordedRun, tmp_path: Path) -> None:
    forged = Run.at(digits_run.root)
    honest = load_checkpoint(forged, 3)
    tensors = {n: (t + 1e-3).contiguous() if n.startswith("model/") and t.is_floating_point() else t for n, t in honest.tensors.items()}
    replace_checkpoints(forged, {3: FlatState(tensors, honest.skeleton)})  # segment 2 now lands elsewhere
    sign(forged)
    with dask_cluster(tmp_path) as (address, _):
        on_cluster = _verify(digits_run, segments=None, workers=1, cluster=address)
    assert on_cluster.verdict == "REJECT"  # as --workers rejects it (test_verify_workers)
    failed = [c.detail for c in on_cluster.checks if not c.passed]
    assert failed and "segment 2 (steps 40->60)" in failed[0]


def test_killing_the_worker_mid_audit_is_a_named_failure_never_a_pass(digits_run: RecordedRun, tmp_path: Path) -> None:
    from distributed import Client

    outcome: list[object] = []
    with dask_cluster(tmp_path) as (address, worker):

        def audit() -> None:
            try:
                outcome.append(_verify(digits_run, segments=None, workers=1, cluster=address))
            except Exception as e:  # noqa: BLE001 - the test inspects it
                outcome.append(e)

        thread = threading.Thread(target=audit)
        thread.start()
        with Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert any(client.processing().values()), "the replay task never started"
        worker.send_signal(signal.SIGKILL)  # mid-audit: the task is on the worker
        thread.join(START_TIMEOUT_S * 3)
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, IncompleteAuditError), error
    assert "the replay of segments 0, 1, 2, 3, 4, 5 was lost on the Dask cluster" in str(error)
    assert "KilledWorker" in str(error) and "nothing was accepted" in str(error)


def test_shard_requests_answered_separately_merge_into_the_verdict(digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = tmp_path / "shards"
    args = digits_run.verify_args("--segments", "3", "--workers", "2")
    assert main([*args, "--shard-requests", str(shards)]) == 0
    assert "NO VERDICT" in capsys.readouterr().out
    plan = json.loads((shards / "plan.json").read_text())
    assert [len(share) for share in plan["shares"]] == [2, 2]  # 3 drawn and the last
    # Nothing is accepted while an answer is missing.
    assert main(["replay-shard", str(shards / "request-000.json"), "--out", str(shards / "answer-000.json")]) == 0
    assert main([*args, "--shard-answers", str(shards)]) == 2
    assert "segments " + ", ".join(map(str, plan["shares"][1])) + " was lost" in capsys.readouterr().err
    # An answer to another request (here: share 0's, copied) fails its share.
    (shards / "answer-001.json").write_bytes((shards / "answer-000.json").read_bytes())
    assert main([*args, "--shard-answers", str(shards)]) == 1
    assert "answers another request than request-001.json" in capsys.readouterr().out
    assert main(["replay-shard", str(shards / "request-001.json"), "--out", str(shards / "answer-001.json")]) == 0
    capsys.readouterr()
    assert main([*args, "--shard-answers", str(shards)]) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and f"replayed 4 of 6 segments (the last, always, and 3 drawn from the auditor's seed {plan['seed']})" in out
    # A plan whose draw is not the verifier's for its seed is refused.
    other = sorted(set(range(6)) - set(plan["drawn"]))  # 3 of 6 segments, never the real draw
    plan["drawn"], plan["shares"] = other, [other[:2], other[2:]]
    (shards / "plan.json").write_text(json.dumps(plan))
    assert main([*args, "--shard-answers", str(shards)]) == 2
    assert "is not the verifier's draw" in capsys.readouterr().err
