"""Training specs: what both the prover and the verifier load by entry point ``module:function``.

The entry point is a function decorated with ``@training_spec(defaults=...)``. It takes the full
hyperparameter mapping and returns a ``TrainingSpec``. Every hyperparameter it reads must be in the
defaults, so every one is recorded and signed; five are required because the core reads them too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from trainwitness.commit.canonical import JSONValue, canonical_json
from trainwitness.commit.statement import REQUIRED_HYPERPARAMETERS, check_core_hyperparameters
from trainwitness.data.datasets import Batch, Dataset
from trainwitness.errors import MalformedInputError

__all__ = [
    "REQUIRED_HYPERPARAMETERS",
    "TrainingSpec",
    "Stateful",
    "SpecFunction",
    "training_spec",
    "load_entry_point",
    "resolve_hyperparameters",
    "parse_override",
]


_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


class Stateful(Protocol):
    """Extra training state with the ``state_dict`` protocol (a ``GradScaler``, an ``EMA``)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class TrainingSpec:
    """One instantiated training run; ``step`` runs one optimisation step on a batch, returns the loss.

    ``step(batch)`` must be a pure function of the state below, the batch (a dict of tensors on the
    run's device) and the committed generators: torch's, numpy's and Python's global ones, the
    run's device generator, and the private ``generators`` registered here (their states are
    checkpointed as ``rng/generator/<name>``). It calls ``optimizer.step()`` once (gradient
    accumulation happens over micro-batches inside it) and steps the scheduler ``scheduler_steps``
    times. It returns the loss (a scalar tensor, or None): committed per step, compared on replay.
    ``state``: further objects whose ``state_dict`` is part of every checkpoint (a
    ``torch.amp.GradScaler``, ``trainwitness.EMA`` weights), stored under ``extra/<name>``.
    The model is built on the CPU; ``TrainingRun`` moves it (and any ``state`` object with a
    ``to`` method) to the run's device (``trainwitness.current_device()``).
    ``reinitialised`` matters only when the run fine-tunes a parent (``trainwitness.run.parent``):
    the model tensors (``state_dict`` names, or module prefixes such as ``"head"``) that keep the
    values the seed gave them instead of the parent's, e.g. a new output layer. A seeded start and
    continued training ignore it, so the same spec serves all three.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    dataset: Dataset
    step: Callable[[Batch], torch.Tensor | None]
    generators: Mapping[str, torch.Generator] = field(default_factory=dict)
    state: Mapping[str, Stateful] = field(default_factory=dict)
    scheduler_steps: int = 1
    reinitialised: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (*self.generators, *self.state):
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"TrainingSpec: name {name!r} must be 1-64 letters, digits, '_', '.', '-'")
        for name, generator in self.generators.items():
            if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
                raise TypeError(f"TrainingSpec.generators[{name!r}] must be a CPU torch.Generator")
        if not isinstance(self.scheduler_steps, int) or self.scheduler_steps < 0:
            raise ValueError("TrainingSpec.scheduler_steps must be a non-negative integer")


class SpecFunction(Protocol):
    defaults: Mapping[str, JSONValue]

    def __call__(self, hyperparameters: Mapping[str, JSONValue]) -> TrainingSpec: ...


def training_spec(defaults: Mapping[str, JSONValue]) -> Callable[[Callable[..., TrainingSpec]], SpecFunction]:
    missing = [k for k in REQUIRED_HYPERPARAMETERS if k not in defaults]
    if missing:
        raise ValueError(f"training spec defaults lack required hyperparameters {missing}")
    canonical_json(dict(defaults))  # refuses values that cannot be signed

    def decorate(function: Callable[..., TrainingSpec]) -> SpecFunction:
        function.defaults = dict(defaults)  # type: ignore[attr-defined]
        return function  # type: ignore[return-value]

    return decorate


def load_entry_point(entry_point: str) -> SpecFunction:
    if not _ENTRY_POINT_RE.match(entry_point):
        raise MalformedInputError(f"entry point {entry_point!r} is not of the form 'package.module:function'")
    module_name, _, attribute = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MalformedInputError(f"entry point {entry_point}: module cannot be imported ({e})") from e
    function = getattr(module, attribute, None)
    if function is None or not callable(function) or not isinstance(getattr(function, "defaults", None), dict):
        raise MalformedInputError(f"entry point {entry_point} is not a @training_spec function")
    return function  # type: ignore[no-any-return]


def resolve_hyperparameters(
    defaults: Mapping[str, JSONValue], overrides: Mapping[str, JSONValue]
) -> dict[str, JSONValue]:
    """Defaults updated by overrides; an unknown name or a changed type is refused, not ignored.

    The hyperparameters the core reads are checked against their ranges
    (``statement.HYPERPARAMETER_RANGES``); raises ``MalformedInputError`` naming the first bad one.
    """
    hp = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            raise MalformedInputError(f"unknown hyperparameter {key!r} (known: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if default is not None and type(value) is not type(default) and not (
            isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
        ):
            raise MalformedInputError(f"hyperparameter {key!r}: {value!r} is not a {type(default).__name__}")
        hp[key] = float(value) if isinstance(default, float) else value
    check_core_hyperparameters(hp, "hyperparameters (spec defaults and --set)")
    return hp


def parse_override(text: str) -> tuple[str, JSONValue]:
    """``name=value`` from the command line; the value is read as JSON, else kept as a string."""
    from trainwitness.commit.canonical import parse_json

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise MalformedInputError(f"--set expects name=value, not {text!r}")
    try:
        return key, parse_json(raw.encode("utf-8"), f"--set {key}")
    except MalformedInputError:
        return key, raw
