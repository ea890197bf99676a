"""The batch sampler: which sample ids form each step's batch, as a pure function of (seed, step).

``shuffled-epochs/v1``: epoch e is a permutation of range(n) by Fisher-Yates, drawing from a
SHA-256 counter stream keyed by (seed, e) with rejection sampling (no modulo bias); step s takes
the slice [b*(s mod E), b*(s mod E + 1)) of epoch s div E's permutation, E = n div b (the last
partial batch of an epoch is dropped). Written out here rather than borrowed from torch or numpy so
that the order cannot change with a library version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["SAMPLER_NAME", "ShuffledEpochSampler"]

SAMPLER_NAME = "shuffled-epochs/v1"


class _Stream:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._words: list[int] = []

    def next_u64(self) -> int:
        if not self._words:
            block = hashlib.sha256(self._key + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._words = [int.from_bytes(block[i : i + 8], "big") for i in range(24, -1, -8)]
        return self._words.pop()

    def below(self, bound: int) -> int:
        """Uniform integer in [0, bound)."""
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            value = self.next_u64()
            if value < limit:
                return value % bound


def epoch_permutation(seed: int, epoch: int, n: int) -> list[int]:
    key = b"trainwitness:sampler:shuffled-epochs:v1\0" + seed.to_bytes(8, "big") + epoch.to_bytes(8, "big")
    stream = _Stream(key)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


@dataclass
class ShuffledEpochSampler:
    num_samples: int
    batch_size: int
    seed: int
    _cache: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= self.num_samples:
            raise ValueError(f"batch size {self.batch_size} must be in [1, {self.num_samples}]")
        if not 0 <= self.seed < 2**63:
            raise ValueError("sampler seed must be in [0, 2**63)")

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def batch_ids(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch not in self._cache:
            self._cache.clear()  # replay walks forwards: one epoch in memory is enough
            self._cache[epoch] = epoch_permutation(self.seed, epoch, self.num_samples)
        start = position * self.batch_size
        return self._cache[epoch][start : start + self.batch_size]

    def describe(self) -> dict[str, object]:
        return {"name": SAMPLER_NAME, "batch_size": self.batch_size, "seed": self.seed, "num_samples": self.num_samples}
