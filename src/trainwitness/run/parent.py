"""Checkpoint 0 of a run with a parent: the parent's final weights (fine-tune) or whole final state (continued training).

The same code forms the start when the prover records and when the verifier recomputes it, so a
start from a parent is recomputed from the parent's verified files, never trusted. ``TrainingRun.start``
seeds every generator from the run's own seed and builds the spec, exactly as for a seeded start; then:

* ``finetune``: the parent's final weights are loaded into the built model. Every model tensor
  comes from the parent except those the spec declares in ``TrainingSpec.reinitialised`` (tensor
  names as the model's ``state_dict`` names them, or module prefixes such as ``"head"``): those keep
  the values the seed gave them (a new or re-initialised output layer). Every other tensor must be in
  the parent's weights with the same shape and dtype (no conversion); parent tensors the model does
  not have are dropped and listed. The optimizer and scheduler are the fresh ones the spec built,
  and the RNG is where building left it.
* ``continue``: the parent's final checkpoint (model, optimizer, scheduler and RNG state) is
  restored into the built run whole; ``TrainingSpec.reinitialised`` is ignored.

Anything the spec derives from the model's values while it is built (an EMA copy, a frozen reference
copy) sees the seeded values, not the parent's: the parent is loaded after the spec function returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from trainwitness.commit.statement import START_MODES
from trainwitness.commit.store import read_index
from trainwitness.errors import LineageError, MalformedInputError, ParentMismatchError
from trainwitness.tensors.checkpoint import read_weights_file
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest, weights_digest

__all__ = ["ParentStart", "StartRecord", "load_finetune", "read_parent_weights", "read_parent_state"]


@dataclass(frozen=True)
class ParentStart:
    """What a run starts from besides its seed: the parent's final weights, or its final state."""

    mode: str  # one of START_MODES
    weights: Mapping[str, torch.Tensor] | None = None  # finetune: named as the model's state_dict names them
    state: FlatState | None = None  # continue: the parent's last checkpoint

    def __post_init__(self) -> None:
        if self.mode not in START_MODES:
            raise ValueError(f"parent start mode must be one of {START_MODES}, not {self.mode!r}")
        if (self.mode == "finetune") != (self.weights is not None) or (self.mode == "continue") != (self.state is not None):
            raise ValueError("a finetune start carries the parent's weights, a continued one its state")


@dataclass(frozen=True)
class StartRecord:
    """What forming the start did: the names the statement's ``parent`` lists (sorted)."""

    mode: str
    loaded: tuple[str, ...] = ()  # model tensors taken from the parent (finetune)
    reinitialised: tuple[str, ...] = ()  # model tensors kept as the seed built them (finetune)
    dropped: tuple[str, ...] = ()  # parent tensors the model does not have (finetune)


def _expand(declared: Sequence[str], names: Iterable[str]) -> set[str]:
    """Declared names or module prefixes -> the state_dict names they cover; each must cover one."""
    names = list(names)
    covered: set[str] = set()
    for entry in declared:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"TrainingSpec.reinitialised holds {entry!r}, not a tensor or module name")
        hits = {n for n in names if n == entry or n.startswith(entry + ".")}
        if not hits:
            raise ParentMismatchError(f"TrainingSpec.reinitialised names {entry!r}, which is no tensor or module of the model")
        covered |= hits
    return covered


def load_finetune(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], reinitialised: Sequence[str]) -> StartRecord:
    """Load the parent's ``weights`` into ``model`` but for the ``reinitialised`` tensors (see the module doc).

    Raises ``ParentMismatchError`` naming the tensors the parent lacks, or whose shape or dtype differs.
    """
    current = model.state_dict()
    fresh = _expand(reinitialised, current)
    lacking = sorted(n for n in current if n not in fresh and n not in weights)
    if lacking:
        raise ParentMismatchError(
            f"the parent's weights lack the model's tensors {', '.join(lacking[:8])}"
            f"{' and more' if len(lacking) > 8 else ''}: declare them in TrainingSpec.reinitialised to initialise them from the seed"
        )
    differing = [
        f"{n} (parent {weights[n].dtype} {tuple(weights[n].shape)}, model {t.dtype} {tuple(t.shape)})"
        for n, t in current.items()
        if n not in fresh and (weights[n].shape != t.shape or weights[n].dtype != t.dtype)
    ]
    if differing:
        raise ParentMismatchError(
            f"the parent's tensors {', '.join(differing[:4])} do not fit the model: declare them in TrainingSpec.reinitialised"
        )
    loaded = sorted(n for n in current if n not in fresh)
    # Copy point: load_state_dict copies each parent tensor into the model's own (the optimizer keeps its references).
    model.load_state_dict({n: current[n] if n in fresh else weights[n] for n in current}, strict=True)
    return StartRecord(
        mode="finetune", loaded=tuple(loaded), reinitialised=tuple(sorted(fresh)), dropped=tuple(sorted(set(weights) - set(current)))
    )


def read_parent_weights(path: Path, expected_digest: str) -> dict[str, torch.Tensor]:
    """The parent's final weights from its ``model.safetensors``, accepted only if they hash to ``expected_digest``.

    ``expected_digest`` is the weights digest (domain ``weights``, docs/FORMAT.md section 2) a signed
    statement names. Raises ``MissingInputError`` if the file is absent, ``MalformedInputError`` if
    it cannot be decoded, ``LineageError`` if it holds other weights.
    """
    weights = read_weights_file(path, "parent weights file")
    if weights_digest(weights) != expected_digest:
        raise LineageError(f"parent weights file {path} does not hold the parent's final weights {expected_digest}")
    return weights


def read_parent_state(store: Path, expected_digest: str) -> FlatState:
    """The parent's final state: the last checkpoint of its store, accepted only if it hashes to ``expected_digest``.

    ``expected_digest`` is a signed state digest; every state a delta chain reconstructs on the way
    is a step towards the one that is checked, and nothing but the final state is used. Raises
    ``LineageError`` if the last checkpoint is another state.
    """
    index = read_index(store)
    if not index.checkpoints:
        raise MalformedInputError(f"parent store {store} holds no checkpoint")
    steps = [c.step for c in index.checkpoints]
    flat, _ = read_checkpoint(store, steps, len(steps) - 1)
    if state_digest(flat) != expected_digest:
        raise LineageError(f"parent store {store}: its last checkpoint is not the parent's final state {expected_digest}")
    return flat
