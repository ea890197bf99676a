"""Record-time checks that a training step is a pure function of (state, batch, committed RNG).

A step that is not cannot be replayed from a checkpoint, and an audit that samples segments would
catch it only on some draws. These are the common causes, each refused at the step where it
happens, with the cause named (``NotReplayableError``, exit 2; the store stays resumable):

* ``optimizer.step()`` called other than once per step (gradient accumulation across calls of
  ``step``: accumulate over micro-batches inside one step instead); zero calls are accepted when a
  ``GradScaler`` in the spec's state skipped the update (inf/NaN gradients: its scale backs off);
* the scheduler stepped other than ``TrainingSpec.scheduler_steps`` times;
* a ``torch.Generator`` created inside the step (its seed is not committed), or one the spec
  created but did not register in ``TrainingSpec.generators`` whose state the step changed;
* random numbers drawn between steps, outside the step (a ``DataLoader`` without ``generator=``
  draws its workers' base seed from torch's global generator; evaluation with dropout), detected
  by comparing the generators' state a step starts from with the state the previous step left.

The generator checks swap ``torch.Generator`` for a subclass that notes where each is created, while
the spec is built and while each step runs; code that imported the class by another name before
is not seen (the pre-signing replay, ``prover/selfcheck.py``, still is).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from typing import Any

import torch

from trainwitness.errors import NotReplayableError
from trainwitness.tensors.state import FlatState

__all__ = ["tracking_generators", "StepGuard"]

_created: list[tuple[torch.Generator, str]] | None = None


class _TrackedGenerator(torch._C.Generator):
    """``torch.Generator`` while a spec is built or a step runs: notes where each one is created."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _created is not None:
            frame = traceback.extract_stack(limit=2)[0]
            _created.append((self, f"{frame.filename}:{frame.lineno}"))


@contextlib.contextmanager
def tracking_generators() -> Iterator[list[tuple[torch.Generator, str]]]:
    """Within the block, every ``torch.Generator()`` is listed with its creation site."""
    global _created
    outer, original = _created, torch.Generator
    _created = []
    torch.Generator = _TrackedGenerator  # type: ignore[misc]
    try:
        yield _created
    finally:
        torch.Generator = original  # type: ignore[misc]
        _created = outer


def _same_rng(a: FlatState, b: FlatState) -> bool:
    return a.skeleton == b.skeleton and a.tensors.keys() == b.tensors.keys() and all(
        torch.equal(t, b.tensors[n]) for n, t in a.tensors.items()
    )


class StepGuard:
    """The per-step checks above, for one recording. ``unregistered``: generators the build created but did not register."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, scheduler: Any, scheduler_steps: int,
        scalers: list[Any], unregistered: list[tuple[torch.Generator, str]],
    ) -> None:
        self._optimizer_calls = 0
        self._handle = optimizer.register_step_pre_hook(self._count)
        self._scheduler = scheduler
        self._scheduler_steps = scheduler_steps
        self._scalers = scalers
        self._unregistered = unregistered
        self._rng_left: FlatState | None = None
        self._epoch_left: int | None = getattr(scheduler, "last_epoch", None)
        self._rng_left_by = "checkpoint 0 (the state built from the seed)"
        self._tracking: Any = None
        self._created: list[tuple[torch.Generator, str]] = []
        self._epoch: int | None = None
        self._scales: list[float] = []
        self._before: list[torch.Tensor] = []

    def _count(self, *_: Any) -> None:
        self._optimizer_calls += 1

    def close(self) -> None:
        self._handle.remove()

    def expect_rng(self, rng: FlatState, left_by: str) -> None:
        """The generators' state the next step must start from (a private copy), and the scheduler's position now."""
        self._rng_left = FlatState({k: v.clone() for k, v in rng.tensors.items()}, rng.skeleton)
        self._rng_left_by = left_by
        self._epoch_left = getattr(self._scheduler, "last_epoch", None)

    def check_start(self, step: int, rng: FlatState) -> None:
        if self._rng_left is not None and not _same_rng(self._rng_left, rng):
            differ = sorted(
                n for n in set(rng.tensors) | set(self._rng_left.tensors)
                if n not in rng.tensors or n not in self._rng_left.tensors or not torch.equal(rng.tensors[n], self._rng_left.tensors[n])
            )
            raise NotReplayableError(
                f"step {step}: random numbers were drawn outside the step, after {self._rng_left_by} "
                f"(generators changed: {', '.join(differ) or 'numpy/python positions'}); a replay starts each step from "
                "the state the previous step left. Likely cause: a torch DataLoader created without generator= draws "
                "its workers' seed from torch's global generator (use the recording's data_loader(), or pass "
                "generator=torch.Generator()), or evaluation between steps draws random numbers (wrap it in "
                "torch.random.fork_rng())"
            )

    def begin(self, step: int) -> None:
        """Before the spec's step runs: note the optimizer, scheduler, scalers and generators; track creations."""
        self._optimizer_calls = 0
        self._epoch = getattr(self._scheduler, "last_epoch", None)
        if self._epoch != self._epoch_left:
            raise NotReplayableError(
                f"step {step}: the scheduler was stepped outside the step (last_epoch {self._epoch_left} -> {self._epoch} "
                "between steps); step it inside the step function, where a replay runs it"
            )
        self._scales = [s.get_scale() for s in self._scalers]
        self._before = [g.get_state() for g, _ in self._unregistered]
        self._tracking = tracking_generators()
        self._created = self._tracking.__enter__()

    def abandon(self) -> None:
        """The step raised: stop tracking, check nothing."""
        if self._tracking is not None:
            self._tracking.__exit__(None, None, None)
            self._tracking = None

    def end(self, step: int) -> None:
        """After the spec's step ran: raise ``NotReplayableError`` for what makes it unreplayable."""
        created = self._created
        self.abandon()
        if created:
            raise NotReplayableError(
                f"step {step}: the step created a torch.Generator at {created[0][1]}; its seed is not committed, so "
                "a replay cannot draw the same numbers (a clock-seeded generator never can). Create it when the spec "
                "is built and register it in TrainingSpec(generators={name: generator}), or draw from torch's global generator"
            )
        for (generator, site), state in zip(self._unregistered, self._before, strict=True):
            if not torch.equal(generator.get_state(), state):
                raise NotReplayableError(
                    f"step {step}: the step drew from a torch.Generator created at {site} that the spec does not register; "
                    "its state is not in the checkpoints, so a replay from one cannot draw the same numbers. Register it "
                    "in TrainingSpec(generators={name: generator})"
                )
        skipped = any(s.get_scale() < before_scale for s, before_scale in zip(self._scalers, self._scales, strict=True))
        if self._optimizer_calls != 1 and not (self._optimizer_calls == 0 and skipped):
            raise NotReplayableError(
                f"step {step}: the step called optimizer.step() {self._optimizer_calls} times, not once. "
                + (
                    "Likely cause: gradients accumulated across calls of step (a replay from a checkpoint starts with "
                    "none and does not know the count); accumulate over micro-batches inside one step instead"
                    if self._optimizer_calls == 0
                    else "A committed step is one optimizer update; split the work into steps"
                )
            )
        epoch = self._epoch
        self._epoch_left = getattr(self._scheduler, "last_epoch", None)
        if epoch is not None and self._scheduler.last_epoch - epoch != self._scheduler_steps:
            raise NotReplayableError(
                f"step {step}: the step stepped the scheduler {self._scheduler.last_epoch - epoch} times, not "
                f"{self._scheduler_steps} (TrainingSpec.scheduler_steps); a scheduler stepped outside the step "
                "(per epoch, in the training loop) is not replayed"
            )
