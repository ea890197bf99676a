"""Replaying one segment (checkpoint i -> i+1) and comparing where it lands, bitwise."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trainwitness.commit.store import StepRecord
from trainwitness.data.datasets import Batch, batch_digest
from trainwitness.errors import CommitmentError, DataMismatchError, MalformedInputError, ReplayMismatchError
from trainwitness.run.loop import ExactHooks, TrainingRun, loss_value, snapshot
from trainwitness.run.rng import device_generator_state, rng_digest
from trainwitness.tensors.state import FlatState, state_digest, state_digests, tensor_digest
from trainwitness.verifier.bounded import SegmentDistance, segment_distance
from trainwitness.verifier.evidence import Evidence

__all__ = ["EXACT_LOSS_TOLERANCE", "SegmentResult", "replay_segment"]


@dataclass(frozen=True)
class SegmentResult:
    index: int
    first_step: int
    last_step: int  # exclusive: the step of checkpoint index + 1
    seconds: float
    distance: SegmentDistance | None = None  # bounded mode only


def _differing_tensors(replayed: FlatState, committed: FlatState) -> list[str]:
    names = sorted(set(replayed.tensors) | set(committed.tensors))
    return [
        n
        for n in names
        if n not in replayed.tensors
        or n not in committed.tensors
        or tensor_digest(n, replayed.tensors[n]) != tensor_digest(n, committed.tensors[n])
    ]


# Exact mode replays on other thread counts and devices: the loss, computed before any rounding, may
# differ there in its last bits (more under autocast), so it is compared within this relative tolerance.
EXACT_LOSS_TOLERANCE = 2.0**-7


def _shown(differing: list[str]) -> str:
    return ", ".join(differing[:6]) + (f" and {len(differing) - 6} more" if len(differing) > 6 else "") or "metadata"


def _loss_agrees(committed: float | str | None, replayed: float | str | None, exact: bool) -> bool:
    if isinstance(committed, float) and isinstance(replayed, float) and exact:
        return abs(committed - replayed) <= EXACT_LOSS_TOLERANCE * max(abs(committed), abs(replayed)) + 1e-12
    return committed == replayed


def replay_segment(run: TrainingRun, evidence: Evidence, i: int, bound: float | None = None) -> SegmentResult:
    """Restore checkpoint i, check it restored to exactly what it commits, re-run its steps checking
    each batch, RNG and loss leaf, compare with i+1.

    Bitwise unless ``bound`` is given (bounded mode, bound.py; losses are not compared there); an
    exact-mode run applies its committed hints after every step and is compared bitwise (its
    losses within ``EXACT_LOSS_TOLERANCE``). On another kind of device than the recorded one, the
    recorded accelerator's generator is carried unchanged: a segment whose recording drew from it
    cannot be replayed here (``MalformedInputError``, exit 2, rather than a rejection).
    """
    started = time.perf_counter()
    first = evidence.checkpoint(i).step
    last = evidence.checkpoint(i + 1).step
    # Decoded for this replay alone, the start checkpoint's tensors become the run's (no copy: peak memory).
    run.restore_taking_ownership(lambda: evidence.load_checkpoint(i))
    # What is committed is what runs: restoring may convert what a file holds (load_state_dict casts a
    # float64 momentum buffer to the parameter's float32, for one), so two different committed byte
    # strings could start the same replay. The live state, captured again, must be the committed one.
    restored = run.capture_on_host()
    if state_digest(restored) != evidence.checkpoint(i).state_digest:
        differing = _differing_tensors(restored, evidence.load_checkpoint(i))
        raise ReplayMismatchError(
            f"segment {i}: checkpoint {i} restores to a state other than the one it commits "
            f"(the training code converts it on loading); differing: {_shown(differing)}"
        )
    start_copy = snapshot(restored) if bound is not None else None  # the steps below move the live state

    world = evidence.claim.world_size
    rng_seen: tuple[FlatState, str] | None = None  # one process replaying every rank: one RNG state, W checks

    def check_shard(step: int, rank: int, ids: list[int], batch: Batch, rng: FlatState) -> None:
        nonlocal rng_seen
        shards = evidence.step(step).shards
        if len(shards) != world:
            raise CommitmentError(f"step {step}: {len(shards)} ranks committed, the attestation declares {world}")
        committed = shards[rank]
        where = f"step {step}" if world == 1 else f"step {step}, rank {rank}"
        if list(committed.sample_ids) != ids:
            raise DataMismatchError(
                f"{where}: committed batch has sample ids {list(committed.sample_ids)[:8]}..., "
                f"the declared sampler gives {ids[:8]}..."
            )
        if batch_digest(batch) != committed.batch_digest:
            raise DataMismatchError(f"{where}: committed batch contents differ from the declared dataset's samples {ids[:8]}...")
        if rng_seen is None or rng_seen[0] is not rng:
            rng_seen = (rng, rng_digest(rng))
        if rng_seen[1] != committed.rng_digest:
            raise ReplayMismatchError(f"{where}: the RNG state before the step differs from the committed one")

    def check_loss(step: int, loss: object) -> None:
        record = evidence.step(step)
        if not isinstance(record, StepRecord):  # a data-parallel run's step commits no loss
            return
        committed, replayed = record.loss, loss_value(loss)
        if bound is None and not _loss_agrees(committed, replayed, evidence.claim.exact is not None):
            raise ReplayMismatchError(f"step {step}: the replayed step returned loss {replayed!r}, the committed loss is {committed!r}")

    exact = None if evidence.claim.exact is None else ExactHooks(evidence.claim.exact, evidence.hints)
    carried = run.carried  # the recorded accelerator's generator at checkpoint i, on a replay elsewhere
    try:
        if run.parallel is not None and run.parallel.rank is None:
            run.run_ranks(first, last, check_shard, exact)
        else:
            rank = run.parallel.rank if run.parallel is not None and run.parallel.rank is not None else 0
            run.run(first, last, lambda step, ids, batch, rng: check_shard(step, rank, ids, batch, rng), exact, check_loss)
        replayed = run.capture_on_host()
        if carried is not None and bound is None and state_digest(replayed) != evidence.checkpoint(i + 1).state_digest:
            raise ReplayMismatchError(f"segment {i} does not land on checkpoint {i + 1}")
    except ReplayMismatchError as e:
        if carried is not None:
            landing = device_generator_state(evidence.load_checkpoint(i + 1))
            if landing is None or not torch.equal(landing[1], carried[1]):
                raise MalformedInputError(
                    f"segment {i} (steps {first}->{last}): the recorded steps drew random numbers from the "
                    f"{carried[0].split('/')[1].replace('torch_', '')} generator, which a replay on {run.device} cannot "
                    "reproduce: verify on a device of the recorded kind (--device)"
                ) from e
        raise
    if start_copy is not None and bound is not None:
        distance = segment_distance(start_copy, replayed, evidence.load_checkpoint(i + 1))
        if not distance.overall <= bound:
            raise ReplayMismatchError(
                f"segment {i} (steps {first}->{last}): bounded replay lands {distance.overall:.3g} (relative to the "
                f"segment's update) from checkpoint {i + 1}, over the bound {bound:.3g}"
            )
        return SegmentResult(i, first, last, time.perf_counter() - started, distance)
    landed, committed = state_digests(replayed), evidence.checkpoint(i + 1)
    if landed.state != committed.state_digest:
        try:
            shown = _shown(_differing_tensors(replayed, evidence.load_checkpoint(i + 1)))
        except ReplayMismatchError:  # the leaf was changed, not the file (e.g. its weights digest): say which part
            parts = [n for n, a, b in (("weights", landed.weights, committed.weights_digest), ("rest", landed.rest, committed.rest_digest)) if a != b]
            shown = f"the committed {' and '.join(parts)} digest (checkpoint {i + 1}'s file does not match its leaf either)"
        raise ReplayMismatchError(f"segment {i} (steps {first}->{last}): replay does not land on checkpoint {i + 1}; differing: {shown}")
    return SegmentResult(index=i, first_step=first, last_step=last, seconds=time.perf_counter() - started)
