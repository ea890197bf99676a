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
``trainwitness.tensors.delta``), a keyframe every F checkpoints and first after every start or resume; the
writer keeps its private copy of the previous checkpoint for that (one more state in memory).

What the training thread pays, per step: a copy of the batch and an append to a list; per
checkpoint: one copy of the state into a snapshot buffer the writer has finished with (a
preallocated copy: no fresh allocation, no page faults), or a fresh one when none is free. The
writer never holds the GIL for long: the checkpoint file is streamed from views of the snapshot
through zstd into the file (``tensorfile``), never built whole in memory (``safetensors.torch.save``
would copy the state twice with the GIL held); the weights and rest digests (whose composition is the state digest) hash the bytes once; and the writer
threads run at a lower CPU priority than training (``writer_nice``), so on a busy machine the
scheduler gives the trainer the core first (the bounded queue still stops the writer falling behind
without limit).

Failure: the first exception in the writer stops it (every later job is skipped) and is raised on
the training thread at its next hand-over, ``wait`` or ``close``; an OSError (disk full, I/O error)
becomes ``OutputError`` naming the file. After a failure nothing more is written, not even what
the index file still buffers: the store stays as a crash at that instant would leave it, and
resumes once the cause is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from trainwitness.commit.atomic import writing
from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.hints import HINTS_FILE, StepHints, hints_record
from trainwitness.commit.store import (
    INDEX_FILE,
    AnyStepRecord,
    CheckpointRecord,
    StepRecord,
    checkpoint_relpath,
    delta_relpath,
)
from trainwitness.data.datasets import Batch, batch_digest
from trainwitness.errors import OutputError, TrainwitnessError
from trainwitness.run.loop import loss_value, snapshot
from trainwitness.run.rng import rng_digest
from trainwitness.tensors.checkpoint import checkpoint_parts
from trainwitness.tensors.delta import MAX_DELTA_CHAIN, delta_parts
from trainwitness.tensors.state import FlatState, state_digests
from trainwitness.tensors.tensorfile import write_parts

__all__ = ["Recorder"]

_STOP = object()
# Steps handed to the writer per queue item. Waking the writer is a GIL hand-over that the training
# thread pays for (milliseconds on a busy machine); once per step was most of the recorder's cost.
_STEP_BATCH = 32
# Snapshot buffers the writer has finished with, kept for the next checkpoint's copy (double buffering).
_SPARE_SNAPSHOTS = 1


def _thread_nice() -> int | None:
    """The calling thread's nice value (Linux: a thread is a task with its own), or None where unsupported."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if hasattr(os, "getpriority") else None
    except OSError:
        return None


def _set_thread_nice(nice: int | None) -> None:
    """Set the calling thread's nice value (higher is lower priority); threads it starts inherit it."""
    if nice is not None:
        with contextlib.suppress(OSError):  # not permitted here: run at the inherited priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, nice))


def _same_layout(a: FlatState, b: FlatState) -> bool:
    return a.tensors.keys() == b.tensors.keys() and all(
        t.dtype == b.tensors[n].dtype and t.shape == b.tensors[n].shape for n, t in a.tensors.items()
    )


class _AppendLog:
    """An append-only file written from the writer thread, buffered here rather than in ``io``.

    Holding the buffer ourselves means that after a failure it is simply dropped (``abandon``):
    Python's buffered file would retry the write when closed, and a full disk could then take half
    a record long after the first error. Every OSError names the file (``OutputError``).
    """

    _FLUSH_AT = 1 << 16

    def __init__(self, path: Path) -> None:
        self.path = path
        with writing(path):
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        # Copy point: the buffer's bytes, so that no view of the bytearray outlives a failed write.
        data, done = memoryview(bytes(self._buffer)), 0
        self._buffer.clear()  # what a failure leaves unwritten is never written: see ``abandon``
        with writing(self.path):
            while done < len(data):
                done += os.write(self._fd, data[done:])  # a short write (disk nearly full): the rest next

    def sync(self) -> None:
        self.flush()
        with writing(self.path):
            os.fsync(self._fd)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.flush()
            finally:
                self.abandon()

    def abandon(self) -> None:
        """Close without writing what is still buffered."""
        self._buffer.clear()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class Recorder:
    def __init__(
        self,
        store: Path,
        compress_level: int | None = 3,
        queue_depth: int = 8,
        hash_workers: int = 2,
        delta_every: int | None = None,
        writer_nice: int = 5,
    ) -> None:
        if delta_every is not None and not (1 <= delta_every <= MAX_DELTA_CHAIN and compress_level is not None):
            raise ValueError(f"delta checkpoints need compression and a keyframe every 1..{MAX_DELTA_CHAIN} checkpoints")
        self.store = store
        self.compress_level = compress_level
        self.delta_every = delta_every
        self._previous: tuple[int, FlatState] | None = None  # writer thread only: the base of the next delta
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_depth)
        self._error: BaseException | None = None
        self._index = _AppendLog(store / INDEX_FILE)
        self._hints: _AppendLog | None = None  # exact mode's hints.jsonl, opened on first use
        self._unsynced = 0
        trainer_nice = _thread_nice()
        self._writer_nice = None if trainer_nice is None or writer_nice <= 0 else trainer_nice + writer_nice
        self._hashers = ThreadPoolExecutor(
            max_workers=hash_workers, thread_name_prefix="trainwitness-hash", initializer=_set_thread_nice, initargs=(self._writer_nice,)
        )
        self._spares: queue.Queue[FlatState] = queue.Queue(maxsize=_SPARE_SNAPSHOTS)  # writer puts, trainer takes
        self.checkpoints: list[CheckpointRecord] = []
        # training thread only, not yet handed over: [step, ids, batch, rng, loss], or a ready record's job
        self._pending: list[list[Any] | Callable[[], None]] = []
        self._worker = threading.Thread(target=self._drain, name="trainwitness-recorder", daemon=True)
        self._worker.start()

    # -- training thread -------------------------------------------------------------------------

    def record_step(self, step: int, sample_ids: list[int], batch: Batch, rng: FlatState, loss: object = None) -> None:
        """Commit the batch about to be trained on and the RNG state the step starts from.

        ``loss``: the step's loss when already known; else ``record_loss`` gives it once the step ran.
        """
        if len(self._pending) >= _STEP_BATCH:  # before this step joins: its loss may still come
            self._hand_over_steps()
        # Copy point: the step may modify the batch in place; the RNG capture is already a copy.
        # (device-to-host, a sync point, where a framework hands over the batch on its device)
        private = {k: v.detach().to("cpu", copy=True) for k, v in batch.items()}
        self._pending.append([step, tuple(sample_ids), private, rng, loss])

    def record_loss(self, step: int, loss: object) -> None:
        """The loss step ``step`` returned (a scalar tensor, read on the writer thread; a float; or None)."""
        last = self._pending[-1] if self._pending else None
        if not isinstance(last, list) or last[0] != step:
            raise ValueError(f"record_loss({step}) does not follow record_step({step})")
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise TypeError(f"step {step} returned a tensor of shape {tuple(loss.shape)} as its loss; return a scalar")
        elif loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
            raise TypeError(f"step {step} returned {type(loss).__name__} as its loss; return a scalar tensor, a float or None")
        last[4] = loss

    def record_step_record(self, record: AnyStepRecord) -> None:
        """Append a step record whose digests are already computed (a data-parallel step, gathered from every rank)."""
        self._pending.append(lambda: self._append(record))
        if len(self._pending) >= _STEP_BATCH:
            self._hand_over_steps()

    def record_hints(self, step: int, hints: StepHints) -> None:
        """Exact mode: append the step's hints to hints.jsonl (StepHints is immutable: no copy)."""
        self._put(lambda: self._write_hints(step, hints))

    def record_checkpoint(self, index: int, step: int, state: FlatState) -> None:
        """Commit a full checkpoint. ``state`` is copied here (device-to-host where on a GPU)."""
        self._hand_over_steps()  # the index is written in order: the steps before the checkpoint first
        private = self._snapshot(state)
        self._put(lambda: self._write_checkpoint(index, step, private))

    def _snapshot(self, state: FlatState) -> FlatState:
        """A private copy of ``state``, into a spare snapshot buffer when one of the same layout is free."""
        try:
            spare = self._spares.get_nowait()
        except queue.Empty:
            return snapshot(state)  # copy point: fresh buffers (device-to-host on a GPU)
        if not _same_layout(spare, state):
            return snapshot(state)
        for name, tensor in state.tensors.items():
            spare.tensors[name].copy_(tensor.detach())  # copy point: into the spare (device-to-host on a GPU)
        return FlatState(spare.tensors, state.skeleton)

    def wait(self) -> None:
        """Block until everything recorded so far is durable; re-raise a writer failure."""
        self._hand_over_steps()
        self._put(self._sync)  # a barrier: runs after every earlier job, in order
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Stop the writer (after it has made everything recorded durable) and release its files.

        Returns promptly even after a writer failure; re-raises that failure (``OutputError`` for a
        file that could not be written).
        """
        if self._error is None:
            self._hand_over_steps()
        self._queue.put(_STOP)  # the writer drains every job (skipping them after a failure): never blocks for long
        self._worker.join()
        self._hashers.shutdown()
        for log in (self._index, self._hints):
            if log is None:
                continue
            if self._error is not None:
                log.abandon()  # nothing may be written after the first failure
                continue
            try:
                log.close()
            except OutputError as e:
                self._error = e
        self._raise_if_failed()

    def _hand_over_steps(self) -> None:
        if self._pending:
            entries, self._pending = self._pending, []
            self._put(lambda: self._write_steps(entries))

    def _write_steps(self, entries: list[list[Any] | Callable[[], None]]) -> None:
        for entry in entries:
            if isinstance(entry, list):
                self._write_step(*entry)
            else:
                entry()

    def _put(self, job: Callable[[], None]) -> None:
        self._raise_if_failed()
        self._queue.put(job)  # blocks when the writer is behind: back-pressure, bounded memory

    def _raise_if_failed(self) -> None:
        if isinstance(self._error, TrainwitnessError):
            raise self._error  # already one line naming the file (OutputError) or the input
        if self._error is not None:
            raise RuntimeError(f"the recorder's writer failed: {self._error}") from self._error

    # -- writer thread ---------------------------------------------------------------------------

    def _drain(self) -> None:
        _set_thread_nice(self._writer_nice)
        while True:
            job = self._queue.get()
            try:
                if self._error is None and job is _STOP:
                    self._sync()
                elif self._error is None:
                    job()  # type: ignore[operator]
            except BaseException as e:  # kept, and raised on the training thread
                self._error = e
            finally:
                self._queue.task_done()
            if job is _STOP:
                return  # also when the final sync failed: ``close`` joins this thread

    def _append(self, record: AnyStepRecord | CheckpointRecord) -> None:
        self._index.write(canonical_json(record.to_json()) + b"\n")
        self._unsynced += 1

    def _sync(self) -> None:
        if self._unsynced:
            for log in (self._hints, self._index):  # hints first: a checkpoint record vouches for them
                if log is not None:
                    log.sync()
            self._unsynced = 0

    def _write_step(self, step: int, ids: tuple[int, ...], batch: Batch, rng: FlatState, loss: object) -> None:
        # loss_value reads a device tensor here, off the training thread (the sync waits for that step only)
        record = StepRecord(step=step, sample_ids=ids, batch_digest=batch_digest(batch), rng_digest=rng_digest(rng), loss=loss_value(loss))
        self._append(record)

    def _write_hints(self, step: int, hints: StepHints) -> None:
        if self._hints is None:
            self._hints = _AppendLog(self.store / HINTS_FILE)
        self._hints.write(hints_record(step, hints) + b"\n")
        self._unsynced += 1

    def _write_checkpoint(self, index: int, step: int, state: FlatState) -> None:
        digests = state_digests(state, self._hashers)  # weights and rest: each tensor hashed once
        record = CheckpointRecord(index=index, step=step, weights_digest=digests.weights, rest_digest=digests.rest)
        done_with: FlatState | None = state
        if self.delta_every is None or self.compress_level is None:
            write_parts(self.store / checkpoint_relpath(step, self.compress_level is not None), checkpoint_parts(state), self.compress_level)
        else:
            previous = self._previous
            if previous is None or previous[0] != index - 1 or index % self.delta_every == 0:
                previous = None  # a keyframe
            parts = delta_parts(state, None if previous is None else previous[1], None if previous is None else index - 1)
            write_parts(self.store / delta_relpath(step), parts, self.compress_level)
            done_with = None if self._previous is None else self._previous[1]
            self._previous = (index, state)  # the snapshot is the writer's own until the next delta replaces it
        self._append(record)
        self._sync()  # a checkpoint record is durable once written
        self.checkpoints.append(record)
        if done_with is not None:  # the trainer may copy the next checkpoint into it
            with contextlib.suppress(queue.Full):
                self._spares.put_nowait(done_with)
