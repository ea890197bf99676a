"""Handwritten digits (8x8, 1797 images, scikit-learn's bundled copy of the UCI set), a small MLP.

The data file is read straight from scikit-learn's installed package directory: nothing is
downloaded, and scikit-learn itself is never imported (only located). It is declared as one data
source: each line of the decompressed CSV is one sample (64 pixel values 0..16, then the label),
decoded here, so a verifier can read the lines a replayed step needs from its own copy
(``verify --data uci-digits=PATH``) and prove each against the signed manifest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, DataSource, SourceDataset
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.run.spec import TrainingSpec, training_spec


def digits_csv_path() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("the digits workload reads scikit-learn's bundled digits.csv.gz: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise MissingInputError(f"{path} is missing from this scikit-learn installation")
    return path


DIGITS_SOURCE = DataSource(
    name="uci-digits",
    license="CC-BY-4.0",
    description=(
        "UCI 'Optical Recognition of Handwritten Digits' (Alpaydin and Kaynak, 1998; doi:10.24432/C50P49), "
        "the 1797-sample 8x8 test subset as scikit-learn bundles it in sklearn/datasets/data/digits.csv.gz: "
        "one CSV line per image, 64 pixel counts 0..16 then the digit; "
        "upstream: https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
    ),
    locate=digits_csv_path,  # read from here; signed with its sha256 (any scikit-learn >= 0.14 ships the same file)
    # Where a recipient obtains the same file (its SHA-256 is signed beside it): scikit-learn's repository.
    uri="https://github.com/scikit-learn/scikit-learn/raw/1.5.2/sklearn/datasets/data/digits.csv.gz",
)


def decode_digits(records: Sequence[bytes]) -> Batch:
    """CSV lines -> images scaled to [0, 1] (float32) and labels (int64)."""
    try:
        table = np.array([record.split(b",") for record in records], dtype=np.float32)
    except ValueError as e:
        raise MalformedInputError(f"digits: a record is not 65 comma-separated numbers ({e})") from e
    if table.ndim != 2 or table.shape[1] != 65:
        raise MalformedInputError(f"digits: records must have 65 fields, not shape {table.shape}")
    images = torch.from_numpy(np.ascontiguousarray(table[:, :64]) / np.float32(16.0))
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return {"image": images, "label": labels}


def load_digits() -> SourceDataset:
    return SourceDataset(name="sklearn-digits", sources=[DIGITS_SOURCE], decode=decode_digits)


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
