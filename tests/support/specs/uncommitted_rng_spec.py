"""A training spec whose augmentation draws from a private generator seeded from the clock: not replayable.

Used by test_data_verification to show that the prover refuses, at the first step, a step that draws
from a generator whose state is not committed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits


@training_spec(defaults=DEFAULTS)
def noisy_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    base = digits(hp)
    private = torch.Generator().manual_seed(time.time_ns())  # the flaw: not committed, differs on every run

    def step(batch: Batch) -> torch.Tensor:
        noisy = dict(batch)
        noisy["image"] = batch["image"] + 0.1 * torch.randn(batch["image"].shape, generator=private)
        return base.step(noisy)

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)
