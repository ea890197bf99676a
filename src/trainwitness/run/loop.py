"""The step executor: the one loop that both training and replay run.

Recording and replay differ only in what they do with each step's batch and RNG state before the
step runs (the prover commits them, the verifier checks them against the commitments); the step
itself, the batch derivation and the state capture are this module's, shared, so that replay runs
the very code path that produced the evidence.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.hints import ExactMode, StepHints
from trainwitness.commit.statement import check_core_hyperparameters
from trainwitness.data.datasets import Batch
from trainwitness.errors import MalformedInputError, ParentMismatchError
from trainwitness.run.device import to_device, using_device
from trainwitness.run.distributed import DataParallel, emulated_reduction, split_batch
from trainwitness.run.exact import round_gradients, round_step, rounding_targets
from trainwitness.run.guard import StepGuard, tracking_generators
from trainwitness.run.inputs import provide_inputs
from trainwitness.run.parent import ParentStart, StartRecord, load_finetune
from trainwitness.run.rng import capture_rng, restore_rng, seed_everything
from trainwitness.run.sampler import ShuffledEpochSampler
from trainwitness.run.spec import SpecFunction, TrainingSpec
from trainwitness.tensors.state import FlatState, flatten, unflatten, weights_of

__all__ = [
    "ExactHooks", "LossObserver", "RankObserver", "StepObserver", "TrainingRun", "current_step", "loss_value", "snapshot",
    "weights_of",
]

# (step, sample ids, batch, RNG state the step starts from) -> None; raises to stop the run.
# In one rank of a data-parallel run: that rank's shard of the batch.
StepObserver = Callable[[int, list[int], Batch, FlatState], None]
# (step, the loss the step returned: a private detached copy, or None) -> None; raises to stop the run.
LossObserver = Callable[[int, object], None]
# (step, rank, that rank's sample ids, its batch, its RNG state) -> None: one process replaying every rank.
RankObserver = Callable[[int, int, list[int], Batch, FlatState], None]


# --- exact mode (docs/EXACT.md) ---------------------------------------------------------------
@dataclass(frozen=True)
class ExactHooks:
    """Exact mode for ``TrainingRun.run``: gradients rounded before the optimizer step, state after.

    ``committed(step)`` gives the committed hints in replay, ``None`` when recording (the prover's
    own values decide); ``produced(step, hints)`` receives the hints the step used.
    """

    mode: ExactMode
    committed: Callable[[int], StepHints | None]
    produced: Callable[[int, StepHints], None] | None = None


# --- end exact mode -----------------------------------------------------------------------------


def snapshot(flat: FlatState) -> FlatState:
    """A private CPU copy of every tensor (copy point: device-to-host, or host-to-host on CPU)."""
    return FlatState({k: v.detach().to("cpu", copy=True).contiguous() for k, v in flat.tensors.items()}, flat.skeleton)


_current_step: ContextVar[int | None] = ContextVar("trainwitness_step", default=None)


def current_step() -> int | None:
    """The index of the committed step running now (None outside a step): what a framework calls ``batch_idx``."""
    return _current_step.get()


def _enter_device(device: torch.device) -> Any:
    context = using_device(device)
    context.__enter__()
    return context


def loss_value(loss: object) -> float | str | None:
    """A step's returned loss as committed: a finite float, ``"nan"``/``"inf"``/``"-inf"``, or None.

    A tensor must hold one element (sync point on an accelerator: its value is read); floats of
    any dtype are exact as a Python float. Raises ``TypeError`` for anything else.
    """
    if loss is None:
        return None
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise TypeError(f"the step returned a tensor of shape {tuple(loss.shape)} as its loss; return a scalar")
        loss = loss.item()
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        raise TypeError(f"the step returned {type(loss).__name__} as its loss; return a scalar tensor, a float or None")
    value = float(loss)
    return value if math.isfinite(value) else repr(value)


def _detached(loss: object) -> object:
    """A private copy of a returned loss tensor (asynchronous on an accelerator: no sync here)."""
    return loss.detach().clone() if isinstance(loss, torch.Tensor) else loss


@dataclass
class TrainingRun:
    spec: TrainingSpec
    hyperparameters: Mapping[str, JSONValue]
    sampler: ShuffledEpochSampler
    parallel: DataParallel | None = None  # a rank of a data-parallel run, or every rank at once (docs/DISTRIBUTED.md)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    guard: StepGuard | None = None  # recording only: the per-step purity checks (run/guard.py)
    carried: tuple[str, torch.Tensor] | None = None  # a recorded accelerator generator, replayed elsewhere (run/rng.py)
    _current: Any = field(default=None, repr=False)  # the context of the step between begin_step and end_step
    start_record: StartRecord | None = None  # how a parent formed checkpoint 0; None for a seeded start
    inputs_read: frozenset[str] = frozenset()  # the frozen inputs the spec read while it was built

    @classmethod
    def start(
        cls,
        function: SpecFunction,
        hyperparameters: Mapping[str, JSONValue],
        parallel: DataParallel | None = None,
        *,
        parent: ParentStart | None = None,
        inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        device: torch.device | str = "cpu",
        guarded: bool = False,
    ) -> TrainingRun:
        """Seed every generator from the declared seed, build on the CPU, move to ``device``, then load the
        parent if any: this is checkpoint 0.

        Every rank of a data-parallel run builds the same state from the same seed (a spec's
        ``data_parallel(model)`` is a collective: every rank calls ``start`` at once).
        ``parent`` (``trainwitness.run.parent``): a fine-tune loads the parent's final weights into
        the built model but for ``spec.reinitialised``; continued training restores the parent's
        whole final state. ``inputs`` are the frozen inputs the spec may read by name while it is
        built (``trainwitness.run.inputs.frozen_input``). ``guarded``: check each step for what
        would make it unreplayable (recording; ``run/guard.py``). Raises ``ParentMismatchError``
        when the parent's weights or state do not fit the spec, ``MalformedInputError`` naming a
        hyperparameter the core reads that is out of range, or a batch size larger than the
        spec's dataset, before the sampler uses it.
        """
        check_core_hyperparameters(dict(hyperparameters), "hyperparameters")
        if parallel is not None and int(hyperparameters["batch_size"]) % parallel.world_size:
            raise MalformedInputError(f"batch size {hyperparameters['batch_size']} does not split over {parallel.world_size} ranks")
        device = torch.device(device)
        seed_everything(int(hyperparameters["seed"]))
        tracking: contextlib.AbstractContextManager[list[tuple[torch.Generator, str]]] = (
            tracking_generators() if guarded else contextlib.nullcontext([])
        )
        with provide_inputs(inputs or {}) as offered, using_device(device), tracking as created:
            spec = function(hyperparameters)
        if not isinstance(spec, TrainingSpec):
            raise MalformedInputError(f"the training spec returned {type(spec).__name__}, not a TrainingSpec")
        check_core_hyperparameters(dict(hyperparameters), "hyperparameters", num_samples=len(spec.dataset))
        if device.type != "cpu":  # copy point: the parameters move (in place: the optimizer keeps them)
            spec.model.to(device)
            for obj in spec.state.values():
                if callable(getattr(obj, "to", None)):
                    obj.to(device)  # type: ignore[attr-defined]
        sampler = ShuffledEpochSampler(
            num_samples=len(spec.dataset),
            batch_size=int(hyperparameters["batch_size"]),
            seed=int(hyperparameters["data_seed"]),
        )
        run = cls(
            spec=spec, hyperparameters=hyperparameters, sampler=sampler, parallel=parallel, device=device,
            inputs_read=frozenset(offered.read),
        )
        if parent is not None and parent.weights is not None:
            run.start_record = load_finetune(spec.model, parent.weights, spec.reinitialised)
        elif parent is not None and parent.state is not None:
            try:
                run.restore(parent.state)  # model, optimizer, scheduler and RNG: the parent's, exactly
            except MalformedInputError as e:
                raise ParentMismatchError(f"the parent's final state does not fit the spec: {e}") from e
            run.start_record = StartRecord(mode="continue")
        if guarded:
            registered = [id(g) for g in spec.generators.values()]
            run.guard = StepGuard(
                spec.optimizer, spec.scheduler, spec.scheduler_steps,
                [obj for obj in spec.state.values() if isinstance(obj, torch.amp.GradScaler)],
                [(g, site) for g, site in created if id(g) not in registered],
            )
        return run

    def capture_rng(self) -> FlatState:
        """Every committed generator's state (a copy)."""
        return capture_rng(self.device, self.spec.generators, self.carried)

    def trainable(self) -> FlatState:
        """Model, optimizer and scheduler state (and ``extra`` state); tensors are references to the live ones."""
        scheduler = self.spec.scheduler.state_dict() if self.spec.scheduler is not None else None
        state: dict[str, Any] = {
            "model": self.spec.model.state_dict(), "optimizer": self.spec.optimizer.state_dict(), "scheduler": scheduler,
        }
        if self.spec.state:
            state["extra"] = {name: obj.state_dict() for name, obj in self.spec.state.items()}
        try:
            return flatten(state)
        except ValueError as e:  # a value that cannot be stored: the spec's, not a misuse of this API
            raise MalformedInputError(f"the training state cannot be recorded: {e}") from e

    def capture(self) -> FlatState:
        """Everything the next step depends on; tensors are references, not copies."""
        trainable = self.trainable()
        rng = self.capture_rng()
        skeleton = dict(trainable.skeleton)  # type: ignore[arg-type,unused-ignore]
        skeleton["rng"] = rng.skeleton
        return FlatState({**trainable.tensors, **rng.tensors}, skeleton)

    def capture_on_host(self) -> FlatState:
        """``capture()`` with every tensor on the CPU, where digests are taken (copy point on an accelerator only)."""
        flat = self.capture()
        return flat if self.device.type == "cpu" else snapshot(flat)

    def restore(self, flat: FlatState) -> None:
        """Make ``flat`` the run's state, copying its tensors: the caller may go on using ``flat``."""
        self._restore(flat, copy=True)

    def restore_taking_ownership(self, decode: Callable[[], FlatState]) -> None:
        """Make the checkpoint that ``decode()`` returns the run's state, taking its tensors without a copy.

        For a checkpoint decoded for this restore alone: the caller never holds it, so nothing it
        keeps can alias the run's live state; tensors that share memory are refused all the same.
        What the checkpoint replaces (optimizer state, gradients) is released before ``decode()``
        runs, so the old and the new state are never held together (peak memory). Gradients are
        not part of a checkpoint: the run continues from it as a fresh run would, with none. If
        ``decode()`` raises, the run is left without optimizer state and must not step on.
        """
        self.spec.optimizer.zero_grad(set_to_none=True)
        self.spec.model.zero_grad(set_to_none=True)
        self.spec.optimizer.state.clear()
        flat = decode()
        storages = [t.untyped_storage().data_ptr() for t in flat.tensors.values() if t.numel() > 0]
        if len(set(storages)) != len(storages):
            raise ValueError("restore_taking_ownership needs tensors that share no memory; use restore")
        self._restore(flat, copy=False)

    def _restore(self, flat: FlatState, copy: bool) -> None:
        skeleton: Any = flat.skeleton
        parts = {"model", "optimizer", "scheduler", "rng"} | ({"extra"} if self.spec.state else set())
        if not isinstance(skeleton, dict) or set(skeleton) != parts:
            raise MalformedInputError(f"checkpoint skeleton does not hold exactly {', '.join(sorted(parts))}")
        rng_tensors = {k: v for k, v in flat.tensors.items() if k.startswith("rng/")}
        rest = {k: v for k, v in flat.tensors.items() if not k.startswith("rng/")}
        # Copy point (unless the caller handed the tensors over): optimizer.load_state_dict keeps
        # tensors of the right dtype as they are, so without a copy the next step would write into
        # the caller's checkpoint.
        if copy:
            rest = {k: v.clone() for k, v in rest.items()}
        state = unflatten(FlatState(rest, {k: skeleton[k] for k in parts - {"rng"}}))
        try:
            self.spec.model.load_state_dict(state["model"], strict=True)
            self.spec.optimizer.load_state_dict(state["optimizer"])
            if (state["scheduler"] is None) != (self.spec.scheduler is None):
                raise MalformedInputError("checkpoint and spec disagree on whether there is a scheduler")
            if self.spec.scheduler is not None:
                self.spec.scheduler.load_state_dict(state["scheduler"])
            if self.spec.state:
                if not isinstance(state["extra"], dict) or set(state["extra"]) != set(self.spec.state):
                    raise MalformedInputError(f"checkpoint's extra state is not the spec's {sorted(self.spec.state)}")
                for name, obj in self.spec.state.items():
                    obj.load_state_dict(state["extra"][name])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError) as e:
            # What torch's load_state_dict raises for a state of another shape or structure (the
            # committed state is the prover's: any of these is its malformation, not a crash).
            raise MalformedInputError(f"checkpoint does not fit the spec's model or optimizer: {e}") from e
        self.carried = restore_rng(FlatState(rng_tensors, skeleton["rng"]), self.device, self.spec.generators)

    def begin_step(self, step: int, ids: list[int], batch: Batch, observe: StepObserver) -> Batch:
        """Commit or check (``observe``) the batch and the generators the step starts from; return the batch on the device.

        For a framework that runs the step itself (Lightning, the HF Trainer); ``step`` runs the spec's.
        Every ``begin_step`` is followed by ``end_step`` or ``abandon_step``.
        """
        rng = self.capture_rng()
        if self.guard is not None:
            self.guard.check_start(step, rng)
        observe(step, ids, batch, rng)
        self._current = (_current_step.set(step), _enter_device(self.device))
        if self.guard is not None:
            self.guard.begin(step)
        return to_device(batch, self.device)

    def abandon_step(self) -> None:
        """The step raised: leave its context without checks."""
        if self.guard is not None:
            self.guard.abandon()
        self._leave()

    def _leave(self) -> None:
        if self._current is not None:
            token, device = self._current
            device.__exit__(None, None, None)
            _current_step.reset(token)
            self._current = None

    def end_step(self, step: int, loss: object, finished: LossObserver | None = None) -> None:
        """After the step ran: the per-step checks (recording), then hand the returned loss to ``finished``."""
        self._leave()
        if self.guard is not None:
            self.guard.end(step)
            self.guard.expect_rng(self.capture_rng(), f"step {step}")
        if finished is not None:
            finished(step, _detached(loss))

    def step(
        self, step: int, ids: list[int], batch: Batch, observe: StepObserver,
        exact: ExactHooks | None = None, finished: LossObserver | None = None,
    ) -> None:
        """One committed step: commit or check (``observe``) the batch and the generators, run the spec's step
        on the run's device, hand the returned loss to ``finished`` (a private copy, not yet read)."""
        on_device = self.begin_step(step, ids, batch, observe)
        loss: object
        try:
            if exact is None:
                loss = self.spec.step(on_device)
            else:
                loss, hints = self.exact_step(step, on_device, exact)  # the same rounding code records and replays
                if exact.produced is not None:
                    exact.produced(step, hints)
        except BaseException:
            self.abandon_step()
            raise
        self.end_step(step, loss, finished)

    def run(
        self, start: int, stop: int, observe: StepObserver, exact: ExactHooks | None = None,
        finished: LossObserver | None = None,
    ) -> None:
        """Steps ``start`` .. ``stop - 1`` from the current state, each batch built from the dataset.

        In a rank of a data-parallel run each step trains on that rank's shard of the batch.
        """
        if self.parallel is not None and self.parallel.rank is None:
            raise ValueError("a run that plays every rank steps with run_ranks")
        for step in range(start, stop):
            ids = self.sampler.batch_ids(step)
            if self.parallel is not None:
                ids = self.parallel.shard(ids)
            self.step(step, ids, self.spec.dataset.batch(ids), observe, exact, finished)

    def run_ranks(self, start: int, stop: int, observe: RankObserver, exact: ExactHooks | None = None) -> None:
        """Steps ``start`` .. ``stop - 1`` of a W-rank data-parallel run, every rank's share computed here.

        ``observe`` sees each rank's shard and the RNG state it starts from (one process: the same for
        every rank); the step then runs with the ranks' mean gradient (``emulated_reduction``), rounded
        in exact mode as the recording rounded DDP's.
        """
        if self.parallel is None or self.parallel.rank is not None:
            raise ValueError("run_ranks plays every rank of a data-parallel run")
        for step in range(start, stop):
            shards = split_batch(self.sampler.batch_ids(step), self.parallel.world_size)
            batches = [self.spec.dataset.batch(ids) for ids in shards]
            rng = self.capture_rng()
            for rank, (ids, batch) in enumerate(zip(shards, batches, strict=True)):
                observe(step, rank, ids, batch, rng)
            with emulated_reduction(self.spec.model, self.spec.step, batches) as last:
                if exact is None:
                    self.spec.step(last)
                    continue
                _, hints = self.exact_step(step, last, exact)
            if exact.produced is not None:
                exact.produced(step, hints)

    def exact_step(self, step: int, batch: Batch, exact: ExactHooks) -> tuple[object, StepHints]:
        """Run the spec's step with its gradients rounded as the optimizer reads them, then round the state.

        The gradients are rounded by an optimizer step pre-hook, so after whatever the step does to
        them (clipping, accumulation) and before the optimizer's arithmetic amplifies their noise.
        """
        committed = exact.committed(step)
        rounded: list[tuple[tuple[int, ...], bytes]] = []

        def before_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if rounded:
                raise MalformedInputError(f"exact mode: step {step} of the training program called optimizer.step() twice")
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            rounded.append(round_gradients(exact.mode.gradients, parameters, committed))

        previous = {t.name: t.tensor.detach().clone() for t in rounding_targets(self.trainable().tensors)}
        handle = self.spec.optimizer.register_step_pre_hook(before_optimizer_step)
        try:
            loss = self.spec.step(batch)
        finally:
            handle.remove()
        if not rounded:
            raise MalformedInputError(f"exact mode: step {step} of the training program did not call optimizer.step()")
        scales, gradient_hints = rounded[0]
        state = [replace(t, previous=previous.get(t.name)) for t in rounding_targets(self.trainable().tensors)]
        state_hints = round_step(exact.mode.state, state, None if committed is None else committed.state_hints)
        return loss, StepHints(scales, gradient_hints, state_hints)
