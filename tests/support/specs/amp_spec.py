"""Mixed precision as a script writes it: ``torch.autocast`` on the run's device and a ``GradScaler`` in the state."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.device import current_device
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits


@training_spec(defaults=DEFAULTS)
def amp_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    base = digits(hp)
    device = current_device()
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**8, growth_interval=5)  # grows within the test's steps
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def step(batch: Batch) -> torch.Tensor:
        base.model.train()
        with torch.autocast(device.type, dtype=dtype):
            loss = F.cross_entropy(base.model(batch["image"]), batch["label"])
        base.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        scaler.step(base.optimizer)
        scaler.update()
        base.scheduler.step()  # type: ignore[union-attr]
        return loss.detach()

    return TrainingSpec(
        model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step,
        state={"scaler": scaler},
    )
