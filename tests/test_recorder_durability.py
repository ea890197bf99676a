"""The recorder's acknowledgement: after ``wait`` every record handed over is in the index file."""

from __future__ import annotations

from pathlib import Path

import torch

from trainwitness.prover.recorder import Recorder
from trainwitness.rng import capture_rng
from trainwitness.state import FlatState
from trainwitness.store import INDEX_FILE, read_index


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
