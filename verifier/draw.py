"""Which segments to replay, and how sure that makes us.

The last segment is always replayed: it ends on the state whose weights are published, so a forger
who changes only the end of a run (the final weights, the last checkpoint) is caught on every draw,
whatever the sample size. The others are drawn uniformly without replacement, from the operating
system's randomness or from an auditor-chosen seed. Nothing the prover wrote (attestation, store)
feeds the draw, and the draw happens after the attestation is signed, so the prover cannot know
which segments will be checked; the verifier alone decides that the last one always is.
"""

from __future__ import annotations

import math
import random

__all__ = ["choose_segments", "detection_probability"]


def choose_segments(segment_count: int, sample_size: int | None, seed: int | None = None) -> list[int]:
    """Sorted segment indices to replay: ``sample_size`` drawn among all but the last, plus the last.

    ``sample_size=None`` (or one at least ``segment_count - 1``) means every segment. Raises
    ValueError for a run without segments or a sample size below one.
    """
    if segment_count < 1:
        raise ValueError("a run has at least one segment")
    if sample_size is None or sample_size >= segment_count - 1:
        return list(range(segment_count))
    if sample_size < 1:
        raise ValueError("replay at least one segment")
    rng = random.SystemRandom() if seed is None else random.Random(seed)
    return [*sorted(rng.sample(range(segment_count - 1), sample_size)), segment_count - 1]


def detection_probability(segment_count: int, sample_size: int, forged_fraction: float) -> float:
    """P(at least one forged segment is replayed) when ceil(f * M) of M segments are forged.

    ``sample_size`` N is the number drawn at random (``choose_segments``); the last segment is
    replayed besides. The figure is for a forger who knows that and leaves the last segment honest
    (the worst case for the verifier): F = ceil(f * M) forged among the M - 1 others, drawn without
    replacement (hypergeometric), 1 - C(M - 1 - F, N) / C(M - 1, N); 1 when F = M (the last is
    forged too). Never below the with-replacement figure 1 - (1 - F / (M - 1))^N.
    """
    if not 0 < forged_fraction <= 1:
        raise ValueError("forged fraction must be in (0, 1]")
    forged = min(segment_count, math.ceil(forged_fraction * segment_count - 1e-12))
    others = segment_count - 1
    n = min(sample_size, others)
    if forged > others or others - forged < n:
        return 1.0
    return 1.0 - math.comb(others - forged, n) / math.comb(others, n)
