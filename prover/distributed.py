"""Recording a data-parallel run: every rank trains on its shard, rank 0 writes the store (docs/DISTRIBUTED.md).

Each rank digests its own shard of every step's batch and the RNG state the step starts from (on a
background thread: the training thread copies the batch and goes on). At every checkpoint the ranks
exchange those digests and their state digests in one ``all_gather``; only when every rank holds the
same state does rank 0 append the segment's step records (each rank's shard, in rank order) and
write the checkpoint. A rank whose replica diverged stops the run on every rank with
``ReplicaDivergenceError``, before anything of that segment is recorded. Exact mode's hints are the
same on every rank (each rounds the same reduced gradients); rank 0's are written.

Resume: rank 0 checks the store and cuts it back to its last intact checkpoint, as one process
does; the other ranks read that checkpoint from the store (which must therefore be on a filesystem
every rank can read) and check it against the digest rank 0 resumed from.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.hints import ExactMode
from trainwitness.commit.store import CheckpointRecord, RankShard, ShardedStepRecord, checkpoint_steps, read_index
from trainwitness.data.datasets import Batch, batch_digest
from trainwitness.errors import MalformedInputError, MissingInputError, ReplicaDivergenceError, TrainwitnessError
from trainwitness.prover.recorder import Recorder
from trainwitness.run.distributed import DataParallel, all_gather_json, broadcast_json
from trainwitness.run.loop import ExactHooks, TrainingRun
from trainwitness.run.rng import rng_digest
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest

__all__ = ["ShardCollector", "record_ranks"]

Progress = Callable[[int, int], None]


class ShardCollector:
    """This rank's per-step commitments (sample ids, batch digest, RNG digest), digested off the training thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwitness-shard")
        self._pending: list[tuple[int, list[int], Future[tuple[str, str]]]] = []

    def observe(self, step: int, ids: list[int], batch: Batch, rng: FlatState) -> None:
        private = {k: v.detach().clone() for k, v in batch.items()}  # copy point: the step may change the batch
        self._pending.append((step, list(ids), self._pool.submit(lambda: (batch_digest(private), rng_digest(rng)))))

    def take(self) -> list[JSONValue]:
        """``[[step, sample ids, batch digest, RNG digest], ...]`` of the steps observed since the last take."""
        taken, self._pending = self._pending, []
        out: list[JSONValue] = []
        for step, ids, digests in taken:
            batch, rng = digests.result()
            row: list[JSONValue] = [step, list(ids), batch, rng]
            out.append(row)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _agree(index: int, step: int, state: FlatState, collector: ShardCollector) -> list[list[list[JSONValue]]]:
    """Every rank's state digest and step rows since the last checkpoint; raises if the states differ."""
    gathered = all_gather_json({"state_digest": state_digest(state), "steps": collector.take()})
    digests = [g["state_digest"] for g in gathered]  # type: ignore[call-overload,index]
    if len(set(digests)) != 1:
        shown = ", ".join(f"rank {r} {d}" for r, d in enumerate(digests))
        raise ReplicaDivergenceError(
            f"the ranks' states differ at checkpoint {index} (step {step}): {shown}; nothing of this segment was "
            "recorded (a step that changes state other than through DDP's averaged gradients, e.g. BatchNorm "
            "statistics or rank-dependent randomness, makes replicas diverge)"
        )
    return [g["steps"] for g in gathered]  # type: ignore[call-overload,index,misc]


def _step_records(rows_of_ranks: list[list[list[JSONValue]]]) -> list[ShardedStepRecord]:
    records = []
    for rows in zip(*rows_of_ranks, strict=True):
        step = rows[0][0]
        if any(row[0] != step for row in rows):
            raise ReplicaDivergenceError(f"the ranks recorded different steps ({[row[0] for row in rows]})")
        shards = tuple(RankShard(tuple(row[1]), str(row[2]), str(row[3])) for row in rows)  # type: ignore[arg-type]
        records.append(ShardedStepRecord(step=int(step), ranks=shards))  # type: ignore[call-overload]
    return records


def _resume(
    run: TrainingRun, group: DataParallel, store: Path, open_store: Callable[[], CheckpointRecord | None]
) -> CheckpointRecord | None:
    """Rank 0 opens (or resumes) the store; the others follow it, or raise its error."""
    message: JSONValue
    resumed = None
    if group.rank == 0:
        try:
            resumed = open_store()
            message = {"resumed": None if resumed is None else resumed.to_json()}
        except TrainwitnessError as e:
            broadcast_json({"error": str(e)})
            raise
    else:
        message = None
    answer = broadcast_json(message)
    if not isinstance(answer, dict):
        raise MalformedInputError("rank 0 sent no store status")
    if "error" in answer:
        raise MalformedInputError(f"rank 0 could not open the store: {answer['error']}")
    if group.rank == 0 or answer["resumed"] is None:
        return resumed
    record = answer["resumed"]
    if not isinstance(record, dict):
        raise MalformedInputError("rank 0 sent a malformed resume point")
    try:
        steps = [c.step for c in read_index(store).checkpoints]
        flat, _ = read_checkpoint(store, steps, int(record["index"]))  # type: ignore[call-overload]
    except MissingInputError as e:
        raise MissingInputError(
            f"rank {group.rank} cannot read the checkpoint to resume from ({e}): a resumed data-parallel run reads it "
            "from the store, which must be on a filesystem every rank can read"
        ) from e
    resumed_record = CheckpointRecord(
        index=int(record["index"]), step=int(record["step"]),  # type: ignore[call-overload]
        weights_digest=str(record["weights_digest"]), rest_digest=str(record["rest_digest"]),
    )
    if state_digest(flat) != resumed_record.state_digest:
        raise ReplicaDivergenceError(f"rank {group.rank} read a checkpoint that is not the one rank 0 resumed from")
    run.restore(flat)
    return resumed_record


def record_ranks(
    run: TrainingRun,
    group: DataParallel,
    store: Path,
    open_store: Callable[[], CheckpointRecord | None],
    *,
    compress_level: int | None,
    delta_every: int | None,
    progress: Progress | None,
    exact: ExactMode | None,
    before_checkpoint: Callable[[], None] | None = None,
) -> tuple[CheckpointRecord, FlatState, CheckpointRecord | None]:
    """Record this rank's part of a data-parallel run; returns (final checkpoint record, final state, resume point).

    Every rank of the group calls this at once. Raises ``ReplicaDivergenceError`` on every rank when
    the ranks' states differ at a checkpoint. ``before_checkpoint`` is called on rank 0 after each
    segment's steps, before its checkpoint is recorded (the imports record, ``prover/train.py``).
    """
    hp = run.hyperparameters
    steps = checkpoint_steps(int(hp["total_steps"]), int(hp["checkpoint_interval"]))
    resumed = _resume(run, group, store, open_store)
    leader = group.rank == 0
    recorder = Recorder(store, compress_level=compress_level, delta_every=delta_every) if leader else None
    collector = ShardCollector()
    try:
        start_index = 1
        if resumed is None:
            state = run.capture()
            _agree(0, 0, state, collector)  # the same seed must build the same state on every rank
            if recorder is not None:
                recorder.record_checkpoint(0, 0, state)
        else:
            start_index = resumed.index + 1
        for index in range(start_index, len(steps)):
            produced = None if recorder is None else recorder.record_hints
            hooks = None if exact is None else ExactHooks(exact, lambda step: None, produced)
            run.run(steps[index - 1], steps[index], collector.observe, hooks)
            state = run.capture()
            rows = _agree(index, steps[index], state, collector)
            if recorder is not None:
                for record in _step_records(rows):
                    recorder.record_step_record(record)
                if before_checkpoint is not None:
                    before_checkpoint()
                recorder.record_checkpoint(index, steps[index], state)
                if progress is not None:
                    progress(steps[index], steps[-1])
        final_state = run.capture()
        if recorder is not None:
            recorder.wait()
    finally:
        collector.close()
        if recorder is not None:
            recorder.close()
    final = broadcast_json(read_index(store).checkpoints[-1].to_json() if leader else None)
    if not isinstance(final, dict):
        raise MalformedInputError("rank 0 sent no final checkpoint")
    torch.distributed.barrier()
    final_record = CheckpointRecord(
        index=int(final["index"]), step=int(final["step"]),  # type: ignore[call-overload]
        weights_digest=str(final["weights_digest"]), rest_digest=str(final["rest_digest"]),
    )
    return final_record, final_state, resumed
