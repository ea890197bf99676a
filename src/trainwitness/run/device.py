"""The device a run's steps execute on: declared by the prover, chosen again by the auditor.

A run declares one device (``cpu``, ``cuda``, ``cuda:N``, ``mps``). The spec always builds on the
CPU, from the CPU generator the declared seed seeds (so checkpoint 0 is the same state wherever it
is recomputed); ``TrainingRun`` then moves the model (and any extra state with a ``to`` method)
to the device, hands each batch to the step there, and copies checkpoints back to the host.
The spec reads the device with ``current_device()`` where it needs one (``torch.autocast``, a
``GradScaler``).

Random numbers drawn on an accelerator come from that device's own generator (CUDA's Philox),
which no other kind of device reproduces; its state is committed with the run's other generators,
and a replay on another kind of device carries it unchanged (see ``run/rng.py``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from trainwitness.errors import MalformedInputError

__all__ = ["DEVICE_KINDS", "parse_device", "device_kind", "current_device", "using_device", "to_device"]

DEVICE_KINDS = ("cpu", "cuda", "mps")
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:[0-9]{1,3})?)$")

_current: ContextVar[torch.device | None] = ContextVar("trainwitness_device", default=None)


def parse_device(text: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused by name when this machine does not have it.

    Raises ``MalformedInputError`` for another spelling, ``MissingInputError``-like
    ``MalformedInputError`` when the device is absent here (exit 2 either way).
    """
    if not isinstance(text, str) or not _DEVICE_RE.match(text):
        raise MalformedInputError(f"device {text!r} is not one of cpu, cuda, cuda:N, mps")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MalformedInputError(f"device {text}: no CUDA device is available here")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise MalformedInputError(f"device {text}: this machine has {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MalformedInputError("device mps: Apple's Metal backend is not available here")
    return device


def device_kind(recorded: object) -> str:
    """The kind (cpu, cuda, mps) of a recorded ``environment.device`` (``cpu``, ``cuda:<name>``, ``mps``)."""
    kind = str(recorded).split(":", 1)[0]
    return kind if kind in DEVICE_KINDS else "unknown"


def current_device() -> torch.device:
    """The device the run being built or stepped executes on (``cpu`` outside a run)."""
    device = _current.get()
    return torch.device("cpu") if device is None else device


@contextlib.contextmanager
def using_device(device: torch.device) -> Iterator[None]:
    token = _current.set(device)
    try:
        yield
    finally:
        _current.reset(token)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``: the same dict on the CPU; otherwise copies (host-to-device, asynchronous from pinned memory)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
