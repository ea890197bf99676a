"""A data-parallel training spec: the digits MLP of ``trainwitness.workloads.digits``, run through DDP.

The only line that makes it data-parallel is ``net = data_parallel(model)``: under a process group
of W ranks that is ``DistributedDataParallel(model)``, which averages the ranks' gradients in the
backward pass; in one process (a verifier replaying every rank itself) it is the model unchanged.
The spec returns the plain model, whose state is what trainwitness checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.distributed import data_parallel
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import MLP, load_digits

DEFAULTS: dict[str, JSONValue] = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 32,  # the global batch: each of W ranks trains on 32 / W samples a step
    "total_steps": 40,
    "checkpoint_interval": 10,
    "hidden": 64,
    "dropout": 0.1,  # draws from every rank's generator: each rank's RNG state is committed every step
    "lr": 0.05,
    "momentum": 0.9,
}


@training_spec(defaults=DEFAULTS)
def digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = MLP(hidden=int(hp["hidden"]), dropout=float(hp["dropout"]))
    net = data_parallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"]))

    def step(batch: Batch) -> torch.Tensor:
        net.train()
        loss = F.cross_entropy(net(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)
