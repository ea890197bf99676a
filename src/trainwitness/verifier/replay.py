"""Replaying one segment (checkpoint i -> i+1) and comparing where it lands, bitwise."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..data import Batch, batch_digest
from ..errors import DataMismatchError, ReplayMismatchError
from ..executor import TrainingRun
from ..rng import rng_digest
from ..state import FlatState, state_digest, tensor_digest
from .evidence import Evidence

__all__ = ["SegmentResult", "replay_segment"]


@dataclass(frozen=True)
class SegmentResult:
    index: int
    first_step: int
    last_step: int  # exclusive: the step of checkpoint index + 1
    seconds: float


def _differing_tensors(replayed: FlatState, committed: FlatState) -> list[str]:
    names = sorted(set(replayed.tensors) | set(committed.tensors))
    return [
        n
        for n in names
        if n not in replayed.tensors
        or n not in committed.tensors
        or tensor_digest(n, replayed.tensors[n]) != tensor_digest(n, committed.tensors[n])
    ]


def replay_segment(run: TrainingRun, evidence: Evidence, i: int) -> SegmentResult:
    """Restore checkpoint i, re-run its steps checking each batch and RNG leaf, compare with i+1."""
    started = time.perf_counter()
    first = evidence.checkpoint(i).step
    last = evidence.checkpoint(i + 1).step
    run.restore(evidence.load_checkpoint(i))

    def check_step(step: int, ids: list[int], batch: Batch, rng: FlatState) -> None:
        committed = evidence.step(step)
        if list(committed.sample_ids) != ids:
            raise DataMismatchError(
                f"step {step}: committed batch has sample ids {list(committed.sample_ids)[:8]}..., "
                f"the declared sampler gives {ids[:8]}..."
            )
        if batch_digest(batch) != committed.batch_digest:
            raise DataMismatchError(f"step {step}: committed batch contents differ from the declared dataset's samples {ids[:8]}...")
        if rng_digest(rng) != committed.rng_digest:
            raise ReplayMismatchError(f"step {step}: the RNG state before the step differs from the committed one")

    run.run(first, last, check_step)
    replayed = run.capture()
    if state_digest(replayed) != evidence.checkpoint(i + 1).state_digest:
        differing = _differing_tensors(replayed, evidence.load_checkpoint(i + 1))
        shown = ", ".join(differing[:6]) + (f" and {len(differing) - 6} more" if len(differing) > 6 else "")
        raise ReplayMismatchError(
            f"segment {i} (steps {first}->{last}): replay does not land on checkpoint {i + 1}; differing: {shown or 'metadata'}"
        )
    return SegmentResult(index=i, first_step=first, last_step=last, seconds=time.perf_counter() - started)
