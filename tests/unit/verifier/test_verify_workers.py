"""``verify --workers W``: the parent draws, W worker processes replay a share each, the parent merges their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainwitness.cli import main
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import FlatState
from trainwitness.verifier import VerifyOptions, verify, verify_run
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox import (
    WORKER_CHECKS,
    SandboxError,
    SandboxLimits,
    WorkerAnswer,
    WorkerRequest,
    choose_isolation,
    merge_worker_report,
    processes,
    protocol,
    split_shares,
    worker_threads,
)

from ...support.forgers import Run, load_checkpoint, replace_checkpoints, sign
from ...support.runs import RecordedRun


def _verify(run: RecordedRun, **options: object) -> Report:
    return verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(**options))  # type: ignore[arg-type]


def _replayed(report: Report) -> list[int]:
    return [s.index for s in report.segments]


def test_two_workers_accept_an_honest_run_and_report_every_drawn_segment_once(digits_run: RecordedRun) -> None:
    report = _verify(digits_run, segments=None, workers=2, sandbox="auto")
    assert report.accepted, report.to_text()
    assert report.sampled == list(range(6)) and _replayed(report) == list(range(6))
    assert any("replay split over 2 worker processes" in note for note in report.notes)
    assert [c.name for c in report.checks][-len(WORKER_CHECKS):] == list(WORKER_CHECKS)


def test_workers_replay_exactly_the_segments_drawn_with_the_same_seed_at_one_worker(digits_run: RecordedRun) -> None:
    alone = _verify(digits_run, segments=3, seed=11, sandbox="off")
    shared = _verify(digits_run, segments=3, seed=11, sandbox="off", workers=2)
    assert alone.accepted and shared.accepted
    assert shared.sampled == alone.sampled and _replayed(shared) == _replayed(alone) == alone.sampled
    assert len(alone.sampled) == 4 and alone.sampled[-1] == 5  # 3 drawn, and the last segment on every draw
    assert alone.sampled[:3] != list(range(3))  # a real draw, not the first three
    # In-process replay passes exactly the checks a worker must answer with: the protocol and the code agree.
    assert [c.name for c in alone.checks][-len(WORKER_CHECKS):] == list(WORKER_CHECKS)


def test_two_workers_reject_a_forged_checkpoint_in_the_second_workers_share(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = split_shares(list(range(6)), 2)
    assert 3 in second and 3 not in first
    forged = Run.at(digits_run.root)
    honest = load_checkpoint(forged, 4)
    tensors = {n: (t + 1e-3).contiguous() if n.startswith("model/") and t.is_floating_point() else t for n, t in honest.tensors.items()}
    replace_checkpoints(forged, {4: FlatState(tensors, honest.skeleton)})  # segment 3 now lands elsewhere
    sign(forged)
    assert main(digits_run.verify_args("--all", "--workers", "2", "--sandbox", "off")) == 1
    out = capsys.readouterr().out
    assert "[FAIL] replay: replay worker 2 of 2 (segments 3, 4, 5): segment 3 (steps 60->80)" in out
    assert "[ok] replay: replay worker 1 of 2 (segments 0, 1, 2): 3 sampled segments replay bitwise" in out


# Stand-ins for a worker that runs hostile or broken code: the parent must name each, never raise.
_ALL_PASSED_NO_SEGMENTS = (
    "import json, sys; sys.stdin.read(); print(json.dumps({'report': {'checks': "
    f"[{{'name': n, 'passed': True, 'detail': 'trust me'}} for n in {[str(n) for n in WORKER_CHECKS]!r}], 'segments': {{'replayed': []}}}}}}))"
)
MISBEHAVING_WORKERS = {
    "exits": ("import os; os._exit(3)", "died (status 3"),
    "is killed": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "died (signal 9"),
    "answers garbage": ("print('{\"report\": ')", "output is not JSON"),
    "answers a list": ("print('[1, 2]')", "not a JSON object"),
    "skips its share": (_ALL_PASSED_NO_SEGMENTS, "lacks segments"),
}


@pytest.mark.parametrize("behaviour", sorted(MISBEHAVING_WORKERS))
def test_a_misbehaving_worker_is_a_named_failure_not_a_traceback(
    behaviour: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, reason = MISBEHAVING_WORKERS[behaviour]
    monkeypatch.setattr(processes, "WORKER_CODE", code)
    status = main(digits_run.verify_args("--all", "--workers", "2", "--sandbox", "off"))
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err + captured.out
    assert "trainwitness verify: REJECT" in captured.out
    for who in ("replay worker 1 of 2 (segments 0, 1, 2)", "replay worker 2 of 2 (segments 3, 4, 5)"):
        assert f"[FAIL] sandbox: {who}: " in captured.out and reason in captured.out


def test_a_worker_past_its_wall_clock_limit_is_killed_and_named(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "WORKER_CODE", "import time; time.sleep(60)")
    choose = choose_isolation
    monkeypatch.setattr(verify, "choose_isolation", lambda mode, workers: choose(mode, SandboxLimits(wall_seconds=1), workers))
    assert main(digits_run.verify_args("--segments", "2", "--workers", "2", "--sandbox", "off")) == 1
    assert "past the 1 s wall-clock limit and was killed" in capsys.readouterr().out


def test_a_worker_flooding_its_pipes_is_cut_off_and_named(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # stderr: only a tail is kept; stdout: the answer is bounded, and the worker killed past the bound.
    monkeypatch.setattr(protocol, "MAX_ANSWER_BYTES", 1 << 20)
    monkeypatch.setattr(
        processes, "WORKER_CODE",
        "import sys; sys.stdin.read(); sys.stderr.write('noise ' * 2_000_000 + '\\nlast words'); sys.stderr.flush(); "
        "sys.stdout.write('x' * (8 << 20)); sys.stdout.flush()",
    )
    assert main(digits_run.verify_args("--segments", "2", "--workers", "2", "--sandbox", "off")) == 1
    assert "more than 1048576 bytes of answer and was killed" in capsys.readouterr().out


def test_a_worker_whose_descendant_keeps_its_pipes_open_is_given_up_soon_after_it_ends(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grandchild leaves the worker's process group, so killing the group does not close the pipes.
    monkeypatch.setattr(
        processes, "WORKER_CODE",
        "import subprocess, sys; sys.stdin.read(); subprocess.Popen(['sleep', '20'], start_new_session=True)",
    )
    assert main(digits_run.verify_args("--segments", "2", "--workers", "2", "--sandbox", "off")) == 1
    assert "a process it started outside its group kept its output open" in capsys.readouterr().out


def _answer(segments: list[int], checks: tuple[str, ...] = WORKER_CHECKS, failed: str | None = None) -> dict:
    listed = [{"name": n, "passed": True, "detail": "x"} for n in checks]
    if failed is not None:
        listed.append({"name": failed, "passed": False, "detail": "it differs"})
    replayed = [{"index": i, "steps": [2 * i, 2 * i + 2], "seconds": 0.1} for i in segments]
    return {"report": {"checks": listed, "segments": {"replayed": replayed}}}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_answer([1, 2]), "lacks segments 3"),
        (_answer([1, 2, 3, 4]), "answered for segments 1, 2, 3, 4"),
        (_answer([1, 2, 2, 3]), "answered for segments 1, 2, 2, 3"),
        (_answer([1, 2, 3], checks=WORKER_CHECKS[:-1]), "lacks the checks replay"),
    ],
)
def test_worker_answer_that_does_not_account_for_its_share_fails(answer: dict, reason: str) -> None:
    with pytest.raises(SandboxError, match=reason):
        merge_worker_report(Report(attestation="a"), WorkerAnswer.from_json(answer), [1, 2, 3])


def test_worker_answer_with_a_failure_may_stop_early_and_its_failure_is_kept() -> None:
    report = Report(attestation="a")
    merge_worker_report(report, WorkerAnswer.from_json(_answer([1], checks=("manifest",), failed="replay")), [1, 2, 3])
    assert not report.accepted and [c.name for c in report.checks if not c.passed] == ["replay"]


def test_worker_pass_counts_only_for_the_checks_it_was_asked_to_do() -> None:
    report = Report(attestation="a")
    merge_worker_report(report, WorkerAnswer.from_json(_answer([1], checks=(*WORKER_CHECKS, "signature"))), [1])
    assert [c.name for c in report.checks] == list(WORKER_CHECKS)


@given(drawn=st.lists(st.integers(0, 10**6), min_size=1, max_size=60, unique=True).map(sorted), workers=st.integers(1, 16))
def test_shares_cover_the_draw_once_in_order_and_none_is_empty(drawn: list[int], workers: int) -> None:
    shares = split_shares(drawn, workers)
    assert [i for share in shares for i in share] == drawn
    assert len(shares) == min(workers, len(drawn)) and all(shares)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_worker_threads_share_the_cores_only_where_replay_stays_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_cpus", lambda: 8)
    assert worker_threads(recorded=4, exact=True, chosen=None, workers=2) == 4
    assert worker_threads(recorded=1, exact=True, chosen=None, workers=3) == 2
    assert worker_threads(recorded=4, exact=False, chosen=None, workers=2) is None  # the recorded count
    assert worker_threads(recorded=4, exact=True, chosen=1, workers=2) == 1  # the auditor's choice
    assert worker_threads(recorded=4, exact=True, chosen=None, workers=1) is None  # as in-process


def test_worker_request_carries_the_verified_statement_and_not_the_inputs_the_parent_checked(tmp_path: Path) -> None:
    options = VerifyOptions()
    typed = WorkerRequest.for_share(
        b'{"a": 1}', tmp_path / "store", options.data, options.code, [3, 5], None, bounded=options.bounded, device=options.device,
        ranks=options.ranks,
    )
    request = typed.to_json()
    assert request["statement"] == '{"a": 1}' and request["segments"] == [3, 5]
    assert not {"weights", "public_key", "attestation", "seed", "policy"} & set(request)
    assert WorkerRequest.from_json(json.loads(json.dumps(request))) == typed  # JSON, nothing else, crosses to the worker


def test_workers_below_one_is_refused_as_input_not_as_a_verdict(digits_run: RecordedRun) -> None:
    with pytest.raises(MalformedInputError, match="--workers"):
        _verify(digits_run, workers=0)
