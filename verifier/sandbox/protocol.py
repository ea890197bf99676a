"""The replay worker protocol (docs/FORMAT.md, "Replay worker protocol"): one request, one answer, JSON.

The parent writes a ``WorkerRequest`` on the worker's stdin; the worker writes a ``WorkerAnswer`` on
a private copy of its stdout. No pickle crosses the pipes. Both are frozen and built from JSON only
through ``from_json``, which checks every field's type and refuses unknown ones:

* a request is the verifier's own (or a shard request file the auditor kept): a malformed one is a
  ``MalformedInputError`` (exit 2) naming where it came from;
* an answer comes from a process that ran the upstream's code, which could have written anything:
  a malformed one is a ``SandboxError``, a failed ``sandbox`` check, never a traceback and never a pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.json_fields import is_int, is_kind
from trainwitness.errors import CheckName, MalformedInputError, VerificationError
from trainwitness.verifier.bounded import SegmentDistance
from trainwitness.verifier.replay import SegmentResult
from trainwitness.verifier.report import Check, Report

__all__ = [
    "MAX_ANSWER_BYTES",
    "WORKER_CHECKS",
    "SandboxError",
    "StartFiles",
    "RankSeat",
    "WorkerRequest",
    "WorkerReport",
    "WorkerAnswer",
]

MAX_ANSWER_BYTES = 64 * 1024**2  # a worker's JSON answer; far more than any real one
# The checks of steps (6)-(8), in order: a worker that found nothing wrong must have passed every one.
WORKER_CHECKS = (CheckName.MANIFEST, CheckName.BATCHES, CheckName.INITIAL_STATE, CheckName.DATA, CheckName.REPLAY)


class SandboxError(VerificationError):
    """The training code could not be replayed inside the sandbox (it broke a confinement or a limit),
    or its worker answered out of protocol."""

    check: CheckName = CheckName.SANDBOX


# -- strict field readers: ``error(message)`` builds the exception of the side reading ------------

class _Fields:
    """One JSON object's fields, read once each; ``done()`` refuses any left unread."""

    def __init__(self, obj: object, where: str, error: type[Exception]) -> None:
        if not isinstance(obj, dict):
            raise error(f"{where} is not a JSON object")
        self.obj, self.where, self.error, self.read = obj, where, error, set[str]()

    def fail(self, what: str) -> Exception:
        return self.error(f"{self.where}: {what}")

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False, default: Any = None) -> Any:
        self.read.add(name)
        if name not in self.obj:
            if optional:
                return default
            raise self.fail(f"lacks the field {name!r}")
        value = self.obj[name]
        if not is_kind(value, kind):  # the project's one type rule for untrusted JSON (a bool is no int)
            raise self.fail(f"{name!r} is {type(value).__name__}, not {_kind_name(kind)}")
        return value

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.obj if k not in self.read)
        if unknown:
            raise self.fail(f"unknown fields {', '.join(repr(k) for k in unknown[:5])}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}.get(k, "null") for k in kinds)


def _ints(values: list[Any], f: _Fields, name: str) -> tuple[int, ...]:
    if not all(is_int(v) for v in values):
        raise f.fail(f"{name!r} holds something other than integers")
    return tuple(values)


def _strings(values: dict[str, Any], f: _Fields, name: str) -> dict[str, str]:
    if not all(isinstance(v, str) for v in values.values()):
        raise f.fail(f"{name!r} holds something other than strings")
    return dict(values)


# -- the request ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StartFiles:
    """Where replay reads a link's start and frozen inputs; every file is checked against a signed digest."""

    parent_weights: Path | None = None  # finetune: the parent's final weights file
    parent_store: Path | None = None  # continue: the parent's store, whose last checkpoint is its final state
    inputs: Mapping[str, Path] = field(default_factory=dict)  # frozen input name -> weights file

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "parent_weights": None if self.parent_weights is None else os.path.abspath(self.parent_weights),
            "parent_store": None if self.parent_store is None else os.path.abspath(self.parent_store),
            "inputs": {name: os.path.abspath(path) for name, path in self.inputs.items()},
        }

    @classmethod
    def from_json(cls, obj: object, where: str = "the replay request's start") -> StartFiles:
        """Raises ``MalformedInputError`` for anything but ``{"parent_weights", "parent_store", "inputs"}`` of paths."""
        f = _Fields(obj, where, MalformedInputError)
        weights, store = f.get("parent_weights", (str, type(None))), f.get("parent_store", (str, type(None)))
        inputs = _strings(f.get("inputs", dict), f, "inputs")
        f.done()
        return cls(
            parent_weights=None if weights is None else Path(weights), parent_store=None if store is None else Path(store),
            inputs={name: Path(path) for name, path in inputs.items()},
        )


@dataclass(frozen=True)
class RankSeat:
    """A rank process's place in a local W-rank replay (``ranks.py``): its rank and where the group meets."""

    rank: int
    world_size: int
    rendezvous: str  # a file in a fresh directory (gloo's file:// rendezvous)


@dataclass(frozen=True)
class WorkerRequest:
    """One worker's request: the verified statement, absolute paths (it runs in its scratch directory), its share.

    The licence policy, the weights and the public key were dealt with by the parent: not sent.
    ``start``: the parent's and the frozen inputs' files, which the worker checks against the
    statement's digests before the start is formed from them.
    """

    statement: str  # the payload whose signature the parent verified, byte for byte
    store: str
    data: Mapping[str, str]  # source name -> the auditor's copy
    code: str | None  # --code, or None
    threads: int | None  # torch threads; None: the recorded count
    bounded: bool
    device: str
    segments: tuple[int, ...]  # this worker's share
    ranks: str  # a data-parallel run: how its ranks replay (decided by the parent)
    start: StartFiles = StartFiles()
    seat: RankSeat | None = None  # a rank process of a local W-rank replay

    @classmethod
    def for_share(
        cls, payload: bytes, store: Path | str, data: Mapping[str, Path | str], code: Path | None, share: Sequence[int],
        threads: int | None, *, bounded: bool, device: str, ranks: str, start: StartFiles | None = None,
    ) -> WorkerRequest:
        """The request for ``share``, every path made absolute."""
        return cls(
            statement=payload.decode("utf-8"), store=os.path.abspath(store),
            data={name: os.path.abspath(path) for name, path in data.items()},
            code=None if code is None else os.path.abspath(code), threads=threads, bounded=bounded, device=device,
            segments=tuple(int(i) for i in share), ranks=ranks, start=start if start is not None else StartFiles(),
        )

    def to_json(self) -> dict[str, JSONValue]:
        seat: dict[str, JSONValue] = {} if self.seat is None else {
            "rank": self.seat.rank, "world_size": self.seat.world_size, "rendezvous": self.seat.rendezvous,
        }
        return {
            "statement": self.statement,
            "store": self.store,
            "data": dict(self.data),
            "code": self.code,
            "threads": self.threads,
            "bounded": self.bounded,
            "device": self.device,
            "segments": list(self.segments),
            "ranks": self.ranks,
            "start": self.start.to_json(),
            **seat,
        }

    @classmethod
    def from_json(cls, obj: object, where: str = "the replay request") -> WorkerRequest:
        """Raises ``MalformedInputError`` naming ``where`` for a missing, mistyped or unknown field."""
        f = _Fields(obj, where, MalformedInputError)
        request = cls(
            statement=f.get("statement", str), store=f.get("store", str), data=_strings(f.get("data", dict), f, "data"),
            code=f.get("code", (str, type(None))), threads=f.get("threads", (int, type(None))), bounded=f.get("bounded", bool),
            device=f.get("device", str), segments=_ints(f.get("segments", list), f, "segments"), ranks=f.get("ranks", str),
            start=StartFiles.from_json(f.get("start", dict), f"{where} start"),
        )
        seat = [f.get(name, kind, optional=True) for name, kind in (("rank", int), ("world_size", int), ("rendezvous", str))]
        f.done()
        if any(v is not None for v in seat):
            if any(v is None for v in seat):
                raise f.fail("a rank process's request needs rank, world_size and rendezvous together")
            request = replace(request, seat=RankSeat(seat[0], seat[1], seat[2]))
        return request


# -- the answer -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerReport:
    """What the parent reads of a worker's report of steps (6)-(8) on its share."""

    checks: tuple[Check, ...]
    segments: tuple[SegmentResult, ...]  # the segments it replayed
    checkpoint_bytes_read: int = 0
    data_bytes_read: int = 0
    data_samples_read: int = 0
    data_total_bytes: int = 0
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, report: Report) -> WorkerReport:
        return cls(
            tuple(report.checks), tuple(report.segments), report.checkpoint_bytes_read, report.data_bytes_read,
            report.data_samples_read, report.data_total_bytes, tuple(report.notes),
        )

    def to_json(self) -> dict[str, JSONValue]:
        """The fields of ``Report.to_json`` that the parent reads, in the same shape."""
        return {
            "checks": [{"name": str(c.name), "passed": c.passed, "detail": c.detail} for c in self.checks],
            "segments": {"replayed": [
                {
                    "index": s.index, "steps": [s.first_step, s.last_step], "seconds": round(s.seconds, 4),
                    **({"distance": vars(s.distance)} if s.distance is not None else {}),
                }
                for s in self.segments
            ]},
            "checkpoint_bytes_read": self.checkpoint_bytes_read,
            "data": {"bytes_read": self.data_bytes_read, "samples_read": self.data_samples_read, "total_bytes": self.data_total_bytes},
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, obj: object, where: str) -> WorkerReport:
        """Raises ``SandboxError`` for a missing, mistyped or unknown field (the worker is untrusted)."""
        f = _Fields(obj, where, SandboxError)
        checks = tuple(_check(c, f"{where} check {k}") for k, c in enumerate(f.get("checks", list)))
        segments_f = _Fields(f.get("segments", dict), f"{where} segments", SandboxError)
        replayed = tuple(_segment(s, f"{where} segment {k}") for k, s in enumerate(segments_f.get("replayed", list)))
        segments_f.done()
        read = f.get("checkpoint_bytes_read", int, optional=True, default=0)
        data_f = _Fields(f.get("data", dict, optional=True, default={}), f"{where} data", SandboxError)
        data = [data_f.get(name, int, optional=True, default=0) for name in ("bytes_read", "samples_read", "total_bytes")]
        data_f.done()
        notes = f.get("notes", list, optional=True, default=[])
        if not all(isinstance(n, str) for n in notes):
            raise f.fail("'notes' holds something other than strings")
        f.done()
        if min(read, *data) < 0:
            raise f.fail("a byte or sample count is negative")
        return cls(checks, replayed, read, data[0], data[1], data[2], tuple(notes))


def _check(obj: object, where: str) -> Check:
    f = _Fields(obj, where, SandboxError)
    name, passed, detail = f.get("name", str), f.get("passed", bool), f.get("detail", str)
    f.done()
    try:
        return Check(CheckName(name), passed, detail)
    except ValueError as e:
        raise f.fail(f"no check is named {name[:60]!r}") from e


def _segment(obj: object, where: str) -> SegmentResult:
    f = _Fields(obj, where, SandboxError)
    index, steps, seconds = f.get("index", int), _ints(f.get("steps", list), f, "steps"), f.get("seconds", (int, float))
    distance = f.get("distance", dict, optional=True)
    f.done()
    if len(steps) != 2:
        raise f.fail("'steps' is not [first, last]")
    if distance is not None:
        d = _Fields(distance, f"{where} distance", SandboxError)
        distance = SegmentDistance(float(d.get("overall", (int, float))), d.get("worst_tensor", str), float(d.get("worst", (int, float))))
        d.done()
    return SegmentResult(index=index, first_step=steps[0], last_step=steps[1], seconds=float(seconds), distance=distance)


@dataclass(frozen=True)
class WorkerAnswer:
    """A worker's answer: its report, or why it has none. Exactly one of the three is set.

    ``input_error``: this machine lacks an input (the verifier exits 2); ``code_error``: the training
    code raised (``"Type: message"``; a failed ``sandbox`` check).
    """

    report: WorkerReport | None = None
    input_error: str | None = None
    code_error: str | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.report, self.input_error, self.code_error)) != 1:
            raise ValueError("a worker answer holds exactly one of a report, an input error, a code error")

    def to_json(self) -> dict[str, JSONValue]:
        if self.report is not None:
            return {"report": self.report.to_json()}
        return {"input_error": self.input_error} if self.input_error is not None else {"code_error": self.code_error}

    @classmethod
    def from_json(cls, obj: object, where: str = "the replay worker's answer") -> WorkerAnswer:
        """Raises ``SandboxError`` for anything but one of ``{"report": R}``, ``{"input_error": s}``, ``{"code_error": s}``."""
        f = _Fields(obj, where, SandboxError)
        if len(f.obj) != 1:
            raise f.fail("holds not exactly one of report, input_error, code_error")
        if "input_error" in f.obj:
            answer = cls(input_error=f.get("input_error", str))
        elif "code_error" in f.obj:
            answer = cls(code_error=f.get("code_error", str))
        else:
            answer = cls(report=WorkerReport.from_json(f.get("report", dict), f"{where} report"))
        f.done()
        return answer
