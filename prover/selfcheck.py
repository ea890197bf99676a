"""Before signing: replay recorded segments in the prover's own process and refuse a run that does not land.

A sampled audit catches a step that is not a pure function of (state, batch, committed RNG) only
on the draws that hit it; the prover can find out for certain, and cheaply, before it signs. It
rebuilds the run from the entry point the store names (as the verifier will), checks that the seed
builds checkpoint 0, then replays the first segment and one more drawn from the operating system's
randomness, each from its checkpoint file in a freshly built run (so state a step keeps between
calls, which no checkpoint holds, shows), on the recorded device and thread count, and compares every
step's sample ids, batch, generators and loss with the index, and the landing state bitwise with the
next checkpoint. Any difference raises ``NotReplayableError`` naming the step, the likely cause and
the tensors that differ; nothing is signed.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainwitness.commit.hints import ExactMode, read_hints
from trainwitness.commit.run_declaration import read_run_declaration
from trainwitness.commit.store import RUN_FILE, RunIndex, StepRecord, read_index
from trainwitness.data.datasets import Batch, batch_digest
from trainwitness.errors import MalformedInputError, MissingInputError, NotReplayableError
from trainwitness.run.device import device_kind
from trainwitness.run.environment import apply_execution_settings
from trainwitness.run.loop import ExactHooks, TrainingRun, loss_value
from trainwitness.run.rng import rng_digest
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest, tensor_digest

__all__ = ["ReplayCheck", "check_replay"]

_IMPURE = (
    "the step is not a pure function of (state, batch, committed RNG): it reads the clock or the environment, "
    "draws from a generator that is not committed, or keeps state between calls that no checkpoint holds "
    "(a counter, gradients accumulated across calls, a cache)"
)


@dataclass(frozen=True)
class ReplayCheck:
    segments: tuple[int, ...]  # the segments replayed, first the first
    seconds: float  # the check's wall time: rebuild and replays


def _differing(replayed: FlatState, recorded: FlatState) -> list[str]:
    names = sorted(set(replayed.tensors) | set(recorded.tensors))
    return [
        n for n in names
        if n not in replayed.tensors or n not in recorded.tensors
        or tensor_digest(n, replayed.tensors[n]) != tensor_digest(n, recorded.tensors[n])
    ]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "") if names else "metadata only"


def _replay(run: TrainingRun, store: Path, index: RunIndex, i: int, exact: ExactMode | None, later: bool) -> None:
    steps = [c.step for c in index.checkpoints]
    first, last = steps[i], steps[i + 1]
    start, _ = read_checkpoint(store, steps, i)
    if state_digest(start) != index.checkpoints[i].state_digest:
        raise MalformedInputError(f"store {store}: the checkpoint at step {first} does not hash to its recorded digest")
    run.restore(start)

    def record_of(step: int) -> StepRecord:
        record = index.steps[step]
        if not isinstance(record, StepRecord):
            raise MalformedInputError(f"store {store}: step {step} is a data-parallel record in a one-process run")
        return record

    def check(step: int, ids: list[int], batch: Batch, rng: FlatState) -> None:
        record = record_of(step)
        if list(record.sample_ids) != ids:
            raise NotReplayableError(f"step {step}: the recorded sample ids are not the declared sampler's")
        if batch_digest(batch) != record.batch_digest:
            raise NotReplayableError(
                f"step {step}: the batch the training loop passed to the step is not the dataset's batch of the declared "
                "sampler's sample ids. Likely cause: the DataLoader reordered, transformed or augmented samples outside "
                "the step (use the recording's data_loader() or DeclaredBatchSampler; random augmentation belongs inside the step)"
            )
        if rng_digest(rng) != record.rng_digest:
            raise NotReplayableError(
                f"step {step}: the generators' state before the step differs on replay from the recorded one (segment "
                f"{i}, steps {first}->{last}). Likely cause: {_IMPURE}; the step before it drew a different amount of random numbers"
            )

    def finished(step: int, loss: object) -> None:
        recorded, replayed = record_of(step).loss, loss_value(loss)
        if recorded != replayed:
            raise NotReplayableError(
                f"step {step}: the step returned loss {replayed!r} on replay, {recorded!r} when recorded (segment {i}, "
                f"steps {first}->{last}). Likely cause: {_IMPURE}"
            )

    hints = None if exact is None else read_hints(store, len(index.steps))
    hooks = None if exact is None or hints is None else ExactHooks(exact, lambda s: hints[s])
    run.run(first, last, check, hooks, finished)
    landed = run.capture_on_host()
    if state_digest(landed) != index.checkpoints[i + 1].state_digest:
        recorded, _ = read_checkpoint(store, steps, i + 1)
        differing = _differing(landed, recorded)
        cause = (
            "the state the step keeps between calls is not in the checkpoints (segment 0 replayed, a later one did not): "
            "a counter, gradients accumulated across calls, a cache"
            if later else _IMPURE
        )
        if differing and all(n.startswith("rng/") for n in differing):
            cause = "the step draws a different amount of random numbers on replay: " + cause
        raise NotReplayableError(
            f"segment {i} (steps {first}->{last}) does not replay onto the recorded checkpoint at step {last}; "
            f"differing: {_shown(differing)}. Likely cause: {cause}. Nothing was signed"
        )


def check_replay(store: Path, segments: list[int] | None = None) -> ReplayCheck:
    """Replay the first segment and one drawn from OS randomness (or ``segments``) of a complete store; raise if one differs.

    Runs the store's entry point in this process, on the recorded device kind and thread count. A
    data-parallel run's store (``distributed`` declared), or one with a parent or frozen inputs, is
    not replayed here: none is checked.
    Raises ``NotReplayableError`` (exit 2) naming the step, the likely cause and the differing
    tensors; ``MalformedInputError`` for a store it cannot read.
    """
    started = time.perf_counter()
    declared = read_run_declaration(store)
    if declared is None:
        raise MissingInputError(f"store {store}: {RUN_FILE} is missing")
    if declared.distributed is not None or declared.parent is not None or declared.inputs:
        # A data-parallel run replays per rank (docs/DISTRIBUTED.md); a run with a parent or frozen
        # inputs is built from files this function is not given (docs/LINEAGE.md): not checked here yet.
        return ReplayCheck((), time.perf_counter() - started)
    environment, exact = declared.environment, declared.exact
    kind = device_kind(str(environment["device"]))
    apply_execution_settings(int(environment["torch_threads"]))
    function = load_entry_point(declared.entry_point)
    hp = resolve_hyperparameters(function.defaults, declared.hyperparameters)
    index = read_index(store)
    run = TrainingRun.start(function, hp, device=torch.device(kind))
    if state_digest(run.capture_on_host()) != index.checkpoints[0].state_digest:
        raise NotReplayableError(
            "the state the spec builds from the declared seed is not the recorded checkpoint 0: building is not a pure "
            "function of the hyperparameters (it reads the clock, a file that changed, or builds on the accelerator: "
            "build on the CPU, trainwitness moves the model). Nothing was signed"
        )
    count = len(index.checkpoints) - 1
    if segments is None:
        segments = [0] + ([1 + secrets.randbelow(count - 1)] if count > 1 else [])
    for n, i in enumerate(segments):
        if not 0 <= i < count:
            raise ValueError(f"segment {i} is not in 0..{count - 1}")
        if n > 0:  # each segment from a fresh build, as a verifier that draws it alone would run it
            run = TrainingRun.start(function, hp, device=torch.device(kind))
        _replay(run, store, index, i, exact, later=i > 0)
    return ReplayCheck(tuple(segments), time.perf_counter() - started)
