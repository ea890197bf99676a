"""The store: the directory where a run's evidence lives.

    STORE/
      run.json                          canonical JSON: what the prover declared at the start
      imports.json                      canonical JSON: local packages and distributions the run imported
      manifest.jsonl                    the dataset manifest (docs/DATA.md); its summary is in run.json
      index.jsonl                       append-only log, one canonical JSON record per line, fsync'd
      checkpoints/<step:010d>.safetensors[.zst]      a full checkpoint
      checkpoints/<step:010d>.delta.safetensors.zst   or a delta / keyframe (see delta.py, docs/STORAGE.md)
      train.lock                        the writer's exclusive lock (flock), naming its process and host

Files are only ever created whole (``atomic.atomic_write``: a temporary name, fsync'd, renamed) or
appended to; ``run.json`` is created last of all, so a directory without it holds no run yet.
Every name the readers open is derived from integers, never taken from the files themselves, so a
hostile index cannot point outside the store; symlinks and non-regular files are refused.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from trainwitness.commit.atomic import atomic_write, atomic_write_with, output_error
from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hashing import domain_hash, format_digest, parse_digest
from trainwitness.commit.json_fields import get_field, is_int
from trainwitness.commit.safe_open import open_beneath, open_regular, read_beneath
from trainwitness.errors import MalformedInputError, MissingInputError, StoreLockedError, TrainwitnessError

__all__ = [
    "RUN_FILE",
    "IMPORTS_FILE",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "LOCK_FILE",
    "CHECKPOINT_DIR",
    "NON_FINITE_LOSSES",
    "StepRecord",
    "RankShard",
    "ShardedStepRecord",
    "AnyStepRecord",
    "CheckpointRecord",
    "compose_state_digest",
    "RunIndex",
    "checkpoint_steps",
    "checkpoint_relpath",
    "delta_relpath",
    "atomic_write",
    "atomic_write_with",
    "store_lock",
    "store_lock_holder",
    "append_line",
    "open_store_file",
    "read_store_file",
    "find_checkpoint",
    "read_index",
]

RUN_FILE = "run.json"
IMPORTS_FILE = "imports.json"  # the local packages and distributions the run imported (identity/imports.py)
INDEX_FILE = "index.jsonl"
MANIFEST_FILE = "manifest.jsonl"
LOCK_FILE = "train.lock"
CHECKPOINT_DIR = "checkpoints"
MAX_INDEX_BYTES = 8 * 1024**3
MAX_BATCH_IDS = 1 << 20


NON_FINITE_LOSSES = ("nan", "inf", "-inf")


@dataclass(frozen=True)
class StepRecord:
    """What was committed for one step: its batch, the RNG state it started from, the loss it returned.

    ``loss``: a finite float, one of ``NON_FINITE_LOSSES``, or None when the step returned none.
    """

    step: int
    sample_ids: tuple[int, ...]
    batch_digest: str
    rng_digest: str
    loss: float | str | None = None

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "batch_digest": self.batch_digest,
            "kind": "step",
            "loss": self.loss,
            "rng_digest": self.rng_digest,
            "sample_ids": list(self.sample_ids),
            "step": self.step,
        }

    def batch_leaf(self) -> bytes:
        return canonical_json(
            {
                "batch_digest": self.batch_digest,
                "loss": self.loss,
                "sample_ids": list(self.sample_ids),
                "step": self.step,
                "type": "batch",
            }
        )

    def rng_leaf(self) -> bytes:
        return canonical_json({"rng_digest": self.rng_digest, "step": self.step, "type": "rng"})

    @property
    def shards(self) -> tuple[RankShard, ...]:
        """The one rank's shard: the whole batch."""
        return (RankShard(self.sample_ids, self.batch_digest, self.rng_digest),)


@dataclass(frozen=True)
class RankShard:
    """One rank's part of a step: its shard of the batch and the RNG state it started the step from."""

    sample_ids: tuple[int, ...]
    batch_digest: str
    rng_digest: str


@dataclass(frozen=True)
class ShardedStepRecord:
    """A step of a W-rank data-parallel run (docs/DISTRIBUTED.md): each rank's shard, in rank order.

    ``sample_ids`` is the global batch (the shards concatenated), which the declared sampler must give.
    """

    step: int
    ranks: tuple[RankShard, ...]

    @property
    def shards(self) -> tuple[RankShard, ...]:
        return self.ranks

    @property
    def sample_ids(self) -> tuple[int, ...]:
        return tuple(i for shard in self.ranks for i in shard.sample_ids)

    def to_json(self) -> dict[str, JSONValue]:
        ranks: list[JSONValue] = [
            {"batch_digest": r.batch_digest, "rng_digest": r.rng_digest, "sample_ids": list(r.sample_ids)} for r in self.ranks
        ]
        return {"kind": "step", "ranks": ranks, "step": self.step}

    def batch_leaf(self) -> bytes:
        ranks: list[JSONValue] = [{"batch_digest": r.batch_digest, "sample_ids": list(r.sample_ids)} for r in self.ranks]
        return canonical_json({"ranks": ranks, "step": self.step, "type": "batch"})

    def rng_leaf(self) -> bytes:
        digests: list[JSONValue] = [r.rng_digest for r in self.ranks]
        return canonical_json({"rng_digests": digests, "step": self.step, "type": "rng"})


AnyStepRecord = StepRecord | ShardedStepRecord


def compose_state_digest(weights_digest: str, rest_digest: str) -> str:
    """The state digest (v2) of a checkpoint whose model weights and rest have these digests.

    ``domain_hash("state", canonical_json({"rest": rest_digest, "weights": weights_digest}), version=2)``.
    The weights digest is a component, so a state reached by replay proves its weights: no state
    digest exists apart from the weights digest it was made from (docs/FORMAT.md section 2).
    """
    document = canonical_json({"rest": rest_digest, "weights": weights_digest})
    return format_digest(domain_hash("state", document, version=2))


@dataclass(frozen=True)
class CheckpointRecord:
    """A full checkpoint: the digest of its model weights and of everything else (``rest``).

    The state digest is not stored: it is derived from the two (``compose_state_digest``), so the
    weights digest a leaf carries cannot disagree with the state that replay reaches.
    """

    index: int
    step: int
    weights_digest: str
    rest_digest: str

    @property
    def state_digest(self) -> str:
        return compose_state_digest(self.weights_digest, self.rest_digest)

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "index": self.index,
            "kind": "checkpoint",
            "rest_digest": self.rest_digest,
            "step": self.step,
            "weights_digest": self.weights_digest,
        }

    def leaf(self) -> bytes:
        return canonical_json(
            {
                "index": self.index,
                "rest_digest": self.rest_digest,
                "step": self.step,
                "type": "checkpoint",
                "weights_digest": self.weights_digest,
            }
        )


def checkpoint_steps(total_steps: int, interval: int) -> list[int]:
    """Steps at which checkpoints are taken: 0, k, 2k, ... and always the last step."""
    if total_steps < 1 or interval < 1:
        raise ValueError("total_steps and checkpoint interval must be positive")
    steps = list(range(0, total_steps, interval))
    steps.append(total_steps)
    return steps


def checkpoint_relpath(step: int, compressed: bool) -> str:
    return f"{CHECKPOINT_DIR}/{step:010d}.safetensors" + (".zst" if compressed else "")


def delta_relpath(step: int) -> str:
    return f"{CHECKPOINT_DIR}/{step:010d}.delta.safetensors.zst"


def append_line(path: Path, record: JSONValue) -> None:
    """Append one canonical JSON record and fsync: once this returns, the record survives a crash."""
    with open(path, "ab") as f:
        f.write(canonical_json(record) + b"\n")
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold the store's exclusive write lock for the ``with`` block: one writer per store, ever.

    ``flock(2)`` on ``STORE/train.lock`` (created if missing, never deleted: removing a lock file
    races with the next locker). The kernel releases it when the process ends, however it ends, so a
    crash leaves no stale lock. While held, the file names the holder (``pid 123 on host h``).
    Raises ``StoreLockedError`` naming the holder when another process holds it, ``OutputError``
    when the lock file cannot be created. Linux/BSD/macOS (``fcntl``).
    """
    import fcntl  # POSIX only; imported here so that reading a store needs no fcntl

    path = store / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise output_error(path, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "a process that has not named itself yet"
            raise StoreLockedError(
                f"store {store} is being written by another `trainwitness train` ({holder}); "
                "wait for it to end or use another --store"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def store_lock_holder(store: Path) -> str | None:
    """Who holds the store's write lock (``pid 123 on host h``), or None when no ``train`` is writing it."""
    import fcntl

    try:
        f, _ = open_regular(store / LOCK_FILE, f"lock file {store / LOCK_FILE}", None)
    except TrainwitnessError:  # none, or not a regular file: no `train` holds it
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(f.fileno(), 256, 0).decode("utf-8", "replace").strip() or "a process that has not named itself yet"
        except OSError:
            return None
        return None


@contextmanager
def _missing_named(store: Path, relpath: str) -> Iterator[None]:
    """A file the store layout requires is "missing" from the store (the safe open says "does not exist")."""
    try:
        yield
    except MissingInputError as e:
        if not isinstance(e.__cause__, FileNotFoundError):
            raise
        raise MissingInputError(f"store {store}: {relpath} is missing") from e.__cause__


@contextmanager
def open_store_file(store: Path, relpath: str, max_bytes: int) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file inside the store for streaming, refusing symlinks (at any component below
    the store), special files and oversize files (``safe_open.open_beneath``); yields the open file
    and its size (for readers that must not hold it whole)."""
    with ExitStack() as stack:
        with _missing_named(store, relpath):  # the open only: not what the caller does with the file
            opened = stack.enter_context(open_beneath(store, relpath, f"store {store}: {relpath}", max_bytes))
        yield opened


def read_store_file(store: Path, relpath: str, max_bytes: int) -> bytes:
    """Read a regular file inside the store, refusing symlinks, special files and oversize files."""
    with _missing_named(store, relpath):
        return read_beneath(store, relpath, f"store {store}: {relpath}", max_bytes)


def find_checkpoint(store: Path, step: int) -> str:
    """The relative path of the checkpoint file for ``step``: a delta, compressed or plain."""
    for rel in (delta_relpath(step), checkpoint_relpath(step, True), checkpoint_relpath(step, False)):
        if os.path.lexists(store / rel):
            return rel
    raise MissingInputError(f"store {store}: the checkpoint for step {step} is missing")


@dataclass(frozen=True)
class RunIndex:
    steps: tuple[AnyStepRecord, ...]
    checkpoints: tuple[CheckpointRecord, ...]
    torn_tail_bytes: int = 0  # bytes of an unfinished last line (only tolerated when resuming)

    def batch_leaves(self) -> list[bytes]:
        return [s.batch_leaf() for s in self.steps]

    def rng_leaves(self) -> list[bytes]:
        return [s.rng_leaf() for s in self.steps]

    def checkpoint_leaves(self) -> list[bytes]:
        return [c.leaf() for c in self.checkpoints]


def _field(record: dict[str, JSONValue], key: str, kind: type, where: str) -> Any:
    return get_field(record, key, kind, f"{where}: record")


def _sample_ids(record: dict[str, JSONValue], where: str) -> tuple[int, ...]:
    ids = _field(record, "sample_ids", list, where)
    if len(ids) > MAX_BATCH_IDS or not all(is_int(i) and i >= 0 for i in ids):
        raise MalformedInputError(f"{where}: sample_ids must be non-negative integers")
    return tuple(ids)


def _rank_shards(record: dict[str, JSONValue], where: str) -> tuple[RankShard, ...]:
    """A data-parallel step's ``ranks``: one object per rank, each exactly {batch_digest, rng_digest, sample_ids}."""
    ranks = _field(record, "ranks", list, where)
    if not 2 <= len(ranks) <= MAX_BATCH_IDS:
        raise MalformedInputError(f"{where}: a data-parallel step has 2..{MAX_BATCH_IDS} ranks, not {len(ranks)}")
    shards = []
    for r, entry in enumerate(ranks):
        at = f"{where} rank {r}"
        if not isinstance(entry, dict) or set(entry) != {"batch_digest", "rng_digest", "sample_ids"}:
            raise MalformedInputError(f"{at}: must hold exactly batch_digest, rng_digest, sample_ids")
        shard = RankShard(_sample_ids(entry, at), _field(entry, "batch_digest", str, at), _field(entry, "rng_digest", str, at))
        parse_digest(shard.batch_digest, f"{at} batch_digest")
        parse_digest(shard.rng_digest, f"{at} rng_digest")
        shards.append(shard)
    if sum(len(s.sample_ids) for s in shards) > MAX_BATCH_IDS:
        raise MalformedInputError(f"{where}: more than {MAX_BATCH_IDS} sample ids")
    return tuple(shards)


def _parse_record(line: bytes, where: str) -> AnyStepRecord | CheckpointRecord:
    record = parse_json(line, where)
    if not isinstance(record, dict):
        raise MalformedInputError(f"{where}: not a JSON object")
    kind = record.get("kind")
    parsed: AnyStepRecord | CheckpointRecord
    if kind == "step" and "ranks" in record:  # a data-parallel run's step (docs/DISTRIBUTED.md)
        expected = {"kind", "step", "ranks"}
        parsed = ShardedStepRecord(step=_field(record, "step", int, where), ranks=_rank_shards(record, where))
    elif kind == "step":
        expected = {"kind", "step", "sample_ids", "batch_digest", "rng_digest", "loss"}
        ids = _sample_ids(record, where)
        single = StepRecord(
            step=_field(record, "step", int, where),
            sample_ids=ids,
            batch_digest=_field(record, "batch_digest", str, where),
            rng_digest=_field(record, "rng_digest", str, where),
        )
        parse_digest(record["batch_digest"], f"{where} batch_digest")
        parse_digest(record["rng_digest"], f"{where} rng_digest")
        loss = record.get("loss")
        if "loss" not in record or not (loss is None or isinstance(loss, float) or loss in NON_FINITE_LOSSES):
            raise MalformedInputError(f"{where}: field 'loss' is missing or not a float, {NON_FINITE_LOSSES} or null")
        parsed = replace(single, loss=cast("float | str | None", loss))
    elif kind == "checkpoint":
        expected = {"kind", "index", "step", "weights_digest", "rest_digest"}
        parsed = CheckpointRecord(
            index=_field(record, "index", int, where),
            step=_field(record, "step", int, where),
            weights_digest=_field(record, "weights_digest", str, where),
            rest_digest=_field(record, "rest_digest", str, where),
        )
        parse_digest(record["weights_digest"], f"{where} weights_digest")
        parse_digest(record["rest_digest"], f"{where} rest_digest")
    else:
        raise MalformedInputError(f"{where}: unknown record kind {kind!r}")
    if set(record) != expected:
        raise MalformedInputError(f"{where}: unexpected fields {sorted(set(record) - expected)}")
    return parsed


def read_index(store: Path, allow_torn_tail: bool = False) -> RunIndex:
    """Parse and order-check the index. Steps run 0, 1, 2, ...; checkpoints 0, 1, 2, ... in step order."""
    if not store.is_dir():
        raise MissingInputError(f"store {store} does not exist or is not a directory")
    data = read_store_file(store, INDEX_FILE, MAX_INDEX_BYTES)
    torn = 0
    if data and not data.endswith(b"\n"):
        if not allow_torn_tail:
            raise MalformedInputError(f"store {store}: {INDEX_FILE} ends in an unfinished record (truncated)")
        torn = len(data) - (data.rfind(b"\n") + 1)
        data = data[: len(data) - torn]
    steps: list[AnyStepRecord] = []
    checkpoints: list[CheckpointRecord] = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        where = f"{INDEX_FILE} line {number}"
        record = _parse_record(line, where)
        if isinstance(record, StepRecord | ShardedStepRecord):
            if steps and len(record.shards) != len(steps[0].shards):  # one world size for the whole run
                raise MalformedInputError(f"{where}: step {record.step} has {len(record.shards)} ranks, step 0 has {len(steps[0].shards)}")
            if record.step != len(steps):
                raise MalformedInputError(f"{where}: step {record.step} out of order (expected {len(steps)})")
            steps.append(record)
        else:
            if record.index != len(checkpoints) or record.step != len(steps):
                raise MalformedInputError(
                    f"{where}: checkpoint {record.index} at step {record.step} out of order "
                    f"(expected checkpoint {len(checkpoints)} at step {len(steps)})"
                )
            checkpoints.append(record)
    return RunIndex(steps=tuple(steps), checkpoints=tuple(checkpoints), torn_tail_bytes=torn)
