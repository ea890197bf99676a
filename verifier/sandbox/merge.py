"""Merging the replay workers' answers into the verifier's report: the parent decides the verdict.

Nothing a worker answers can turn a failure into a pass: an answer that is missing, says the
machine lacks an input, reports a failure, or does not account for every segment of its share
(with every check of steps (6)-(8) passed) fails here. A pass counts only for a check the worker
was asked to do (``protocol.WORKER_CHECKS``).
"""

from __future__ import annotations

from collections.abc import Sequence

from trainwitness.errors import CheckName, MalformedInputError
from trainwitness.verifier.report import Check, Report
from trainwitness.verifier.sandbox.protocol import WORKER_CHECKS, SandboxError, WorkerAnswer

__all__ = ["merge_worker_reports", "merge_worker_report", "answer_report", "describe_share"]

_SHARE_CHECKS = (CheckName.DATA, CheckName.REPLAY)  # their details describe one worker's share, so each worker's is kept


def answer_report(attestation: str, outcome: WorkerAnswer | SandboxError, segments: Sequence[int]) -> Report:
    """One worker's (or rank process's) answer as a report of its own: its checks, or the failure it ended in."""
    part = Report(attestation=attestation)
    try:
        if isinstance(outcome, SandboxError):
            raise outcome
        merge_worker_report(part, outcome, segments)
    except SandboxError as e:
        part.failed(e.check, str(e))
    return part


def merge_worker_reports(report: Report, shares: Sequence[Sequence[int]], outcomes: Sequence[WorkerAnswer | SandboxError]) -> None:
    """Fold every worker's answer into the parent's report: a failure in any of them is a failure here.

    With several workers a failure names the worker and its share; a passed check is listed once,
    with each worker's detail where they differ or describe its share.
    """
    many = len(shares) > 1
    parts: list[tuple[str, Report]] = []
    for k, (share, outcome) in enumerate(zip(shares, outcomes, strict=True)):
        who = f"replay worker {k + 1} of {len(shares)} (segments {describe_share(share)})" if many else ""
        parts.append((who, answer_report(report.attestation, outcome, share)))
    names = list(dict.fromkeys(c.name for _, part in parts for c in part.checks))
    for name in names:
        for who, part in parts:
            report.checks.extend(
                Check(name, False, f"{who}: {c.detail}" if who else c.detail) for c in part.checks if c.name == name and not c.passed
            )
        passes = [(who, c.detail) for who, part in parts for c in part.checks if c.name == name and c.passed]
        if passes:
            details = {detail for _, detail in passes}
            shared = len(details) == 1 and (not many or name not in _SHARE_CHECKS)
            report.passed(name, passes[0][1] if shared else "; ".join(f"{who}: {detail}" for who, detail in passes))
    report.segments = sorted((s for _, part in parts for s in part.segments), key=lambda s: s.index)
    report.checkpoint_bytes_read = sum(part.checkpoint_bytes_read for _, part in parts)
    report.data_bytes_read = sum(part.data_bytes_read for _, part in parts)
    report.data_samples_read = sum(part.data_samples_read for _, part in parts)
    report.data_total_bytes = max(part.data_total_bytes for _, part in parts)
    for _, part in parts:
        report.notes.extend(n for n in part.notes if n not in report.notes)


def describe_share(share: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in share[:6])
    return shown + (f" and {len(share) - 6} more" if len(share) > 6 else "")


def merge_worker_report(report: Report, answer: WorkerAnswer, share: Sequence[int]) -> None:
    """Read one worker's answer for its ``share`` into ``report`` (a fresh one); its failures become ours.

    The worker ran untrusted code, which could have written anything to the result: an answer
    (already typed by ``WorkerAnswer.from_json``) that does not account for its share is a failed
    check (``SandboxError``), never a traceback. An ``input_error`` answer raises ``MalformedInputError``.
    """
    _merge(report, answer)
    replayed = [s.index for s in report.segments]
    if len(set(replayed)) != len(replayed) or not set(replayed) <= set(share):
        raise SandboxError(f"the replay worker answered for segments {describe_share(replayed)}, its share is {describe_share(list(share))}")
    if all(c.passed for c in report.checks):  # it found nothing wrong: then it must have done everything
        passed = {c.name for c in report.checks}
        missing = [name for name in WORKER_CHECKS if name not in passed]
        if missing:
            raise SandboxError(f"the replay worker's answer lacks the checks {', '.join(missing)}")
        unreplayed = [i for i in share if i not in set(replayed)]
        if unreplayed:
            raise SandboxError(f"the replay worker's answer lacks segments {describe_share(unreplayed)} of its share")


def _merge(report: Report, answer: WorkerAnswer) -> None:
    if answer.input_error is not None:
        raise MalformedInputError(f"in the sandboxed replay: {answer.input_error}")
    if answer.code_error is not None:
        raise SandboxError(f"the training code failed inside the sandbox: {answer.code_error}")
    worker = answer.report
    if worker is None:  # WorkerAnswer holds one of the three
        raise SandboxError("the replay worker returned no report")
    # A pass counts only for a check the worker was asked to do.
    report.checks.extend(c for c in worker.checks if not c.passed or c.name in WORKER_CHECKS)
    report.segments = list(worker.segments)
    report.checkpoint_bytes_read = worker.checkpoint_bytes_read
    report.data_bytes_read = worker.data_bytes_read
    report.data_samples_read = worker.data_samples_read
    report.data_total_bytes = worker.data_total_bytes
    report.notes.extend(worker.notes)
