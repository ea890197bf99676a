"""Replaying sampled segments on several cores: each worker process replays different segments.

Training state and the global RNGs are per process, so workers are processes (spawned, so no
state leaks from the parent), each rebuilding the run from the already-verified statement, opening
the store's evidence itself and replaying its share of the segments. The outcome does not depend
on the worker count or on completion order: results are sorted by segment index, and when
segments fail, the failure of the lowest-numbered one is the one raised.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..attestation import Statement
from ..environment import apply_execution_settings
from ..errors import TrainwitnessError
from ..executor import TrainingRun
from ..spec import load_entry_point, resolve_hyperparameters
from .evidence import Evidence
from .replay import SegmentResult, replay_segment

__all__ = ["replay_in_parallel"]

# One segment's outcome: its result, or the error that stopped it (exceptions travel by pickling).
_Outcome = tuple[int, SegmentResult | TrainwitnessError]


def _replay_share(payload: bytes, store: str, share: list[int]) -> tuple[list[_Outcome], int]:
    claim = Statement.from_payload(payload).claim
    apply_execution_settings(claim.torch_threads)
    function = load_entry_point(claim.entry_point)
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, claim.hyperparameters))
    evidence = Evidence.open(Path(store), claim)
    outcomes: list[_Outcome] = []
    for i in share:
        try:
            outcomes.append((i, replay_segment(run, evidence, i)))
        except TrainwitnessError as e:
            outcomes.append((i, e))
    return outcomes, evidence.checkpoint_bytes_read


def replay_in_parallel(payload: bytes, store: Path, segments: list[int], workers: int) -> tuple[list[SegmentResult], int]:
    """Replay ``segments`` on ``workers`` processes; (results by segment index, checkpoint bytes read).

    ``payload`` is the statement whose signature the caller has verified. Raises the error of the
    lowest-numbered failing segment.
    """
    shares = [segments[w::workers] for w in range(workers) if segments[w::workers]]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(shares), mp_context=context) as pool:
        done = list(pool.map(_replay_share, [payload] * len(shares), [str(store)] * len(shares), shares))
    outcomes = sorted((o for share_outcomes, _ in done for o in share_outcomes), key=lambda o: o[0])
    for _, outcome in outcomes:
        if isinstance(outcome, TrainwitnessError):
            raise outcome
    results = [o for _, o in outcomes if isinstance(o, SegmentResult)]
    return results, sum(read for _, read in done)
