"""A data-parallel run's signed declaration and its batch split (docs/DISTRIBUTED.md); imports no torch.

A run recorded under ``torch.distributed`` with DistributedDataParallel over W ranks declares
``{"backend", "reduction", "split", "world_size"}`` (in ``run.json`` and signed as
``predicate.distributed``). Every step's global batch is the declared sampler's, split by rank with
``split_batch`` (``contiguous/v1``: rank r takes positions [r*b/W, (r+1)*b/W) of the sampler's b ids,
so the batch size must be a multiple of W); each rank's shard is committed in the step's leaf. The
reduction ``ddp-allreduce-mean/v1`` is DDP's: every rank's local gradients scaled by 1/W and summed
(in the backend's order), before the optimizer reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.json_fields import is_int
from trainwitness.errors import MalformedInputError

__all__ = ["SPLIT", "REDUCTION", "BACKENDS", "MAX_WORLD_SIZE", "DataParallelRun", "split_batch"]

SPLIT = "contiguous/v1"
REDUCTION = "ddp-allreduce-mean/v1"
BACKENDS = ("gloo", "nccl")
MAX_WORLD_SIZE = 1 << 16


def split_batch(ids: Sequence[int], world_size: int) -> list[list[int]]:
    """The ``contiguous/v1`` split: rank r's shard is ``ids[r*b/W:(r+1)*b/W]`` (b = len(ids), a multiple of W).

    Raises ValueError when ``world_size`` does not divide the batch.
    """
    if world_size < 1 or len(ids) % world_size:
        raise ValueError(f"a batch of {len(ids)} does not split over {world_size} ranks")
    size = len(ids) // world_size
    return [[int(i) for i in ids[r * size : (r + 1) * size]] for r in range(world_size)]


@dataclass(frozen=True)
class DataParallelRun:
    """What a W-rank run declares: world size, backend, split and reduction (all signed)."""

    world_size: int
    backend: str
    split: str = SPLIT
    reduction: str = REDUCTION

    def __post_init__(self) -> None:
        if not 2 <= self.world_size <= MAX_WORLD_SIZE:
            raise ValueError(f"world size {self.world_size} is not in 2..{MAX_WORLD_SIZE} (one rank is not distributed)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if (self.split, self.reduction) != (SPLIT, REDUCTION):
            raise ValueError(f"split {self.split!r} / reduction {self.reduction!r}: only {SPLIT} / {REDUCTION} are defined")

    def to_json(self) -> dict[str, JSONValue]:
        return {"backend": self.backend, "reduction": self.reduction, "split": self.split, "world_size": self.world_size}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> DataParallelRun:
        expected = {"backend", "reduction", "split", "world_size"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise MalformedInputError(f"{where}: must hold exactly {sorted(expected)}")
        world = obj["world_size"]
        if not is_int(world) or not all(isinstance(obj[k], str) for k in expected - {"world_size"}):
            raise MalformedInputError(f"{where}: world_size must be an integer, the other fields strings")
        try:
            return cls(world_size=world, backend=obj["backend"], split=obj["split"], reduction=obj["reduction"])
        except ValueError as e:
            raise MalformedInputError(f"{where}: {e}") from e
