"""Data-parallel runs (torch.distributed, DistributedDataParallel): ranks, the wrapper a spec uses, collectives,
and the one-process emulation of the gradient reduction (docs/DISTRIBUTED.md).

A spec that trains data-parallel wraps its model with ``data_parallel(model)`` and calls the result
in its step: under a process group of W > 1 ranks that is ``DistributedDataParallel(model)``, which
averages the ranks' gradients during the backward pass; in a single process (one-rank training, or
a verifier that replays every rank itself) it is the model unchanged. The spec still returns the
plain model, so state dicts, checkpoints and digests are the same in every mode.

``emulated_reduction`` is how one process replays a step of a W-rank run: it runs the step on ranks
0..W-2's shards up to the end of their backward pass (keeping each rank's gradients, then undoing
what the pass changed: RNG state, buffers, gradients), then runs the whole step on rank W-1's shard
with its gradients replaced, at the end of the backward pass, by the mean DDP computes: each rank's
gradient times 1/W, summed in rank order. DDP sums in the backend's order instead (a ring for gloo
and NCCL), so for W > 2 the last bits may differ: exact mode's gradient rounding, which runs after
this, absorbs that (docs/EXACT.md). What the emulation needs of a step: one backward pass per step,
the optimizer stepped once after it, and no state changed before that except gradients, buffers and
the global generators (BatchNorm running statistics change per rank under DDP and make the replicas
diverge anyway: such a model cannot be recorded data-parallel, see ``ReplicaDivergenceError``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.distributed import BACKENDS, DataParallelRun, split_batch
from trainwitness.data.datasets import Batch
from trainwitness.errors import MalformedInputError
from trainwitness.run.rng import capture_rng, restore_rng

__all__ = [
    "DataParallel", "current_group", "data_parallel", "all_gather_json", "broadcast_json", "emulated_reduction", "split_batch",
]


@dataclass(frozen=True)
class DataParallel:
    """How this process takes part in a W-rank run: as ``rank``, or (``rank=None``) as every rank at once."""

    world_size: int
    rank: int | None
    backend: str = "gloo"

    def __post_init__(self) -> None:
        if self.world_size < 2:
            raise ValueError("a data-parallel run has at least 2 ranks")
        if self.rank is not None and not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside 0..{self.world_size - 1}")

    def declaration(self) -> DataParallelRun:
        return DataParallelRun(world_size=self.world_size, backend=self.backend)

    def shard(self, ids: Sequence[int]) -> list[int]:
        """This rank's part of a step's global batch (the ``contiguous/v1`` split)."""
        if self.rank is None:
            raise ValueError("the emulating process has every shard, not one")
        return split_batch(ids, self.world_size)[self.rank]


def current_group() -> DataParallel | None:
    """This process's place in the default process group, or None outside one (or in a group of one)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world = torch.distributed.get_world_size()
    if world < 2:
        return None
    backend = str(torch.distributed.get_backend())
    if backend not in BACKENDS:
        raise MalformedInputError(f"torch.distributed backend {backend!r}: trainwitness records runs over {', '.join(BACKENDS)}")
    return DataParallel(world_size=world, rank=torch.distributed.get_rank(), backend=backend)


def data_parallel(model: nn.Module, **ddp_options: Any) -> nn.Module:
    """``DistributedDataParallel(model, **ddp_options)`` under a process group of W > 1 ranks, else ``model``.

    A spec calls this once and runs its forward pass through the result; it returns the plain
    ``model`` in its ``TrainingSpec``. On NCCL the model must already be on this rank's GPU.
    """
    group = current_group()
    if group is None:
        return model
    if group.backend == "nccl" and "device_ids" not in ddp_options:
        ddp_options["device_ids"] = [torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(model, **ddp_options)


def _collective_device() -> torch.device:
    """NCCL moves only GPU tensors; gloo moves CPU tensors."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_json(value: JSONValue) -> list[JSONValue]:
    """Every rank's ``value``, in rank order, on every rank: canonical JSON bytes in tensors (no pickle).

    The ranks' values may differ in length; each is sent padded to the longest.
    """
    data = canonical_json(value)
    device = _collective_device()
    world = torch.distributed.get_world_size()
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    torch.distributed.all_gather(lengths, length)
    longest = max(int(n.item()) for n in lengths)
    mine = torch.zeros(longest, dtype=torch.uint8)
    mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    mine = mine.to(device)
    pieces = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    torch.distributed.all_gather(pieces, mine)
    return [
        parse_json(bytes(piece[: int(n.item())].cpu().tolist()), f"rank {r}'s message")
        for r, (piece, n) in enumerate(zip(pieces, lengths, strict=True))
    ]


def broadcast_json(value: JSONValue, source: int = 0) -> JSONValue:
    """``source``'s value on every rank (the others' arguments are ignored)."""
    return all_gather_json(value if torch.distributed.get_rank() == source else None)[source]


class _BackwardDone(Exception):
    """Raised at the end of a non-final rank's backward pass, to stop its step there."""


@contextmanager
def _at_end_of_backward(parameters: Sequence[nn.Parameter], callback: Any) -> Iterator[None]:
    """Call ``callback()`` once at the end of every backward pass that reaches one of ``parameters``.

    The autograd engine's final callback is where DDP itself finishes its reduction (every
    gradient has been accumulated into ``.grad`` by then).
    """
    pending = [False]

    def done() -> None:
        pending[0] = False
        callback()

    def accumulated(_: torch.Tensor) -> None:
        if not pending[0]:
            pending[0] = True
            torch.autograd.Variable._execution_engine.queue_callback(done)  # type: ignore[attr-defined]

    handles = [p.register_post_accumulate_grad_hook(accumulated) for p in parameters]  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def emulated_reduction(model: nn.Module, run_step: Any, batches: Sequence[Batch]) -> Iterator[Batch]:
    """One process's replay of a data-parallel step: yields the last rank's batch, for the caller to run the
    step on, with its gradients replaced by the ranks' mean at the end of its backward pass.

    ``run_step(batch)`` is the spec's step; it is run here on every other rank's batch up to the end
    of its backward pass. Raises ``MalformedInputError`` when the step does not fit the emulation
    (no backward pass, more than one, a gradient on some ranks only).
    """
    world = len(batches)
    parameters = [p for p in model.parameters() if p.requires_grad]
    rng = capture_rng()
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in parameters]
    local: list[list[torch.Tensor | None]] = []

    def keep_and_stop() -> None:
        local.append([None if p.grad is None else p.grad.detach().clone() for p in parameters])
        raise _BackwardDone

    def undo() -> None:  # what a stopped pass changed, so the next rank starts where this one did
        restore_rng(rng)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p, g in zip(parameters, grads, strict=True):
            p.grad = None if g is None else g.clone()

    for rank in range(world - 1):
        with _at_end_of_backward(parameters, keep_and_stop):
            try:
                run_step(batches[rank])
            except _BackwardDone:
                pass
            else:
                raise MalformedInputError("one-process replay of a data-parallel run: the step ran no backward pass")
        undo()

    passes = [0]

    def average() -> None:
        passes[0] += 1
        if passes[0] > 1:
            raise MalformedInputError(
                "one-process replay of a data-parallel run supports one backward pass per step; this step ran more "
                "(replay it with one process per rank)"
            )
        with torch.no_grad():
            for i, p in enumerate(parameters):
                ranks = [grads_of_rank[i] for grads_of_rank in local] + [p.grad]
                present = [g is not None for g in ranks]
                if not any(present):
                    continue
                if not all(present):
                    raise MalformedInputError(f"data-parallel step: parameter {i} has a gradient on some ranks only")
                total = ranks[0].mul(1.0 / world)  # type: ignore[union-attr]
                for g in ranks[1:]:
                    total.add_(g.mul(1.0 / world))  # type: ignore[union-attr]
                p.grad.copy_(total)  # type: ignore[union-attr]

    with _at_end_of_backward(parameters, average):
        yield batches[-1]
    if passes[0] != 1:
        raise MalformedInputError("one-process replay of a data-parallel run: the step ran no backward pass")
