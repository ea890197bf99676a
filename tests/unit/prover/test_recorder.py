"""The recorder's acknowledgement: after ``wait`` every record handed over is in the index file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainwitness.commit.store import INDEX_FILE, read_index
from trainwitness.prover.recorder import Recorder
from trainwitness.run.rng import capture_rng
from trainwitness.tensors.state import FlatState


def test_wait_makes_step_records_after_the_last_checkpoint_durable(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, compress_level=None)
    try:
        state = FlatState({"model/w": torch.ones(3)}, {"model": {"w": {"$tensor": "model/w"}}})
        recorder.record_checkpoint(0, 0, state)
        for step in range(5):  # no checkpoint after these: only wait() makes them durable
            recorder.record_step(step, [step], {"x": torch.tensor([float(step)])}, capture_rng())
        recorder.wait()
        # read through a fresh file object: what a crash right now would leave on disk
        index = read_index(tmp_path)
        assert [s.step for s in index.steps] == [0, 1, 2, 3, 4]
        assert [c.step for c in index.checkpoints] == [0]
        assert (tmp_path / INDEX_FILE).read_bytes().endswith(b"\n")
    finally:
        recorder.close()


def test_reused_snapshot_buffers_keep_each_checkpoint_its_own(tmp_path: Path) -> None:
    """The trainer copies later checkpoints into buffers the writer is done with: no file may change."""
    from trainwitness.tensors.checkpoint_reader import read_checkpoint

    for delta_every in (None, 4):
        store = tmp_path / f"store-{delta_every}"
        store.mkdir()
        live = torch.zeros(1000)
        state = FlatState({"model/w": live}, {"model": {"w": {"$tensor": "model/w"}}})
        recorder = Recorder(store, delta_every=delta_every)
        try:
            for index in range(6):
                live.fill_(float(index))  # training mutates the live tensor after every checkpoint
                if index == 3:  # a layout change: the spare does not fit, a fresh copy is made
                    live = torch.full((7,), float(index))
                    state = FlatState({"model/w": live}, state.skeleton)
                recorder.record_checkpoint(index, index * 10, state)
                recorder.wait()  # the writer is done with it: the next copy goes into a spare
        finally:
            recorder.close()
        steps = [c.step for c in recorder.checkpoints]  # no step records: not a readable index, only files
        for index in range(6):
            flat, _ = read_checkpoint(store, steps, index)
            assert torch.equal(flat.tensors["model/w"], torch.full((1000 if index < 3 else 7,), float(index)))


def test_a_failed_final_sync_ends_close_promptly_with_the_file_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop job's fsync failing (disk full) once left the writer waiting forever and ``close`` with it."""
    import errno
    import os
    import threading

    import trainwitness.prover.recorder as recorder_module
    from trainwitness.errors import OutputError

    recorder = Recorder(tmp_path, compress_level=None)
    recorder.record_checkpoint(0, 0, FlatState({"model/w": torch.ones(3)}, {"model": {"w": {"$tensor": "model/w"}}}))
    recorder.wait()
    for step in range(3):  # step records after the last checkpoint: only close() syncs them
        recorder.record_step(step, [step], {"x": torch.tensor([float(step)])}, capture_rng())

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recorder_module.os, "fsync", full_disk)
    outcome: list[BaseException | None] = []

    def close() -> None:
        try:
            recorder.close()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "Recorder.close() hangs after its final sync failed"
    assert isinstance(outcome[0], OutputError)
    assert str(outcome[0]) == f"{tmp_path / INDEX_FILE}: cannot be written: No space left on device (errno 28)"
