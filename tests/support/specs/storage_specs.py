"""Training specs whose state is hard to store: tied weights and views, every dtype, an unstorable dtype.

Each is the digits workload with something added to its model, so it trains in a second or two.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.tensors.state import DTYPE_NAMES
from trainwitness.workloads.digits import DEFAULTS, load_digits

SMALL = {**DEFAULTS, "hidden": 16, "dropout": 0.0, "total_steps": 40, "checkpoint_interval": 10}


class TiedHeads(nn.Module):
    """Two output heads sharing one weight (``aux.weight`` is ``head.weight``), and a buffer that is a view of it."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.head = nn.Linear(hidden, 10)
        self.aux = nn.Linear(hidden, 10, bias=False)
        self.aux.weight = self.head.weight  # tied: the state_dict names one tensor twice
        self.register_buffer("head_row0", self.head.weight.detach()[0])  # a view into the parameter's memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        out: torch.Tensor = self.head(h) + 0.5 * self.aux(h)
        return out


def _spec(model: nn.Module, hp: Mapping[str, JSONValue], before_step: object = None) -> TrainingSpec:
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"]))

    def step(batch: Batch) -> torch.Tensor:
        if callable(before_step):
            before_step()
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)


@training_spec(defaults=SMALL)
def tied(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    return _spec(TiedHeads(int(hp["hidden"])), hp)


class WithBuffers(nn.Module):
    """A linear classifier carrying one buffer of every dtype a checkpoint can store."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        for dtype, name in DTYPE_NAMES.items():
            self.register_buffer(f"b_{name}", torch.zeros(5, dtype=dtype))

    def refill(self) -> None:
        """Every buffer gets fresh random bit patterns (NaN payloads included) from the committed RNG."""
        for dtype, name in DTYPE_NAMES.items():
            buffer = getattr(self, f"b_{name}")
            size = buffer.element_size() * buffer.numel()
            bits = torch.randint(0, 256, (size,), dtype=torch.uint8)
            buffer.copy_((bits % 2).bool() if dtype == torch.bool else bits.view(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


@training_spec(defaults=SMALL)
def every_dtype(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    model = WithBuffers()
    return _spec(model, hp, model.refill)


class WithComplex128(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.register_buffer("phase", torch.zeros(2, dtype=torch.complex128))  # safetensors has no C128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


@training_spec(defaults=SMALL)
def unstorable(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    return _spec(WithComplex128(), hp)
