"""The digits workload with cross-thread noise built in: its results differ between 1 and 2 threads on every CPU.

Whether a BLAS library gives different bits with 1 and 2 threads is a property of the machine (on
AMD EPYC with MKL the digits MLP does; on Intel Xeon with MKL it does not), so a test that needs a
run whose replay on another thread count lands elsewhere cannot rely on it. Here the first layer's
sum over the 64 inputs is taken in ``torch.get_num_threads()`` contiguous chunks, each summed in
order, the chunk sums then added in order: a different reduction order per thread count, as a
parallel BLAS has, but made of elementwise float32 additions, which IEEE 754 rounds exactly the same
on every CPU. So the bits depend on the thread count alone, identically everywhere, and the noise is
of the size real reductions have (the last bits of a 64-term float32 sum).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, MLP, load_digits


def chunked_sum(x: torch.Tensor, weight: torch.Tensor, chunks: int) -> torch.Tensor:
    """``x @ weight.T`` (x: (B, K) float32, weight: (H, K)) with the K-sum in ``chunks`` ordered pieces.

    Every product and every addition is one elementwise float32 operation (no BLAS, no FMA), so the
    result is a function of the inputs and ``chunks`` only; different ``chunks`` round differently.
    """
    products = x.t()[:, :, None] * weight.t()[:, None, :]  # (K, B, H): products[k] is contiguous
    k = products.shape[0]
    bounds = [round(i * k / chunks) for i in range(chunks + 1)]
    total: torch.Tensor | None = None
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = products[lo].clone()
        for j in range(lo + 1, hi):
            part += products[j]
        total = part if total is None else total + part
    if total is None:
        raise ValueError("chunked_sum needs at least one input")
    return total


class _ChunkedLinear(torch.autograd.Function):
    """Forward: ``chunked_sum`` (the thread-dependent bits). Backward: the usual matrix products."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor, chunks: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return chunked_sum(x, weight, chunks)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad @ weight, grad.t() @ x, None


def chunked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunks: int) -> torch.Tensor:
    """``x @ weight.T + bias`` whose forward value is ``chunked_sum``'s, differentiable."""
    out: torch.Tensor = _ChunkedLinear.apply(x, weight, chunks)  # type: ignore[no-untyped-call]
    return out + bias


def forward(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """The digits MLP's forward pass, its first layer reduced in as many chunks as torch has threads."""
    h = F.relu(chunked_linear(x, model.fc1.weight, model.fc1.bias, torch.get_num_threads()))
    h = model.dropout(h)
    h = model.dropout(F.relu(model.fc2(h)))
    out: torch.Tensor = model.head(h)
    return out


@training_spec(defaults=DEFAULTS)
def noisy_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = MLP(hidden=int(hp["hidden"]), dropout=float(hp["dropout"]))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"]), weight_decay=float(hp["weight_decay"])
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(hp["total_steps"]))

    def step(batch: Batch) -> torch.Tensor:
        model.train()
        loss = F.cross_entropy(forward(model, batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=scheduler, dataset=load_digits(), step=step)
