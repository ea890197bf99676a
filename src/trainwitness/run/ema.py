"""EMA weights as training state: a copy of the model's floating tensors, averaged after each update.

``shadow = decay * shadow + (1 - decay) * value`` (``torch.lerp``), for every floating tensor of the
model's ``state_dict`` (parameters and buffers), after each call of ``update``. Registered in
``TrainingSpec(state={"ema": ema})``, its ``state_dict`` (decay, update count, the averaged tensors,
named as the model's) is part of every checkpoint, so a replay from a checkpoint continues the
average exactly, and exact mode rounds it with the model's state (``extra/`` tensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of ``model``'s floating tensors; ``decay`` in [0, 1)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), not {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {n: t.detach().clone() for n, t in model.state_dict().items() if t.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Average the model's current values in (call once per step, after ``optimizer.step()``)."""
        for name, value in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(value.detach(), 1.0 - self.decay)
        self.updates += 1

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {n: t.to(device) for n, t in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        """References to the averaged tensors (not copies) with the decay and the update count."""
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy a saved state in (the given tensors are not kept)."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise ValueError(f"EMA state names {sorted(shadow)[:4]}..., not this model's floating tensors")
        with torch.no_grad():
            for name, tensor in shadow.items():
                self.shadow[name].copy_(tensor)
        self.decay, self.updates = float(state["decay"]), int(state["updates"])

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the averaged values into ``model`` (e.g. a copy for evaluation or export)."""
        model.load_state_dict({**model.state_dict(), **self.shadow})
