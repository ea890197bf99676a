"""Frozen inputs: attested weights a run reads but does not train (a distillation teacher, a frozen encoder).

A spec reads a declared input by name while it is built::

    from trainwitness.run.inputs import frozen_input

    teacher = MLP(...)
    teacher.load_state_dict(frozen_input("teacher"))
    teacher.requires_grad_(False)

The prover declares each input (``train --input NAME=PATH``) and signs its weights digest in the
statement's ``inputs``; the verifier hands the spec the auditor's copy of each, accepted only if it
hashes to that digest. The input's tensors are not part of any checkpoint: replay rebuilds them from
the file, so a step that changed them (an input that was not frozen after all) lands elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainwitness.errors import FrozenInputError, MissingInputError
from trainwitness.tensors.checkpoint import read_weights_file
from trainwitness.tensors.state import weights_digest

__all__ = ["frozen_input", "provide_inputs", "read_input_weights", "InputsRead"]


@dataclass
class InputsRead:
    """The inputs on offer while a spec is built, and the names it read."""

    offered: Mapping[str, Mapping[str, torch.Tensor]]
    read: set[str] = field(default_factory=set)


_offered: ContextVar[InputsRead | None] = ContextVar("trainwitness_frozen_inputs", default=None)


def frozen_input(name: str) -> dict[str, torch.Tensor]:
    """The tensors of the declared frozen input ``name``, as fresh copies (the spec may keep them).

    Only while ``TrainingRun.start`` builds the spec. Raises ``MissingInputError`` for a name the run
    does not declare, ``ValueError`` outside a build.
    """
    offered = _offered.get()
    if offered is None:
        raise ValueError("frozen_input() is only available while TrainingRun.start builds the spec")
    if name not in offered.offered:
        declared = ", ".join(sorted(offered.offered)) or "none"
        raise MissingInputError(f"the training spec reads frozen input {name!r}, which the run does not declare (declared: {declared}); record with --input {name}=PATH")
    offered.read.add(name)
    # Copy point: the caller owns what it gets, and the offered tensors stay as read for another build.
    return {k: v.detach().clone() for k, v in offered.offered[name].items()}


@contextlib.contextmanager
def provide_inputs(inputs: Mapping[str, Mapping[str, torch.Tensor]]) -> Iterator[InputsRead]:
    """Specs built inside this block read ``inputs`` through ``frozen_input``; yields which they read."""
    offered = InputsRead(dict(inputs))
    token = _offered.set(offered)
    try:
        yield offered
    finally:
        _offered.reset(token)


def read_input_weights(name: str, path: Path, expected_digest: str | None = None) -> dict[str, torch.Tensor]:
    """Frozen input ``name`` from a weights file, accepted only if it hashes to ``expected_digest`` when given.

    Raises ``MissingInputError`` if the file is absent, ``MalformedInputError`` if it cannot be decoded,
    ``FrozenInputError`` if it holds other weights than the signed digest names.
    """
    weights = read_weights_file(path, f"frozen input {name}:")
    if expected_digest is not None and weights_digest(weights) != expected_digest:
        raise FrozenInputError(f"frozen input {name}: {path} does not hold the declared weights {expected_digest}")
    return weights
