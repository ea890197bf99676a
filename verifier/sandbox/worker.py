"""The replay worker's entry points: what runs inside the sandboxed process (``processes.WORKER_CODE``).

``main`` replays one share of the draw; ``rank_main`` is one rank of a local W-rank replay
(``ranks.py``). Each reads a ``WorkerRequest`` from stdin, starts at step (6) from the statement the
parent verified (parsed, its signature not checked again), and writes one ``WorkerAnswer`` to a
private copy of its stdout; whatever the training code prints goes to stderr. This module sits
above ``verify.py`` (it runs ``verify.replay_drawn``) and nothing in the verifier imports it.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from trainwitness.commit.canonical import parse_json
from trainwitness.commit.statement import Statement, TrainingClaim
from trainwitness.errors import CheckName, InputError, MalformedInputError, VerificationError
from trainwitness.verifier.evidence import Evidence
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox.protocol import WORKER_CHECKS, WorkerAnswer, WorkerReport, WorkerRequest
from trainwitness.verifier.verify import VerifyOptions, _import_from, replay_drawn

__all__ = ["main", "rank_main"]

MAX_REQUEST_BYTES = 1 << 28  # a request holds a statement and paths
# How long a rank waits for the others to join the group or the reduction (they are started together).
_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


def _options(request: WorkerRequest, *, ranks: str, device: str) -> VerifyOptions:
    return VerifyOptions(
        segments=None, sandbox="off", data={name: Path(path) for name, path in request.data.items()},
        code=None if request.code is None else Path(request.code), threads=request.threads, bounded=request.bounded,
        device=device, ranks=ranks,
    )


def _serve(replay: Callable[[WorkerRequest, TrainingClaim, Report], None]) -> int:
    """Read the request, run ``replay``, answer; the training code's failure is an answer, not a crash."""
    result_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the training code prints goes to stderr, never into the answer
    report = Report(attestation="")
    try:
        request = WorkerRequest.from_json(parse_json(sys.stdin.buffer.read(), "the replay request", MAX_REQUEST_BYTES))
        # The statement the parent verified (signature, invariants, code identity, weights): parsed, not re-checked.
        claim = Statement.from_payload(request.statement.encode("utf-8")).claim
        replay(request, claim, report)
        answer = WorkerAnswer(report=WorkerReport.of(report))
    except InputError as e:
        answer = WorkerAnswer(input_error=str(e))
    except Exception as e:  # noqa: BLE001 - the training code's own failure, e.g. a refused socket
        answer = WorkerAnswer(code_error=f"{type(e).__name__}: {e}")
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(answer.to_json()))
    return 0


def main() -> int:
    """One worker: replay the request's share, in this process."""

    def replay(request: WorkerRequest, claim: TrainingClaim, report: Report) -> None:
        options = _options(request, ranks=request.ranks, device=request.device)
        try:
            if options.code is not None:
                _import_from(options.code, claim.entry_point)
            evidence = Evidence.open(Path(request.store), claim)  # the trees the inclusion proofs need
            replay_drawn(
                claim, evidence, options, list(request.segments), report, payload=request.statement.encode("utf-8"), start=request.start,
            )
        except VerificationError as e:
            report.failed(e.check, str(e))

    return _serve(replay)


def rank_main() -> int:
    """One rank of a local replay: join the gloo group, replay the drawn segments on this rank's shard, answer."""

    def replay(request: WorkerRequest, claim: TrainingClaim, report: Report) -> None:
        import torch

        options = _options(request, ranks="local", device="cpu")  # gloo over the loopback: CPU ranks
        seat = request.seat
        if seat is None:
            raise MalformedInputError("a rank process was sent a request without its rank")
        if claim.distributed is None or claim.distributed.world_size != seat.world_size:
            raise MalformedInputError("a rank process was asked to replay a run of another world size")
        if sys.platform.startswith("linux"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks meet on the loopback, whatever the hostname says
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{seat.rendezvous}", rank=seat.rank, world_size=seat.world_size, timeout=_GROUP_TIMEOUT
        )
        try:
            if options.code is not None:
                _import_from(options.code, claim.entry_point)
            evidence = Evidence.open(Path(request.store), claim)
            replay_drawn(claim, evidence, options, list(request.segments), report, rank=seat.rank, start=request.start)
        except VerificationError as e:
            report.failed(e.check, str(e))
        finally:
            torch.distributed.destroy_process_group()
        if report.accepted and [c.name for c in report.checks][-len(WORKER_CHECKS):] != list(WORKER_CHECKS):
            report.failed(CheckName.REPLAY, "the rank process did not run every check")

    return _serve(replay)
