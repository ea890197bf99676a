"""The Recorder: commits each step's batch and RNG state and writes checkpoints, off the training thread.

The training thread only copies what it must (the batch, a CPU snapshot of a checkpoint) and hands
it to one background writer through a bounded queue; a full queue blocks the trainer
(back-pressure) rather than growing memory. The writer hashes, serialises, compresses and writes in
order. Durability: a checkpoint's file is durable before its index record is appended, and each
checkpoint record is fsync'd (with every step record before it) as soon as it is written; ``wait``
and ``close`` fsync whatever was recorded before them, so nothing acknowledged is lost. Step jobs
reach the writer in groups of ``_STEP_BATCH`` (and before every checkpoint, ``wait`` and ``close``),
so the trainer wakes the writer once a group rather than once a step. Step
records are not fsync'd one by one: any a crash loses lie after the last durable checkpoint, where
resume cuts the index back and re-runs them anyway (one fsync per checkpoint, not one per step).
With ``delta_every=F`` checkpoints are written as XOR deltas against the previous one (see
``trainwitness.delta``), a keyframe every F checkpoints and first after every start or resume; the
writer keeps its private copy of the previous checkpoint for that (one more state in memory).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from ..canonical import canonical_json
from ..checkpoint import encode_checkpoint
from ..data import Batch, batch_digest
from ..delta import MAX_DELTA_CHAIN, encode_delta
from ..exact import HINTS_FILE, StepHints, hints_record
from ..executor import snapshot, weights_of
from ..rng import rng_digest
from ..state import FlatState, state_digest, weights_digest
from ..store import INDEX_FILE, CheckpointRecord, StepRecord, atomic_write, checkpoint_relpath, delta_relpath

__all__ = ["Recorder"]

_STOP = object()
# Steps handed to the writer per queue item. Waking the writer is a GIL hand-over that the training
# thread pays for (milliseconds on a busy machine); once per step was most of the recorder's cost.
_STEP_BATCH = 32


class Recorder:
    def __init__(
        self,
        store: Path,
        compress_level: int | None = 3,
        queue_depth: int = 8,
        hash_workers: int = 2,
        delta_every: int | None = None,
    ) -> None:
        if delta_every is not None and not (1 <= delta_every <= MAX_DELTA_CHAIN and compress_level is not None):
            raise ValueError(f"delta checkpoints need compression and a keyframe every 1..{MAX_DELTA_CHAIN} checkpoints")
        self.store = store
        self.compress_level = compress_level
        self.delta_every = delta_every
        self._previous: tuple[int, FlatState] | None = None  # writer thread only: the base of the next delta
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_depth)
        self._error: BaseException | None = None
        self._index = open(store / INDEX_FILE, "ab")
        self._hints: BinaryIO | None = None  # exact mode's hints.jsonl, opened on first use
        self._unsynced = 0
        self._hashers = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="trainwitness-hash")
        self.checkpoints: list[CheckpointRecord] = []
        self._pending: list[Callable[[], None]] = []  # training thread only: step jobs not yet handed over
        self._worker = threading.Thread(target=self._drain, name="trainwitness-recorder", daemon=True)
        self._worker.start()

    # -- training thread -------------------------------------------------------------------------

    def record_step(self, step: int, sample_ids: list[int], batch: Batch, rng: FlatState) -> None:
        """Commit the batch about to be trained on and the RNG state the step starts from."""
        # Copy point: the step may modify the batch in place; the RNG capture is already a copy.
        private = {k: v.detach().clone() for k, v in batch.items()}
        ids = tuple(sample_ids)
        self._pending.append(lambda: self._write_step(step, ids, private, rng))
        if len(self._pending) >= _STEP_BATCH:
            self._hand_over_steps()

    def record_hints(self, step: int, hints: StepHints) -> None:
        """Exact mode: append the step's hints to hints.jsonl (StepHints is immutable: no copy)."""
        self._put(lambda: self._write_hints(step, hints))

    def record_checkpoint(self, index: int, step: int, state: FlatState) -> None:
        """Commit a full checkpoint. ``state`` is copied here (device-to-host where on a GPU)."""
        self._hand_over_steps()  # the index is written in order: the steps before the checkpoint first
        private = snapshot(state)
        self._put(lambda: self._write_checkpoint(index, step, private))

    def wait(self) -> None:
        """Block until everything recorded so far is durable; re-raise a writer failure."""
        self._hand_over_steps()
        self._put(self._sync)  # a barrier: runs after every earlier job, in order
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        if self._error is None:
            self._hand_over_steps()
        self._queue.put(_STOP)
        self._worker.join()
        self._hashers.shutdown()
        self._index.close()
        if self._hints is not None:
            self._hints.close()
        self._raise_if_failed()

    def _hand_over_steps(self) -> None:
        if self._pending:
            jobs, self._pending = self._pending, []
            self._put(lambda: self._run_all(jobs))

    @staticmethod
    def _run_all(jobs: list[Callable[[], None]]) -> None:
        for job in jobs:
            job()

    def _put(self, job: Callable[[], None]) -> None:
        self._raise_if_failed()
        self._queue.put(job)  # blocks when the writer is behind: back-pressure, bounded memory

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the recorder's writer failed: {self._error}") from self._error

    # -- writer thread ---------------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    self._sync()
                    return
                if self._error is None:
                    job()  # type: ignore[operator]
            except BaseException as e:  # kept, and raised on the training thread
                self._error = e
            finally:
                self._queue.task_done()

    def _append(self, record: StepRecord | CheckpointRecord) -> None:
        self._index.write(canonical_json(record.to_json()) + b"\n")
        self._unsynced += 1

    def _sync(self) -> None:
        if self._unsynced:
            for file in (self._hints, self._index):  # hints first: a checkpoint record vouches for them
                if file is not None:
                    file.flush()
                    os.fsync(file.fileno())
            self._unsynced = 0

    def _write_step(self, step: int, ids: tuple[int, ...], batch: Batch, rng: FlatState) -> None:
        self._append(StepRecord(step=step, sample_ids=ids, batch_digest=batch_digest(batch), rng_digest=rng_digest(rng)))

    def _write_hints(self, step: int, hints: StepHints) -> None:
        if self._hints is None:
            self._hints = open(self.store / HINTS_FILE, "ab")
        self._hints.write(hints_record(step, hints) + b"\n")
        self._unsynced += 1

    def _write_checkpoint(self, index: int, step: int, state: FlatState) -> None:
        record = CheckpointRecord(
            index=index,
            step=step,
            state_digest=state_digest(state, self._hashers),
            weights_digest=weights_digest(weights_of(state), self._hashers),
        )
        if self.delta_every is None or self.compress_level is None:
            data = encode_checkpoint(state, self.compress_level)
            atomic_write(self.store / checkpoint_relpath(step, self.compress_level is not None), data)
        else:
            previous = self._previous
            if previous is None or previous[0] != index - 1 or index % self.delta_every == 0:
                previous = None  # a keyframe
            data = encode_delta(state, None if previous is None else previous[1], None if previous is None else index - 1, self.compress_level)
            atomic_write(self.store / delta_relpath(step), data)
            self._previous = (index, state)  # the snapshot is the writer's own: nothing else mutates it
        self._append(record)
        self._sync()  # a checkpoint record is durable once written
        self.checkpoints.append(record)
