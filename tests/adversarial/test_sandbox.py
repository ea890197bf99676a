"""Replay runs the upstream's code in a confined worker: no network, no writes outside its scratch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import strategies as st

from trainwitness.cli import main
from trainwitness.errors import MalformedInputError
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox import WorkerAnswer, choose_isolation, merge_worker_report

from ..support.fuzzing import expect_ours, fuzz, json_values
from ..support.runs import record_and_sign

HOSTILE = "tests.support.specs.hostile_spec:hostile"
needs_namespaces = pytest.mark.skipif(
    not choose_isolation("auto").namespaces, reason="user namespaces (unshare -rnm) are not available here"
)


def _verify(run, capsys: pytest.CaptureFixture[str], sandbox: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    status = main(run.verify_args("--all", "--sandbox", sandbox))
    return status, capsys.readouterr().out


@needs_namespaces
def test_replay_that_opens_a_socket_fails_under_the_sandbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # stands in for the outside world
        port = listener.getsockname()[1]
        run = record_and_sign(tmp_path, HOSTILE, {"attack": "network", "port": port})
        status, out = _verify(run, capsys, "off")
        assert status == 0  # unconfined, the code reached the network: the replay itself is honest
        status, out = _verify(run, capsys, "required")
    assert status == 1
    assert "[FAIL] sandbox" in out and "no network" in out
    assert "unreachable" in out.lower() or "refused" in out.lower() or "OSError" in out


@needs_namespaces
@pytest.mark.parametrize("attack", ["write", "remount-write"])
def test_replay_that_writes_outside_its_scratch_fails_under_the_sandbox(
    attack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "planted.txt"
    run = record_and_sign(tmp_path / "run", HOSTILE, {"attack": attack, "path": str(target)})
    target.unlink()  # written while training (the prover is not sandboxed); gone before the audit
    status, out = _verify(run, capsys, "auto")
    assert status == 1
    assert "[FAIL] sandbox" in out and "Read-only file system" in out
    assert "filesystem read-only except a scratch directory" in out
    assert not target.exists()


def test_honest_spec_verifies_in_the_sandbox_and_the_report_says_what_isolation_was_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = record_and_sign(tmp_path, HOSTILE, {})
    status, out = _verify(run, capsys, "auto")
    assert status == 0
    assert "note: sandbox: training code replayed in a separate process" in out
    status, out = _verify(run, capsys, "off")
    assert status == 0 and "note: sandbox off" in out


def test_unknown_sandbox_mode_is_refused() -> None:
    with pytest.raises(MalformedInputError):
        choose_isolation("maybe")


def _worker_answer(answer: dict) -> None:  # type: ignore[type-arg]
    expect_ours(lambda a: merge_worker_report(Report(attestation="a"), WorkerAnswer.from_json(a), [0]), answer, statuses=(1, 2))


_ANSWERS = (
    st.dictionaries(st.sampled_from(["report", "input_error", "code_error", "x"]), json_values, max_size=3)
    | st.fixed_dictionaries({"report": st.dictionaries(st.sampled_from(["checks", "segments", "notes", "checkpoint_bytes_read"]), json_values)})
)
test_malformed_worker_answer_is_a_failed_check_not_a_traceback, test_malformed_worker_answer_thoroughly = fuzz(answer=_ANSWERS)(_worker_answer)
