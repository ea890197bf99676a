"""The fine-tuner's training spec: the upstream's digits MLP, taught a new data source with a new optimizer.

What changes from the upstream run (``trainwitness.workloads.digits:digits``):

* data: a new source, ``mirrored-digits``, the 8x8 digits mirrored left to right (one CSV line per
  image, 64 pixel counts 0..16 then the digit), written by ``run.py`` from scikit-learn's bundled copy.
  Its file is found through the environment variable ``MIRRORED_DIGITS`` (a verifier passes
  ``--data mirrored-digits=PATH`` instead);
* optimizer: Adam, no learning-rate schedule;
* the output layer ``head`` is re-initialised from this run's seed (``reinitialised=("head",)``);
  every other tensor comes from the parent's final weights when the run is started with a parent
  (``trainwitness train ... --parent DIR``). Started without one, the same spec trains from its seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, DataSource, SourceDataset
from trainwitness.errors import MissingInputError
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import MLP, decode_digits


def _located() -> Path:
    path = os.environ.get("MIRRORED_DIGITS")
    if not path:
        raise MissingInputError("mirrored-digits: set MIRRORED_DIGITS to the CSV file (examples/finetune/run.py writes it)")
    return Path(path)


MIRRORED_SOURCE = DataSource(
    name="mirrored-digits",
    license="CC-BY-4.0",
    description=(
        "the UCI 8x8 handwritten digits as scikit-learn bundles them (digits.csv.gz), each image mirrored "
        "left to right: one CSV line per image, 64 pixel counts 0..16 then the digit"
    ),
    locate=_located,
)


def write_mirrored_digits(source: Path, out: Path) -> int:
    """Write the mirrored copy of the digits CSV (gzip at ``source``) to ``out``; returns the number of images."""
    import gzip

    lines = []
    with gzip.open(source, "rt", encoding="ascii") as f:
        for line in f:
            values = line.strip().split(",")
            if len(values) != 65:
                continue
            rows = [values[8 * r : 8 * r + 8][::-1] for r in range(8)]
            lines.append(",".join([v for row in rows for v in row] + [values[64]]))
    out.write_text("\n".join(lines) + "\n", encoding="ascii")
    return len(lines)


DEFAULTS: dict[str, JSONValue] = {
    "seed": 7,
    "data_seed": 11,
    "batch_size": 32,
    "total_steps": 60,
    "checkpoint_interval": 20,
    "hidden": 128,  # must match the parent's architecture: its weights are loaded into this model
    "dropout": 0.1,
    "lr": 0.001,
}


@training_spec(defaults=DEFAULTS)
def mirrored_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = MLP(hidden=int(hp["hidden"]), dropout=float(hp["dropout"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(hp["lr"]))

    def step(batch: Batch) -> torch.Tensor:
        model.train()
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    dataset = SourceDataset(name="mirrored-digits", sources=[MIRRORED_SOURCE], decode=decode_digits)
    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=dataset, step=step, reinitialised=("head",))
