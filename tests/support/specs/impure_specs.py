"""Natural ports of training code that are not replayable from a checkpoint, and one that is.

Each wraps the digits workload's model and data; tests/unit/prover/test_replay_check.py shows which check of the
prover refuses each, and with which cause.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits


@training_spec(defaults=DEFAULTS)
def accumulate_across_calls(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """Gradient accumulation the way a loop over micro-batches is often ported: optimizer.step() every 2nd call."""
    base = digits(hp)
    calls = 0

    def step(batch: Batch) -> torch.Tensor:
        nonlocal calls
        base.model.train()
        loss = F.cross_entropy(base.model(batch["image"]), batch["label"])
        loss.backward()  # type: ignore[no-untyped-call]
        calls += 1
        if calls % 2 == 0:
            base.optimizer.step()
            base.optimizer.zero_grad(set_to_none=True)
        base.scheduler.step()  # type: ignore[union-attr]
        return loss.detach()

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)


@training_spec(defaults=DEFAULTS)
def clock_seeded_generator(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """Augmentation noise from a private generator created inside the step and seeded from the clock."""
    base = digits(hp)

    def step(batch: Batch) -> torch.Tensor:
        private = torch.Generator().manual_seed(time.time_ns())
        noisy = dict(batch, image=batch["image"] + 0.05 * torch.randn(batch["image"].shape, generator=private))
        return base.step(noisy)

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)


@training_spec(defaults=DEFAULTS)
def registered_generator(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """The same augmentation from a private generator created by the spec and registered: replayable."""
    base = digits(hp)
    private = torch.Generator().manual_seed(int(hp["seed"]) + 1)

    def step(batch: Batch) -> torch.Tensor:
        noisy = dict(batch, image=batch["image"] + 0.05 * torch.randn(batch["image"].shape, generator=private))
        return base.step(noisy)

    return TrainingSpec(
        model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step,
        generators={"augment": private},
    )


@training_spec(defaults=DEFAULTS)
def state_across_calls(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """A loss scale that grows with a call counter kept in a closure: no checkpoint holds it."""
    base = digits(hp)
    calls = 0

    def step(batch: Batch) -> torch.Tensor:
        nonlocal calls
        calls += 1
        base.model.train()
        loss = F.cross_entropy(base.model(batch["image"]), batch["label"]) * (1.0 + 0.01 * calls)
        base.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        base.optimizer.step()
        base.scheduler.step()  # type: ignore[union-attr]
        return loss.detach()

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)


@training_spec(defaults=DEFAULTS)
def scheduler_twice(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    base = digits(hp)

    def step(batch: Batch) -> torch.Tensor:
        loss = base.step(batch)
        base.scheduler.step()  # type: ignore[union-attr]
        return loss

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)


@training_spec(defaults=DEFAULTS)
def lr_from_counter(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """A learning rate from a call counter in a closure: the loss is computed first, the update then differs."""
    base = digits(hp)
    calls = 0

    def step(batch: Batch) -> torch.Tensor:
        nonlocal calls
        calls += 1
        base.model.train()
        loss = F.cross_entropy(base.model(batch["image"]), batch["label"])
        base.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for p in base.model.parameters():
                p.grad.mul_(1.0 + 0.1 * calls)  # type: ignore[union-attr]
        base.optimizer.step()
        base.scheduler.step()  # type: ignore[union-attr]
        return loss.detach()

    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=base.dataset, step=step)
