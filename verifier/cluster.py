"""Audits over a cluster: each share of the draw replayed as a task of Dask distributed (``verify --cluster``).

The verifier process does what it does for ``--workers``: checks signature, statement, code,
commitments and weights itself, draws the segments from its own randomness, and splits them into
shares. Each share becomes one Dask task, which runs on whichever worker the scheduler picks the
same sandboxed replay worker as ``--workers`` (``sandbox.processes.replay_in_workers``: a confined
subprocess, JSON in, JSON out) and returns that JSON answer as text. The answers are parsed here
and merged and checked exactly as ``--workers`` merges them (``sandbox.merge.merge_worker_reports``).

A task that never answers (its worker died and the scheduler gave up on it, the scheduler went
away, the timeout passed) is *lost*: never a pass. If another share found the run false, the audit
is rejected all the same, the lost share named in a note; otherwise the audit is incomplete (exit
2, ``IncompleteAuditError``), naming the segments nobody checked. Retries are the scheduler's
business (``distributed.scheduler.allowed-failures``); an answer that does arrive came from a
complete replay, wherever it ran.

Dask moves tasks and results between client, scheduler and workers with pickle: the cluster must
be the auditor's own (Dask's own security model). The untrusted training code never runs in a Dask
worker's process, only in the sandboxed subprocess it starts, whose answer is JSON.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from trainwitness.commit.canonical import parse_json
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.verifier.sandbox.isolation import choose_isolation
from trainwitness.verifier.sandbox.processes import replay_in_workers
from trainwitness.verifier.sandbox.protocol import MAX_ANSWER_BYTES, SandboxError, WorkerAnswer, WorkerRequest

__all__ = ["LostTask", "replay_on_cluster", "run_share"]

DEFAULT_TIMEOUT_S = 4 * 3600.0


@dataclass(frozen=True)
class LostTask:
    """A share whose task gave no answer."""

    why: str


Outcome = WorkerAnswer | SandboxError | LostTask


def run_share(request_text: str, sandbox: str, loopback: bool) -> str:
    """A Dask task: replay one share in a sandboxed worker on this machine; the answer as JSON text.

    ``{"isolation": what was in force here, "answer": the worker's JSON}`` or ``{..., "sandbox_error": why}``.
    Never raises for what the replay found: that is in the answer.
    """
    isolation = choose_isolation(sandbox, workers=2)  # always a separate process, never the Dask worker's own
    if loopback:
        isolation = replace(isolation, loopback=True)
    request = WorkerRequest.from_json(parse_json(request_text.encode("utf-8", "surrogatepass"), "the cluster task's request"))
    outcome = replay_in_workers(isolation, [request])[0]
    reply: dict[str, Any] = {"isolation": isolation.describe()}
    if isinstance(outcome, SandboxError):
        reply["sandbox_error"] = str(outcome)
    else:
        reply["answer"] = outcome.to_json()
    return json.dumps(reply)


def _parse(text: object, k: int, notes: list[str]) -> WorkerAnswer | SandboxError:
    try:  # the one strict JSON reader: a remote machine's reply is untrusted bytes
        where = f"cluster task {k + 1}'s reply"
        reply = parse_json(text.encode("utf-8", "surrogatepass"), where, MAX_ANSWER_BYTES) if isinstance(text, str) else None
    except MalformedInputError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("isolation"), str):
        return SandboxError(f"cluster task {k + 1} returned no answer the verifier can read")
    note = f"cluster task: {reply['isolation']}"
    if note not in notes:
        notes.append(note)
    if "sandbox_error" in reply:
        return SandboxError(str(reply["sandbox_error"]))
    try:  # a remote worker's answer is as untrusted as a local one's
        return WorkerAnswer.from_json(reply.get("answer"), f"cluster task {k + 1}'s answer")
    except SandboxError as e:
        return e


def replay_on_cluster(
    address: str, sandbox: str, loopback: bool, requests: Sequence[WorkerRequest], notes: list[str],
    finished: Callable[[int, Outcome], None] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Outcome]:
    """One task per request on the Dask scheduler at ``address``; each outcome an answer, a SandboxError or LostTask.

    Raises ``MalformedInputError`` without Dask installed, ``MissingInputError`` when no scheduler answers.
    """
    try:
        from dask.distributed import Client, as_completed
    except ImportError as e:
        raise MalformedInputError("verify --cluster needs Dask distributed: pip install 'trainwitness[cluster]'") from e
    try:
        client = Client(address, timeout=30)  # type: ignore[no-untyped-call]  # as_completed finds it as the default client
    except (OSError, TimeoutError) as e:
        raise MissingInputError(f"--cluster {address}: no Dask scheduler answers there ({type(e).__name__}: {e})") from e
    outcomes: list[Outcome] = [LostTask("it never answered") for _ in requests]
    audit = secrets.token_hex(4)
    with client:
        futures = [
            client.submit(run_share, json.dumps(request.to_json()), sandbox, loopback, key=f"trainwitness-replay-{audit}-{k}", pure=False, retries=0)
            for k, request in enumerate(requests)
        ]
        share_of = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures, timeout=timeout):  # type: ignore[no-untyped-call]
                k = share_of[future.key]
                try:
                    outcomes[k] = _parse(future.result(), k, notes)
                except Exception as e:  # noqa: BLE001 - KilledWorker, CancelledError, a closed comm: the task is lost
                    outcomes[k] = LostTask(f"{type(e).__name__}: {e}")
                if finished is not None:
                    finished(k, outcomes[k])
        except TimeoutError:
            for k, outcome in enumerate(outcomes):
                if isinstance(outcome, LostTask):
                    outcomes[k] = LostTask(f"no answer within {timeout:.0f} s")
        finally:
            client.cancel(futures)  # type: ignore[no-untyped-call]
    return outcomes
