"""Datasets as the core sees them: numbered samples, each a dict of tensors, each with a digest.

Sample digest: ``digest_tensors("sample", tensors of sample i)``. Dataset digest: the Merkle root
over leaves ``{"digest": <sample digest>, "index": i, "type": "sample"}``. Batch digest:
``digest_tensors("batch", collated batch)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .canonical import canonical_json
from .hashing import format_digest
from .merkle import merkle_root
from .state import digest_tensors

__all__ = ["Dataset", "TensorDataset", "sample_leaf", "dataset_digest", "batch_digest"]

Batch = dict[str, torch.Tensor]


class Dataset(Protocol):
    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def sample(self, index: int) -> Batch: ...

    def batch(self, ids: Sequence[int]) -> Batch: ...


@dataclass(frozen=True)
class TensorDataset:
    """Samples are rows of equally long tensors (features, labels, ...)."""

    name: str
    columns: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        lengths = {len(t) for t in self.columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"dataset {self.name}: columns have different lengths {sorted(lengths)}")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def sample(self, index: int) -> Batch:
        return {k: v[index] for k, v in self.columns.items()}

    def batch(self, ids: Sequence[int]) -> Batch:
        index = torch.tensor(list(ids), dtype=torch.int64)
        return {k: v.index_select(0, index) for k, v in self.columns.items()}


def sample_leaf(index: int, dataset: Dataset) -> bytes:
    digest = digest_tensors("sample", dataset.sample(index), None)
    return canonical_json({"digest": digest, "index": index, "type": "sample"})


def dataset_digest(dataset: Dataset) -> str:
    return format_digest(merkle_root([sample_leaf(i, dataset) for i in range(len(dataset))]))


def batch_digest(batch: Batch) -> str:
    return digest_tensors("batch", batch, None)
