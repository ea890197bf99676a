"""Feeding a training script's own ``torch.utils.data.DataLoader`` in the declared order.

A recorded step's batch must be the dataset's batch of the sample ids the declared sampler gives
that step (the verifier rebuilds it from its own copy of the data and compares the committed
digest). ``DeclaredBatchSampler`` yields those ids, one list per step, and ``BatchDataset`` turns
a list into ``dataset.batch(ids)`` (exactly what replay builds). Used as
``DataLoader(BatchDataset(ds), sampler=DeclaredBatchSampler(...), batch_size=None, ...)``, the
loader may run worker processes and pin memory: workers fetch whole batches, and the loader
returns them in the sampler's order (``in_order``, the default). Random augmentation belongs in
the step (drawn from the committed generators), not in the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.utils.data

from trainwitness.data.datasets import Batch, Dataset
from trainwitness.run.sampler import ShuffledEpochSampler

__all__ = ["DeclaredBatchSampler", "BatchDataset"]


class DeclaredBatchSampler(torch.utils.data.Sampler[list[int]]):
    """The declared sampler's batches of sample ids for steps ``start`` .. ``stop - 1``, in order.

    ``micro_batches=k``: each step's ids in k consecutive equal parts (for a framework that
    accumulates gradients over micro-batches it fetches one by one, as the HF Trainer does).
    """

    def __init__(self, sampler: ShuffledEpochSampler, start: int, stop: int, micro_batches: int = 1) -> None:
        if not 0 <= start <= stop:
            raise ValueError(f"steps {start}..{stop} are not a range")
        if micro_batches < 1 or sampler.batch_size % micro_batches:
            raise ValueError(f"batch size {sampler.batch_size} does not split into {micro_batches} equal micro-batches")
        self.sampler, self.start, self.stop, self.micro_batches = sampler, start, stop, micro_batches

    def __iter__(self) -> Iterator[list[int]]:
        size = self.sampler.batch_size // self.micro_batches
        for step in range(self.start, self.stop):
            ids = self.sampler.batch_ids(step)
            for j in range(self.micro_batches):
                yield ids[j * size : (j + 1) * size]

    def __len__(self) -> int:
        return (self.stop - self.start) * self.micro_batches


class BatchDataset(torch.utils.data.Dataset[Batch]):
    """A map-style view of a trainwitness dataset: item ``[i0, i1, ...]`` is ``dataset.batch([i0, i1, ...])``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, ids: int | Sequence[int]) -> Batch:
        if isinstance(ids, int):
            return self.dataset.sample(ids)
        return self.dataset.batch([int(i) for i in ids])
