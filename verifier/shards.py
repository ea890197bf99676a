"""Audits on batch systems (Slurm arrays, CI matrices): one request file per share, answered anywhere, merged here.

``verify ... --shard-requests DIR`` does everything ``verify`` does up to the draw, then writes
``DIR/plan.json`` and one ``DIR/request-KKK.json`` per share (K = 0, 1, ...), and gives no verdict.
``trainwitness replay-shard DIR/request-KKK.json --out DIR/answer-KKK.json`` runs the same
sandboxed replay worker as ``--workers`` on that share, on any machine that sees the store and the
data (paths can be overridden there), and writes its JSON answer bound to the request's SHA-256.
``verify ... --shard-answers DIR`` checks signature, code, commitments and weights again, checks
that the plan is for this very statement and that its draw is what the verifier's draw function
gives for the plan's seed, then merges the answers exactly as ``--workers`` merges its workers'.
An answer for another request, a malformed one, or one that does not account for its share fails
its check; a missing answer leaves the audit incomplete (exit 2), never passed.

The plan is the auditor's own file (like the seed of a ``--seed`` audit): it is checked for
consistency, not authenticated. The request files hold absolute paths as the coordinator saw them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.store import atomic_write
from trainwitness.errors import MalformedInputError
from trainwitness.verifier.cluster import LostTask
from trainwitness.verifier.draw import choose_segments
from trainwitness.verifier.sandbox.isolation import choose_isolation
from trainwitness.verifier.sandbox.processes import replay_in_workers, split_shares
from trainwitness.verifier.sandbox.protocol import SandboxError, WorkerAnswer, WorkerRequest

__all__ = ["PLAN_FILE", "ShardPlan", "write_requests", "read_plan", "read_answers", "answer_request", "request_name", "answer_name"]

PLAN_FILE = "plan.json"
PLAN_FORMAT = "trainwitness-shard-plan/v1"
REQUEST_FORMAT = "trainwitness-shard-request/v1"
ANSWER_FORMAT = "trainwitness-shard-answer/v1"
MAX_FILE_BYTES = 1 << 28  # an answer is bounded by the sandbox's 64 MiB; a request holds a statement


def request_name(k: int) -> str:
    return f"request-{k:03d}.json"


def answer_name(k: int) -> str:
    return f"answer-{k:03d}.json"


def _read(path: Path, what: str) -> bytes:
    return read_untrusted(path, f"{what} {path}", MAX_FILE_BYTES, follow_symlinks=True)  # as the auditor laid the directory out


@dataclass(frozen=True)
class ShardPlan:
    """What the coordinator drew and how it split it (``DIR/plan.json``)."""

    payload_sha256: str
    segment_count: int
    segments: int | None  # how many were asked for (None: all)
    seed: int
    drawn: list[int]
    shares: list[list[int]]
    request_sha256: list[str]
    options: dict[str, Any]  # bounded, ranks, threads, sandbox, device: the settings the requests were made with

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT, "payload_sha256": self.payload_sha256, "segment_count": self.segment_count,
            "segments": self.segments, "seed": self.seed, "drawn": self.drawn, "shares": self.shares,
            "request_sha256": self.request_sha256, "options": self.options,
        }


def write_requests(
    directory: Path, payload: bytes, requests: Sequence[WorkerRequest], shares: list[list[int]], drawn: list[int],
    segment_count: int, segments: int | None, seed: int, options: dict[str, Any], loopback: bool,
) -> ShardPlan:
    """Write one request per share and the plan; refuses a directory that already holds a plan."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / PLAN_FILE).exists():
        raise MalformedInputError(f"{directory} already holds a {PLAN_FILE}; use a new directory for a new audit")
    digests = []
    for k, request in enumerate(requests):
        data = canonical_json({"format": REQUEST_FORMAT, "share": k, "sandbox": options["sandbox"], "loopback": loopback, "request": request.to_json()})
        atomic_write(directory / request_name(k), data + b"\n")
        digests.append(hashlib.sha256(data + b"\n").hexdigest())
    plan = ShardPlan(hashlib.sha256(payload).hexdigest(), segment_count, segments, seed, drawn, shares, digests, options)
    atomic_write(directory / PLAN_FILE, canonical_json(plan.to_json()) + b"\n")
    return plan


def read_plan(directory: Path, payload: bytes, segment_count: int) -> ShardPlan:
    """The plan, checked against the statement just verified and against the verifier's own draw function."""
    where = f"{directory}/{PLAN_FILE}"
    obj = parse_json(_read(directory / PLAN_FILE, "shard plan"), where)
    try:
        if not isinstance(obj, dict) or obj["format"] != PLAN_FORMAT:
            raise MalformedInputError(f"{where} is not a {PLAN_FORMAT} plan")
        plan = ShardPlan(
            str(obj["payload_sha256"]), int(obj["segment_count"]), None if obj["segments"] is None else int(obj["segments"]),
            int(obj["seed"]), [int(i) for i in obj["drawn"]], [[int(i) for i in share] for share in obj["shares"]],
            [str(d) for d in obj["request_sha256"]], dict(obj["options"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedInputError(f"{where} is malformed ({type(e).__name__}: {e})") from e
    if plan.payload_sha256 != hashlib.sha256(payload).hexdigest():
        raise MalformedInputError(f"{where} was made for another attestation")
    if plan.segment_count != segment_count or plan.drawn != choose_segments(segment_count, plan.segments, plan.seed):
        raise MalformedInputError(f"{where}: its draw is not the verifier's draw for its seed {plan.seed}")
    if not plan.shares or plan.shares != split_shares(plan.drawn, len(plan.shares)) or len(plan.request_sha256) != len(plan.shares):
        raise MalformedInputError(f"{where}: its shares are not the draw split {len(plan.shares)} ways")
    return plan


def read_answers(directory: Path, plan: ShardPlan, notes: list[str]) -> list[WorkerAnswer | SandboxError | LostTask]:
    """Each share's answer (``DIR/answer-KKK.json``): the worker's answer, a SandboxError, or LostTask when absent."""
    outcomes: list[WorkerAnswer | SandboxError | LostTask] = []
    for k, expected in enumerate(plan.request_sha256):
        path = directory / answer_name(k)
        if not path.exists():
            outcomes.append(LostTask(f"{path} is missing"))
            continue
        obj = parse_json(_read(path, "shard answer"), str(path))
        if not isinstance(obj, dict) or obj.get("format") != ANSWER_FORMAT:
            outcomes.append(SandboxError(f"{path} is not a {ANSWER_FORMAT} answer"))
        elif obj.get("request_sha256") != expected:
            outcomes.append(SandboxError(f"{path} answers another request than {request_name(k)} of this plan"))
        elif "sandbox_error" in obj:
            outcomes.append(SandboxError(str(obj["sandbox_error"])))
        elif not isinstance(obj.get("answer"), dict):
            outcomes.append(SandboxError(f"{path} holds no answer"))
        else:
            try:  # written by whoever ran the share: as untrusted as a worker's answer
                outcomes.append(WorkerAnswer.from_json(obj["answer"], f"{path} answer"))
            except SandboxError as e:
                outcomes.append(e)
        if isinstance(obj, dict) and isinstance(obj.get("isolation"), str):
            note = f"shard {k}: {obj['isolation']}"
            notes.append(note)
    return outcomes


def answer_request(request_path: Path, out: Path, store: Path | None, data: dict[str, Path], code: Path | None) -> dict[str, Any]:
    """``replay-shard``: replay one share in a sandboxed worker here; write the answer file; return it.

    ``store``, ``data`` and ``code`` replace the coordinator's paths (where this machine sees them elsewhere).
    """
    raw = _read(request_path, "shard request")
    obj = parse_json(raw, str(request_path))
    if not isinstance(obj, dict) or obj.get("format") != REQUEST_FORMAT or not isinstance(obj.get("request"), dict):
        raise MalformedInputError(f"{request_path} is not a {REQUEST_FORMAT} request")
    request = WorkerRequest.from_json(obj["request"], f"{request_path} request")
    if store is not None:
        request = replace(request, store=os.path.abspath(store))
    if data:
        request = replace(request, data={**request.data, **{name: os.path.abspath(path) for name, path in data.items()}})
    if code is not None:
        request = replace(request, code=os.path.abspath(code))
    isolation = choose_isolation(str(obj.get("sandbox", "auto")), workers=2)  # always a separate, sandboxed process
    if obj.get("loopback") is True:
        isolation = replace(isolation, loopback=True)
    outcome = replay_in_workers(isolation, [request])[0]
    answer: dict[str, Any] = {"format": ANSWER_FORMAT, "request_sha256": hashlib.sha256(raw).hexdigest(), "isolation": isolation.describe()}
    if isinstance(outcome, SandboxError):
        answer["sandbox_error"] = str(outcome)
    else:
        answer["answer"] = outcome.to_json()
    atomic_write(out, canonical_json(answer) + b"\n")
    return answer
