"""The step executor: the one loop that both training and replay run.

Recording and replay differ only in what they do with each step's batch and RNG state before the
step runs (the prover commits them, the verifier checks them against the commitments); the step
itself, the batch derivation and the state capture are this module's, shared, so that replay runs
the very code path that produced the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.hints import ExactMode, StepHints
from trainwitness.data.datasets import Batch
from trainwitness.errors import MalformedInputError, ParentMismatchError
from trainwitness.run.distributed import DataParallel, emulated_reduction, split_batch
from trainwitness.run.exact import round_gradients, round_step, rounding_targets
from trainwitness.run.inputs import provide_inputs
from trainwitness.run.parent import ParentStart, StartRecord, load_finetune
from trainwitness.run.rng import capture_rng, restore_rng, seed_everything
from trainwitness.run.sampler import ShuffledEpochSampler
from trainwitness.run.spec import SpecFunction, TrainingSpec
from trainwitness.tensors.state import FlatState, flatten, unflatten, weights_of

__all__ = ["ExactHooks", "RankObserver", "StepObserver", "TrainingRun", "snapshot", "weights_of"]

# (step, sample ids, batch, RNG state the step starts from) -> None; raises to stop the run.
# In one rank of a data-parallel run: that rank's shard of the batch.
StepObserver = Callable[[int, list[int], Batch, FlatState], None]
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


@dataclass
class TrainingRun:
    spec: TrainingSpec
    hyperparameters: Mapping[str, JSONValue]
    sampler: ShuffledEpochSampler
    parallel: DataParallel | None = None  # a rank of a data-parallel run, or every rank at once (docs/DISTRIBUTED.md)
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
    ) -> TrainingRun:
        """Seed every generator from the declared seed, build, then load the parent if any: this is checkpoint 0.

        Every rank of a data-parallel run builds the same state from the same seed (a spec's
        ``data_parallel(model)`` is a collective: every rank calls ``start`` at once).
        ``parent`` (``trainwitness.run.parent``): a fine-tune loads the parent's final weights into
        the built model but for ``spec.reinitialised``; continued training restores the parent's
        whole final state. ``inputs`` are the frozen inputs the spec may read by name while it is
        built (``trainwitness.run.inputs.frozen_input``). Raises ``ParentMismatchError`` when the
        parent's weights or state do not fit the spec.
        """
        if parallel is not None and int(hyperparameters["batch_size"]) % parallel.world_size:
            raise MalformedInputError(f"batch size {hyperparameters['batch_size']} does not split over {parallel.world_size} ranks")
        seed_everything(int(hyperparameters["seed"]))
        with provide_inputs(inputs or {}) as offered:
            spec = function(hyperparameters)
        sampler = ShuffledEpochSampler(
            num_samples=len(spec.dataset),
            batch_size=int(hyperparameters["batch_size"]),
            seed=int(hyperparameters["data_seed"]),
        )
        run = cls(spec=spec, hyperparameters=hyperparameters, sampler=sampler, parallel=parallel, inputs_read=frozenset(offered.read))
        if parent is not None and parent.weights is not None:
            run.start_record = load_finetune(spec.model, parent.weights, spec.reinitialised)
        elif parent is not None and parent.state is not None:
            try:
                run.restore(parent.state)  # model, optimizer, scheduler and RNG: the parent's, exactly
            except MalformedInputError as e:
                raise ParentMismatchError(f"the parent's final state does not fit the spec: {e}") from e
            run.start_record = StartRecord(mode="continue")
        return run

    def trainable(self) -> FlatState:
        """Model, optimizer and scheduler state; tensors are references to the live ones."""
        scheduler = self.spec.scheduler.state_dict() if self.spec.scheduler is not None else None
        return flatten(
            {"model": self.spec.model.state_dict(), "optimizer": self.spec.optimizer.state_dict(), "scheduler": scheduler}
        )

    def capture(self) -> FlatState:
        """Everything the next step depends on; tensors are references, not copies."""
        trainable = self.trainable()
        rng = capture_rng()
        skeleton = dict(trainable.skeleton)
        skeleton["rng"] = rng.skeleton
        return FlatState({**trainable.tensors, **rng.tensors}, skeleton)

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
        if not isinstance(skeleton, dict) or set(skeleton) != {"model", "optimizer", "scheduler", "rng"}:
            raise MalformedInputError("checkpoint skeleton does not hold exactly model, optimizer, scheduler, rng")
        rng_tensors = {k: v for k, v in flat.tensors.items() if k.startswith("rng/")}
        rest = {k: v for k, v in flat.tensors.items() if not k.startswith("rng/")}
        # Copy point (unless the caller handed the tensors over): optimizer.load_state_dict keeps
        # tensors of the right dtype as they are, so without a copy the next step would write into
        # the caller's checkpoint.
        if copy:
            rest = {k: v.clone() for k, v in rest.items()}
        state = unflatten(FlatState(rest, {k: skeleton[k] for k in ("model", "optimizer", "scheduler")}))
        try:
            self.spec.model.load_state_dict(state["model"], strict=True)
            self.spec.optimizer.load_state_dict(state["optimizer"])
            if (state["scheduler"] is None) != (self.spec.scheduler is None):
                raise MalformedInputError("checkpoint and spec disagree on whether there is a scheduler")
            if self.spec.scheduler is not None:
                self.spec.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise MalformedInputError(f"checkpoint does not fit the spec's model or optimizer: {e}") from e
        restore_rng(FlatState(rng_tensors, skeleton["rng"]))

    def run(self, start: int, stop: int, observe: StepObserver, exact: ExactHooks | None = None) -> None:
        """Steps ``start`` .. ``stop - 1`` from the current state (rounded after each step in exact mode).

        In a rank of a data-parallel run each step trains on that rank's shard of the batch.
        """
        if self.parallel is not None and self.parallel.rank is None:
            raise ValueError("a run that plays every rank steps with run_ranks")
        for step in range(start, stop):
            ids = self.sampler.batch_ids(step)
            if self.parallel is not None:
                ids = self.parallel.shard(ids)
            batch = self.spec.dataset.batch(ids)
            observe(step, ids, batch, capture_rng())
            if exact is None:
                self.spec.step(batch)
                continue
            hints = self.exact_step(step, batch, exact)  # the same rounding code records and replays
            if exact.produced is not None:
                exact.produced(step, hints)

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
            rng = capture_rng()
            for rank, (ids, batch) in enumerate(zip(shards, batches, strict=True)):
                observe(step, rank, ids, batch, rng)
            with emulated_reduction(self.spec.model, self.spec.step, batches) as last:
                if exact is None:
                    self.spec.step(last)
                    continue
                hints = self.exact_step(step, last, exact)
            if exact.produced is not None:
                exact.produced(step, hints)

    def exact_step(self, step: int, batch: Batch, exact: ExactHooks) -> StepHints:
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
            self.spec.step(batch)
        finally:
            handle.remove()
        if not rounded:
            raise MalformedInputError(f"exact mode: step {step} of the training program did not call optimizer.step()")
        scales, gradient_hints = rounded[0]
        state = [replace(t, previous=previous.get(t.name)) for t in rounding_targets(self.trainable().tensors)]
        state_hints = round_step(exact.mode.state, state, None if committed is None else committed.state_hints)
        return StepHints(scales, gradient_hints, state_hints)
