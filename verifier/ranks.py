"""Replaying a W-rank data-parallel run with W local processes over gloo (docs/DISTRIBUTED.md).

The replay of a W-rank run is bitwise only where its gradient reduction is reproduced: the same W
ranks summing in the same order, which gloo on loopback does for a run recorded over gloo on CPUs.
Here one process per rank replays the drawn segments on its shard, in a gloo group of its own
(rendezvous through a file in a fresh directory, traffic over the loopback; inside the sandbox, the
worker's own network namespace), through the very code path of recording: ``TrainingRun.run`` with
DDP doing the reduction. Each rank checks its own shards and RNG states and that it lands on every
next checkpoint; each answers the sandbox's JSON protocol (its entry point is
``sandbox.worker.rank_main``), and the answers are merged here: the
replay passes only where every rank passed every check for every drawn segment. A rank that fails
stops the others (they would wait in the reduction for it) and is named.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from trainwitness.commit.statement import TrainingClaim
from trainwitness.errors import CheckName
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox.isolation import Isolation, SandboxLimits
from trainwitness.verifier.sandbox.merge import answer_report
from trainwitness.verifier.sandbox.processes import answer_of, kill_worker, start_worker
from trainwitness.verifier.sandbox.protocol import RankSeat, SandboxError, WorkerAnswer, WorkerRequest

__all__ = ["replay_ranks_locally", "merge_rank_reports"]

RANK_CODE = "from trainwitness.verifier.sandbox.worker import rank_main; raise SystemExit(rank_main())"


def replay_ranks_locally(claim: TrainingClaim, request: WorkerRequest, report: Report) -> None:
    """Replay ``request.segments`` with one process per rank (already inside the sandbox, or unconfined with it off).

    ``request``: what every rank is sent (the verified statement, the paths, the drawn segments),
    each with its own ``RankSeat`` added.
    """
    if claim.distributed is None:
        raise ValueError("a run of one rank has no ranks to replay")
    world = claim.distributed.world_size
    isolation = Isolation("off", process=True, namespaces=False, limits=SandboxLimits())  # the sandbox's limits bind already
    with tempfile.TemporaryDirectory(prefix="trainwitness-ranks-") as rendezvous:
        requests = [replace(request, seat=RankSeat(r, world, os.path.join(rendezvous, "group"))) for r in range(world)]
        outcomes = _run_ranks(isolation, requests)
    merge_rank_reports(report, request.segments, outcomes)


def _failed(outcome: WorkerAnswer | SandboxError) -> bool:
    if isinstance(outcome, SandboxError) or outcome.report is None:
        return True
    return any(not c.passed for c in outcome.report.checks)


def _run_ranks(isolation: Isolation, requests: Sequence[WorkerRequest]) -> list[WorkerAnswer | SandboxError | None]:
    """Every rank at once; the first to fail stops the rest (their outcome is None: stopped, not judged)."""
    outcomes: list[WorkerAnswer | SandboxError | None] = [None] * len(requests)
    stopped: set[int] = set()
    with contextlib.ExitStack() as scratches:
        children = []
        try:
            for _ in requests:
                children.append(start_worker(isolation, scratches.enter_context(tempfile.TemporaryDirectory(prefix="trainwitness-rank-")), RANK_CODE))
            with ThreadPoolExecutor(len(children)) as pool:
                running = {pool.submit(answer_of, isolation, child, request): k for k, (child, request) in enumerate(zip(children, requests, strict=True))}
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
                                kill_worker(child)
        except BaseException:
            for child in children:
                kill_worker(child)
            raise
    return outcomes


def merge_rank_reports(report: Report, drawn: Sequence[int], outcomes: Sequence[WorkerAnswer | SandboxError | None]) -> None:
    """Fold every rank's answer into ``report``: each rank answers for every drawn segment, on its shard.

    A check passes only where it passed on every rank; a failure names its rank. A rank stopped
    because another failed first is noted, not judged.
    """
    world = len(outcomes)
    parts: list[tuple[int, Report]] = []
    for rank, outcome in enumerate(outcomes):
        if outcome is None:
            continue
        parts.append((rank, answer_report(report.attestation, outcome, drawn)))
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
