"""The replay worker protocol (``verifier/sandbox/protocol.py``): typed both ways, strict on what it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainwitness.errors import CheckName, MalformedInputError
from trainwitness.verifier.bounded import SegmentDistance
from trainwitness.verifier.replay import SegmentResult
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox import (
    WORKER_CHECKS,
    SandboxError,
    StartFiles,
    WorkerAnswer,
    WorkerReport,
    WorkerRequest,
)
from trainwitness.verifier.sandbox.protocol import RankSeat


def _request(tmp_path: Path) -> WorkerRequest:
    return WorkerRequest.for_share(
        b'{"a": 1}', tmp_path / "store", {"digits": tmp_path / "d"}, tmp_path / "code", [2, 4], 3, bounded=True, device="cpu",
        ranks="local", start=StartFiles(parent_weights=tmp_path / "p.safetensors", inputs={"teacher": tmp_path / "t"}),
    )


def test_a_request_round_trips_through_json_with_and_without_a_rank_seat(tmp_path: Path) -> None:
    request = _request(tmp_path)
    assert WorkerRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
    seated = WorkerRequest(**{**vars(request), "seat": RankSeat(1, 2, str(tmp_path / "group"))})
    wire = seated.to_json()
    assert (wire["rank"], wire["world_size"]) == (1, 2)
    assert WorkerRequest.from_json(json.loads(json.dumps(wire))) == seated


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.pop("store"), "lacks the field 'store'"),
        (lambda r: r.update(segments=["1"]), "other than integers"),
        (lambda r: r.update(bounded=1), "'bounded' is int"),
        (lambda r: r.update(threads=True), "'threads' is bool"),
        (lambda r: r.update(extra=0), "unknown fields 'extra'"),
        (lambda r: r.update(rank=0), "rank, world_size and rendezvous together"),
        (lambda r: r["start"].update(inputs={"t": 3}), "other than strings"),
    ],
)
def test_a_malformed_request_is_an_input_error_naming_the_field(tmp_path: Path, change: Any, reason: str) -> None:
    wire = _request(tmp_path).to_json()
    change(wire)
    with pytest.raises(MalformedInputError, match=reason):
        WorkerRequest.from_json(wire, "the replay request")


def test_a_workers_report_round_trips_and_keeps_what_the_parent_reads() -> None:
    report = Report(attestation="a", notes=["n"], checkpoint_bytes_read=10, data_bytes_read=5, data_samples_read=2, data_total_bytes=9)
    for name in WORKER_CHECKS:
        report.passed(name, "fine")
    report.segments = [SegmentResult(3, 60, 80, 0.25), SegmentResult(4, 80, 100, 0.5, SegmentDistance(1e-7, "model/w", 2e-7))]
    answer = WorkerAnswer(report=WorkerReport.of(report))
    back = WorkerAnswer.from_json(json.loads(json.dumps(answer.to_json())))
    assert back == answer
    # The same fields, in the same shape, as the full report's JSON.
    full = report.to_json()
    wire = answer.to_json()["report"]
    assert wire["checks"] == full["checks"] and wire["segments"]["replayed"] == full["segments"]["replayed"]  # type: ignore[index]


def _answer(**report: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"checks": [{"name": "replay", "passed": True, "detail": "x"}], "segments": {"replayed": []}}
    return {"report": {**base, **report}}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_answer(checks=[{"name": "replay", "passed": "yes", "detail": "x"}]), "'passed' is str"),  # "yes" is no pass
        (_answer(checks=[{"name": "replay", "passed": 1, "detail": "x"}]), "'passed' is int"),
        (_answer(checks=[{"name": "no-such-check", "passed": False, "detail": "x"}]), "no check is named"),
        (_answer(checkpoint_bytes_read=-1), "negative"),
        (_answer(data={"bytes_read": 1.5}), "'bytes_read' is float"),
        (_answer(verdict="ACCEPT"), "unknown fields 'verdict'"),
        (_answer(segments={"replayed": [{"index": 0, "steps": [0], "seconds": 0}]}), r"not \[first, last\]"),
        ({"report": _answer()["report"], "code_error": "x"}, "not exactly one"),
        ({"input_error": 3}, "'input_error' is int"),
        ([], "not a JSON object"),
    ],
)
def test_an_untrusted_answer_of_the_wrong_shape_is_a_failed_sandbox_check(answer: Any, reason: str) -> None:
    with pytest.raises(SandboxError, match=reason) as caught:
        WorkerAnswer.from_json(answer)
    assert caught.value.check == CheckName.SANDBOX
