"""A tiny spec reading two declared sources (a directory of files and a .npy array), for verifier tests.

The data lives where the test puts it: ``$TRAINWITNESS_TEST_DATA/{points,extra.npy}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, DataSource, SourceDataset
from trainwitness.run.spec import TrainingSpec, training_spec


def _data_dir() -> Path:
    return Path(os.environ["TRAINWITNESS_TEST_DATA"])


POINTS = DataSource("points", "CC0-1.0", "one point per file: 4 floats and a label", lambda: _data_dir() / "points")
EXTRA = DataSource("extra", "MIT", "one point per row: 5 float32 (the last is the label)", lambda: _data_dir() / "extra.npy")


def write_data(directory: Path, n_files: int = 24, n_rows: int = 16) -> None:
    rng = np.random.default_rng(0)
    (directory / "points" / "a").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        values = rng.normal(size=4).round(3)
        (directory / "points" / "a" / f"{i:03d}.txt").write_text(",".join(map(str, values)) + f",{i % 2}")
    rows = rng.normal(size=(n_rows, 5)).astype(np.float32)
    rows[:, 4] = np.arange(n_rows) % 2
    np.save(directory / "extra.npy", rows)


def decode(records: Sequence[bytes]) -> Batch:
    rows = [np.array(r.split(b","), dtype=np.float32) if b"," in r else np.frombuffer(r, dtype=np.float32) for r in records]
    table = torch.from_numpy(np.stack(rows))
    return {"x": table[:, :4].contiguous(), "y": table[:, 4].to(torch.int64)}


@training_spec(defaults={"seed": 0, "data_seed": 3, "batch_size": 8, "total_steps": 10, "checkpoint_interval": 5, "lr": 0.1})
def two_sources(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]))

    def step(batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(model(batch["x"]), batch["y"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    dataset = SourceDataset("two-sources", [POINTS, EXTRA], decode)
    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=dataset, step=step)
