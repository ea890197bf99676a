"""Data-parallel training specs for the tests: one whose replicas diverge, one that crashes a rank once."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.distributed import data_parallel
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import MLP, load_digits

DEFAULTS: dict[str, JSONValue] = {
    "seed": 0, "data_seed": 1, "batch_size": 16, "total_steps": 12, "checkpoint_interval": 4, "lr": 0.05,
}
CRASH_AT = "TRAINWITNESS_TEST_CRASH_AT_STEP"  # rank 1 dies before this step, once (the marker file says it did)


@training_spec(defaults=DEFAULTS)
def batchnorm(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """BatchNorm's running statistics follow each rank's own shard: under DDP the replicas part at once."""
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    net = data_parallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]))

    def step(batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(net(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)


@training_spec(defaults=DEFAULTS)
def crashing(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """The digits MLP; rank 1 is killed before step $TRAINWITNESS_TEST_CRASH_AT_STEP unless the marker file exists."""
    model = MLP(hidden=32, dropout=0.1)
    net = data_parallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=0.9)
    steps = [0]

    def step(batch: Batch) -> torch.Tensor:
        crash_at, marker = os.environ.get(CRASH_AT), os.environ.get(CRASH_AT + "_MARKER", "")
        if crash_at is not None and steps[0] == int(crash_at) and os.environ.get("RANK") == "1" and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(17)  # a crash: no cleanup, torchrun tears the other rank down
        steps[0] += 1
        loss = F.cross_entropy(net(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)
