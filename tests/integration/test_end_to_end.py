"""The whole product path on a real workload: record, attest, verify."""

from __future__ import annotations

from trainwitness.cli import main

from ..support.runs import RecordedRun


def test_honest_run_verifies_bitwise_on_every_segment(digits_run: RecordedRun, capsys) -> None:
    assert main(digits_run.verify_args("--all")) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out
    assert "replayed 6 of 6 segments" in out
