"""Handwritten digits (8x8, 1797 images, scikit-learn's bundled copy of the UCI set), a small MLP.

The data file is read straight from scikit-learn's installed package directory: nothing is
downloaded, and scikit-learn itself is never imported (only located).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..canonical import JSONValue
from ..data import Batch, TensorDataset
from ..errors import MissingInputError
from ..spec import TrainingSpec, training_spec


def digits_csv_path() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("the digits workload reads scikit-learn's bundled digits.csv.gz: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise MissingInputError(f"{path} is missing from this scikit-learn installation")
    return path


def load_digits() -> TensorDataset:
    with gzip.open(digits_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :64] / 16.0)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return TensorDataset(name="sklearn-digits", columns={"image": images, "label": labels})


class MLP(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        out: torch.Tensor = self.head(x)
        return out


DEFAULTS: dict[str, JSONValue] = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 32,
    "total_steps": 560,  # 10 epochs of 56 batches
    "checkpoint_interval": 40,
    "hidden": 128,
    "dropout": 0.1,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
}


@training_spec(defaults=DEFAULTS)
def digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = MLP(hidden=int(hp["hidden"]), dropout=float(hp["dropout"]))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"]), weight_decay=float(hp["weight_decay"])
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(hp["total_steps"]))

    def step(batch: Batch) -> torch.Tensor:
        model.train()
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=scheduler, dataset=load_digits(), step=step)
