"""Reading checkpoint i of a store: the one reader of every checkpoint, full or delta.

A store holds each checkpoint as a full file (``checkpoint.py``: safetensors, optionally zstd) or as
a delta file (``delta.py``) against the previous checkpoint. This module finds the file for a step
(``store.find_checkpoint``: names derived from step numbers, never from the files), opens it by the
store's safe open, and for a delta follows the chain of bases back to a keyframe and applies it
forwards. The file formats are in docs/STORAGE.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from trainwitness.commit.store import delta_relpath, find_checkpoint, open_store_file
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import MAX_CHECKPOINT_BYTES, CheckpointLayout, read_checkpoint_file
from trainwitness.tensors.delta import MAX_DELTA_CHAIN, decode_delta, peek_delta_base
from trainwitness.tensors.state import FlatState

__all__ = ["Check", "read_checkpoint", "delta_base"]

# (checkpoint index, reconstructed state) -> None; raises if the state is not the committed one.
Check = Callable[[int, FlatState], None]


def delta_base(store: Path, relpath: str) -> int | None:
    """The base checkpoint index the delta file ``store/relpath`` names (None: a keyframe); reads its header only.

    Not a check: the chain it leads to is verified when ``read_checkpoint`` reconstructs it.
    """
    with open_store_file(store, relpath, MAX_CHECKPOINT_BYTES) as (f, size):
        return peek_delta_base(f, size, f"{store}/{relpath}")


def _decode_delta_file(store: Path, relpath: str, base: FlatState | None, layout: CheckpointLayout | None) -> tuple[FlatState, int]:
    with open_store_file(store, relpath, MAX_CHECKPOINT_BYTES) as (f, size):
        return decode_delta(f, size, f"{store}/{relpath}", base, layout), size  # streamed: never held whole


def read_checkpoint(
    store: Path,
    steps: Sequence[int],
    i: int,
    check: Check | None = None,
    start: tuple[int, FlatState] | None = None,
    layout: CheckpointLayout | None = None,
) -> tuple[FlatState, int]:
    """Checkpoint i (at ``steps[i]``) as a full state, and the bytes of the files read for it.

    A full checkpoint file is read as is. A delta file is followed back through its bases to a
    keyframe (or to ``start``, a state already reconstructed, when the chain passes it), reading
    only headers, then applied forwards one file at a time so at most two states are held. File
    names come from ``steps``, never from the files. ``check`` is called on every state the chain
    reconstructs, in order, so a corrupt link is named where it is. With ``layout``, a file whose
    header declares other tensors than a checkpoint of the run holds is refused before allocation.
    Raises ``MissingInputError`` (a file is missing) and ``MalformedInputError`` (one does not decode,
    or the chain is broken or longer than ``MAX_DELTA_CHAIN``).
    """
    relpath = find_checkpoint(store, steps[i])
    if relpath != delta_relpath(steps[i]):
        with open_store_file(store, relpath, MAX_CHECKPOINT_BYTES) as (f, size):
            flat = read_checkpoint_file(f, size, f"{store}/{relpath}", layout=layout)  # streamed: never held whole
        if check is not None:
            check(i, flat)
        return flat, size
    # Walk back from i to a keyframe (or to ``start``) through the bases the headers name.
    chain = [i]
    while True:
        j = chain[-1]
        if start is not None and start[0] == j and j != i:
            break
        what = f"{store}/{delta_relpath(steps[j])}"
        base = delta_base(store, delta_relpath(steps[j]))
        if base is None:
            break
        if base != j - 1:
            raise MalformedInputError(f"{what}: a delta must be against the previous checkpoint ({j - 1}), not {base}")
        if len(chain) >= MAX_DELTA_CHAIN:
            raise MalformedInputError(f"{what}: more than {MAX_DELTA_CHAIN} delta files lie between it and a keyframe")
        chain.append(base)
    # Apply forwards, holding only the previous state.
    state: FlatState | None = start[1] if start is not None and start[0] == chain[-1] and chain[-1] != i else None
    total = 0
    for j in reversed(chain if state is None else chain[:-1]):
        state, size = _decode_delta_file(store, delta_relpath(steps[j]), state, layout)
        total += size
        if check is not None:
            check(j, state)
    if state is None:  # pragma: no cover - the chain always holds i itself
        raise MalformedInputError(f"store {store}: checkpoint {i} reconstructs to nothing")
    return state, total
