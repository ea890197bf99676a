"""Replaying a W-rank data-parallel run with W local processes over gloo (docs/DISTRIBUTED.md).

The replay of a W-rank run is bitwise only where its gradient reduction is reproduced: the same W
ranks summing in the same order, which gloo on loopback does for a run recorded over gloo on CPUs.
Here one process per rank replays the drawn segments on its shard, in a gloo group of its own
(rendezvous through a file in a fresh directory, traffic over the loopback; inside the sandbox, the
worker's own network namespace), through the very code path of recording: ``TrainingRun.run`` with
DDP doing the reduction. Each rank checks its own shards and RNG states and that it lands on every
next checkpoint; each answers the sandbox's JSON protocol, and the answers are merged here: the
replay passes only where every rank passed every check for every drawn segment. A rank that fails
stops the others (they would wait in the reduction for it) and is named.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwitness.commit.statement import TrainingClaim
from trainwitness.errors import CheckName, InputError, MalformedInputError, VerificationError
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox import (
    WORKER_CHECKS,
    Isolation,
    SandboxError,
    SandboxLimits,
    _answer,
    _kill,
    _start,
    merge_worker_report,
    worker_request,
)

if TYPE_CHECKING:
    from trainwitness.verifier.verify import VerifyOptions

__all__ = ["replay_ranks_locally", "merge_rank_reports"]

_RANK_CODE = "from trainwitness.verifier.ranks import _rank_worker; raise SystemExit(_rank_worker())"
# How long a rank waits for the others to join the group or the reduction (they are started together).
_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


def replay_ranks_locally(
    claim: TrainingClaim, store: Path, payload: bytes, options: VerifyOptions, drawn: Sequence[int], report: Report,
    start: dict[str, Any] | None = None,
) -> None:
    """Replay ``drawn`` with one process per rank (already inside the sandbox, or unconfined with it off).

    ``start`` (``verify.StartFiles.to_json``): where each rank reads a parent's files and frozen inputs.
    """
    if claim.distributed is None:
        raise ValueError("a run of one rank has no ranks to replay")
    world = claim.distributed.world_size
    isolation = Isolation("off", process=True, namespaces=False, limits=SandboxLimits())  # the sandbox's limits bind already
    with tempfile.TemporaryDirectory(prefix="trainwitness-ranks-") as rendezvous:
        base = worker_request(payload, store, options, drawn, options.threads, start)
        requests = [{**base, "rank": r, "world_size": world, "rendezvous": os.path.join(rendezvous, "group")} for r in range(world)]
        outcomes = _run_ranks(isolation, requests)
    merge_rank_reports(report, drawn, outcomes)


def _failed(outcome: dict[str, Any] | SandboxError) -> bool:
    if not isinstance(outcome, dict) or "report" not in outcome:
        return True
    checks = outcome["report"].get("checks", []) if isinstance(outcome["report"], dict) else []
    return not isinstance(checks, list) or any(not (isinstance(c, dict) and c.get("passed") is True) for c in checks)


def _run_ranks(isolation: Isolation, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any] | SandboxError | None]:
    """Every rank at once; the first to fail stops the rest (their outcome is None: stopped, not judged)."""
    outcomes: list[dict[str, Any] | SandboxError | None] = [None] * len(requests)
    stopped: set[int] = set()
    with contextlib.ExitStack() as scratches:
        children = []
        try:
            for _ in requests:
                children.append(_start(isolation, scratches.enter_context(tempfile.TemporaryDirectory(prefix="trainwitness-rank-")), _RANK_CODE))
            with ThreadPoolExecutor(len(children)) as pool:
                running = {pool.submit(_answer, isolation, child, request): k for k, (child, request) in enumerate(zip(children, requests, strict=True))}
                for future in as_completed(running):
                    k = running[future]
                    if k in stopped:
                        continue
                    outcome = future.result()
                    outcomes[k] = outcome
                    if _failed(outcome):
                        for j, child in enumerate(children):
                            if j != k and outcomes[j] is None:
                                stopped.add(j)
                                _kill(child)
        except BaseException:
            for child in children:
                _kill(child)
            raise
    return outcomes


def merge_rank_reports(report: Report, drawn: Sequence[int], outcomes: Sequence[dict[str, Any] | SandboxError | None]) -> None:
    """Fold every rank's answer into ``report``: each rank answers for every drawn segment, on its shard.

    A check passes only where it passed on every rank; a failure names its rank. A rank stopped
    because another failed first is noted, not judged.
    """
    world = len(outcomes)
    parts: list[tuple[int, Report]] = []
    for rank, outcome in enumerate(outcomes):
        if outcome is None:
            continue
        part = Report(attestation=report.attestation)
        try:
            if isinstance(outcome, SandboxError):
                raise outcome
            merge_worker_report(part, outcome, drawn)
        except SandboxError as e:
            part.failed(e.check, str(e))
        parts.append((rank, part))
    stopped = [r for r, outcome in enumerate(outcomes) if outcome is None]
    if not parts:
        report.failed(CheckName.REPLAY, f"none of the {world} rank processes answered")
        return
    names = list(dict.fromkeys(c.name for _, part in parts for c in part.checks))
    everyone = len(parts) == world
    for name in names:
        for rank, part in parts:
            report.checks.extend(replace(c, detail=f"rank {rank} of {world}: {c.detail}") for c in part.checks if c.name == name and not c.passed)
        passes = [(rank, c.detail) for rank, part in parts for c in part.checks if c.name == name and c.passed]
        if everyone and len(passes) == world:
            report.passed(name, f"{passes[0][1]} (on each of the {world} ranks, in {world} processes over gloo)")
    if stopped:
        report.notes.append(f"rank processes {', '.join(map(str, stopped))} were stopped after another rank failed")
    # A segment counts as replayed once every rank replayed it; its time is the slowest rank's.
    by_index: dict[int, list[Any]] = {}
    for _, part in parts:
        for s in part.segments:
            by_index.setdefault(s.index, []).append(s)
    report.segments = sorted(
        (max(found, key=lambda s: s.seconds) for found in by_index.values() if len(found) == world), key=lambda s: s.index
    )
    report.checkpoint_bytes_read = sum(part.checkpoint_bytes_read for _, part in parts)
    report.data_bytes_read = sum(part.data_bytes_read for _, part in parts)
    report.data_samples_read = sum(part.data_samples_read for _, part in parts)
    report.data_total_bytes = max(part.data_total_bytes for _, part in parts)
    for _, part in parts:
        report.notes.extend(n for n in part.notes if n not in report.notes)


# -- a rank process -----------------------------------------------------------------------------

def _rank_worker() -> int:
    """One rank of a local replay: join the gloo group, replay the drawn segments on this rank's shard, answer JSON."""
    import json

    import torch

    from trainwitness.commit.statement import Statement
    from trainwitness.verifier.evidence import Evidence
    from trainwitness.verifier.verify import StartFiles, VerifyOptions, _import_from, replay_drawn

    result_fd = os.dup(1)
    os.dup2(2, 1)  # the training code's prints go to stderr, never into the answer
    report = Report(attestation="")
    answer: dict[str, Any]
    try:
        request = json.loads(sys.stdin.read())
        options = VerifyOptions(
            segments=None, sandbox="off", data={name: Path(path) for name, path in request["data"].items()},
            code=None if request["code"] is None else Path(request["code"]), threads=request["threads"],
            bounded=request["bounded"], ranks="local",
        )
        claim = Statement.from_payload(request["statement"].encode("utf-8")).claim
        rank, world = int(request["rank"]), int(request["world_size"])
        if claim.distributed is None or claim.distributed.world_size != world:
            raise MalformedInputError("a rank process was asked to replay a run of another world size")
        if sys.platform.startswith("linux"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks meet on the loopback, whatever the hostname says
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{request['rendezvous']}", rank=rank, world_size=world, timeout=_GROUP_TIMEOUT
        )
        try:
            if options.code is not None:
                _import_from(options.code, claim.entry_point)
            evidence = Evidence.open(Path(request["store"]), claim)
            replay_drawn(
                claim, evidence, options, [int(i) for i in request["segments"]], report, rank=rank,
                start=StartFiles.from_json(request["start"]),
            )
        except VerificationError as e:
            report.failed(e.check, str(e))
        finally:
            torch.distributed.destroy_process_group()
        if report.accepted and [c.name for c in report.checks][-len(WORKER_CHECKS):] != list(WORKER_CHECKS):
            report.failed(CheckName.REPLAY, "the rank process did not run every check")
        answer = {"report": report.to_json()}
    except InputError as e:
        answer = {"input_error": str(e)}
    except Exception as e:  # noqa: BLE001 - the training code's own failure
        answer = {"code_error": f"{type(e).__name__}: {e}"}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(answer))
    return 0
