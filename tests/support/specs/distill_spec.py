"""A distillation spec for the frozen-input tests: a small student taught by the digits MLP (a frozen teacher).

The teacher's weights are a declared frozen input, read by name while the spec is built.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.inputs import frozen_input
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import MLP, load_digits


@training_spec(defaults={"seed": 3, "data_seed": 4, "batch_size": 32, "total_steps": 20, "checkpoint_interval": 10, "temperature": 2.0})
def distill(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    teacher = MLP(hidden=128, dropout=0.0)
    teacher.load_state_dict(frozen_input("teacher"))
    teacher.requires_grad_(False)
    teacher.eval()
    student = MLP(hidden=16, dropout=0.0)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    t = float(hp["temperature"])

    def step(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = F.softmax(teacher(batch["image"]) / t, dim=-1)
        loss = F.kl_div(F.log_softmax(student(batch["image"]) / t, dim=-1), target, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=student, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)
