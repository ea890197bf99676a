"""Which segments to replay, and how sure that makes us.

The verifier draws segments uniformly without replacement, from the operating system's randomness
or from an auditor-chosen seed. Nothing the prover wrote (attestation, store) feeds the draw, and
the draw happens after the attestation is signed, so the prover cannot know which segments will
be checked.
"""

from __future__ import annotations

import math
import random

__all__ = ["choose_segments", "detection_probability"]


def choose_segments(segment_count: int, sample_size: int | None, seed: int | None = None) -> list[int]:
    """Sorted segment indices to replay; ``sample_size=None`` means all of them."""
    if segment_count < 1:
        raise ValueError("a run has at least one segment")
    if sample_size is None or sample_size >= segment_count:
        return list(range(segment_count))
    if sample_size < 1:
        raise ValueError("replay at least one segment")
    rng = random.SystemRandom() if seed is None else random.Random(seed)
    return sorted(rng.sample(range(segment_count), sample_size))


def detection_probability(segment_count: int, sample_size: int, forged_fraction: float) -> float:
    """P(at least one forged segment is replayed) when ceil(f * M) of M segments are forged.

    Sampling without replacement (hypergeometric): 1 - C(M - F, N) / C(M, N). This is never below
    the with-replacement figure 1 - (1 - f)^N.
    """
    if not 0 < forged_fraction <= 1:
        raise ValueError("forged fraction must be in (0, 1]")
    forged = min(segment_count, math.ceil(forged_fraction * segment_count - 1e-12))
    n = min(sample_size, segment_count)
    if segment_count - forged < n:
        return 1.0
    return 1.0 - math.comb(segment_count - forged, n) / math.comb(segment_count, n)
