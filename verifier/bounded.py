"""Bounded mode: for runs recorded without exact mode, accept a replay that lands *near* its checkpoint.

Distance of a segment = ||replayed - committed|| / ||committed - start|| over the floating model
and optimizer tensors (per tensor, and overall over all of them together): how far the committed
checkpoint lies from where this machine's replay lands, relative to how far the segment moved.
Elements on which replay and checkpoint agree count 0, non-finite ones included (a weight that
honestly became NaN is NaN in both); an element where they differ must be finite in both. The
update counts its finite elements. Every other tensor (RNG states, integer tensors) and the
skeleton must still match bitwise.

This is weaker than exact mode: a forger may steer every checkpoint anywhere inside the bound.
The bound and its calibration are in docs/EXACT.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainwitness.errors import ReplayMismatchError
from trainwitness.tensors.state import FlatState, tensor_digest

__all__ = ["BOUND", "BOUND_PROVENANCE", "SegmentDistance", "segment_distance"]

# Calibrated from honest cross-thread replays (docs/EXACT.md, "Bounded mode: calibration"):
# the largest honest overall distance seen was 4.8e-7; the bound is 10x that, rounded up.
BOUND = 5e-6
BOUND_PROVENANCE = (
    "calibrated on digits, recorded with 2 torch threads and replayed with 1: 3 seeds x 14 segments of 40 steps, "
    "max honest distance 4.8e-7, median 2.5e-7; bound = 10x max (docs/EXACT.md)"
)


@dataclass(frozen=True)
class SegmentDistance:
    overall: float
    worst_tensor: str
    worst: float  # the largest per-tensor distance


def _measured(name: str, t: torch.Tensor) -> bool:
    return (name.startswith("model/") or name.startswith("optimizer/")) and t.is_floating_point()


def segment_distance(start: FlatState, replayed: FlatState, committed: FlatState) -> SegmentDistance:
    """The relative distance of ``committed`` from ``replayed``; raises if anything else differs."""
    if replayed.skeleton != committed.skeleton or set(replayed.tensors) != set(committed.tensors):
        raise ReplayMismatchError("bounded replay: the checkpoint's structure (skeleton, tensor names) differs")
    off = 0.0
    moved = 0.0
    worst, worst_tensor = 0.0, ""
    for name in sorted(committed.tensors):
        r, c = replayed.tensors[name], committed.tensors[name]
        if not _measured(name, c) or r.dtype != c.dtype or r.shape != c.shape:
            if tensor_digest(name, r) != tensor_digest(name, c):
                raise ReplayMismatchError(f"bounded replay: {name} must match bitwise and does not")
            continue
        s = start.tensors.get(name)
        r64, c64 = r.to(torch.float64), c.to(torch.float64)
        # Elements where replay and checkpoint agree (a NaN the honest run holds too, an equal
        # infinity) are at distance 0; only where they differ must both be finite to be measured.
        same = (r64 == c64) | (torch.isnan(r64) & torch.isnan(c64))
        differing_r, differing_c = r64[~same], c64[~same]
        if not (bool(torch.isfinite(differing_r).all()) and bool(torch.isfinite(differing_c).all())):
            raise ReplayMismatchError(f"bounded replay: {name} differs from the checkpoint in non-finite values")
        d = float(torch.linalg.vector_norm(differing_r - differing_c)) ** 2
        update = c64 - (s.to(torch.float64) if s is not None and s.shape == c.shape else 0.0)
        u = float(torch.linalg.vector_norm(update[torch.isfinite(update)])) ** 2  # the update where it is a number
        if not (math.isfinite(d) and math.isfinite(u)):  # finite values whose squares overflow float64
            raise ReplayMismatchError(f"bounded replay: {name} is too large to measure")
        off, moved = off + d, moved + u
        per = math.sqrt(d / u) if u > 0 else (0.0 if d == 0 else math.inf)
        if per > worst:
            worst, worst_tensor = per, name
    overall = math.sqrt(off / moved) if moved > 0 else (0.0 if off == 0 else math.inf)
    return SegmentDistance(overall=overall, worst_tensor=worst_tensor, worst=worst)
