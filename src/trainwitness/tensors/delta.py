"""Delta checkpoints: each checkpoint stored as the XOR of its bit patterns against the previous one.

Consecutive checkpoints share most of their high-order bits (sign, exponent, top of the mantissa),
so ``new XOR previous`` is mostly zero bytes. Each tensor's bytes are then *byte-plane shuffled*
(all first bytes of every element, then all second bytes, ...; blosc's shuffle filter) so that
zstd sees long runs of those zeros instead of one in every four bytes. A *keyframe* is the same
encoding against nothing (shuffle only); a keyframe is written every F checkpoints, and after a
resume, so reaching any checkpoint reads at most F files (the reader refuses chains longer than
``MAX_DELTA_CHAIN``). The file format is in docs/STORAGE.md.

The verifier never trusts a reconstruction: the state digest is checked on the reconstructed full
state, so a corrupt or forged delta anywhere in a chain is caught like a corrupt full checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import torch
import zstandard

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.store import delta_relpath, find_checkpoint, open_store_file
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import (
    MAX_CHECKPOINT_BYTES,
    CheckpointLayout,
    HeaderCheck,
    HeaderEntry,
    read_checkpoint_file,
    read_tensors_file,
)
from trainwitness.tensors.state import DTYPE_NAMES, FlatState
from trainwitness.tensors.tensorfile import Part, join_parts, safetensors_parts

__all__ = ["DELTA_FORMAT", "MAX_DELTA_CHAIN", "delta_parts", "encode_delta", "read_checkpoint"]

DELTA_FORMAT = "trainwitness-delta/v1"
MAX_DELTA_CHAIN = 64  # files read to reach one checkpoint: the keyframe interval may not exceed it
_SKELETON_KEY = "trainwitness"
_DELTA_KEY = "trainwitness-delta"
_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
# The integer type whose bit pattern XOR is taken, by element width in bytes.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

# (checkpoint index, reconstructed state) -> None; raises if the state is not the committed one.
Check = Callable[[int, FlatState], None]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern as a flat integer tensor (a view: bool is read as uint8)."""
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if t.dtype == torch.bool else flat.view(_BITS[t.element_size()])


def _shuffle(bits: torch.Tensor) -> torch.Tensor:
    width = bits.element_size()
    return bits.view(torch.uint8).reshape(-1, width).t().contiguous().reshape(-1)


def _unshuffle(planes: torch.Tensor, width: int) -> torch.Tensor:
    return planes.reshape(width, -1).t().contiguous().reshape(-1)


def encode_delta(flat: FlatState, base: FlatState | None, base_index: int | None, compress_level: int = 3) -> bytes:
    """A delta file: ``flat`` against ``base`` (checkpoint ``base_index``), or a keyframe when base is None."""
    return join_parts(delta_parts(flat, base, base_index), compress_level)


def delta_parts(flat: FlatState, base: FlatState | None, base_index: int | None) -> list[Part]:
    """The safetensors file inside a delta file, as its header and views of the planes (``tensorfile``)."""
    if (base is None) != (base_index is None):
        raise ValueError("a delta names its base checkpoint exactly when it has one")
    planes: dict[str, torch.Tensor] = {}
    entries: dict[str, JSONValue] = {}
    for name, tensor in flat.tensors.items():
        bits = _bits(tensor)
        previous = None if base is None else base.tensors.get(name)
        xor = False
        if previous is not None and previous.dtype == tensor.dtype and previous.shape == tensor.shape:
            bits = torch.bitwise_xor(bits, _bits(previous))  # a new tensor: the writer's, not the trainer's
            xor = True
        planes[name] = _shuffle(bits)
        entries[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape), "xor": xor}
    header = {"base": base_index, "format": DELTA_FORMAT, "tensors": entries}
    metadata = {
        _SKELETON_KEY: canonical_json(flat.skeleton).decode("utf-8"),
        _DELTA_KEY: canonical_json(header).decode("utf-8"),
    }
    return safetensors_parts(planes, metadata)


def _delta_header(metadata: dict[str, JSONValue], what: str) -> tuple[int | None, dict[str, JSONValue]]:
    text = metadata.get(_DELTA_KEY)
    if not isinstance(text, str):
        raise MalformedInputError(f"{what}: no {_DELTA_KEY} header in the safetensors metadata")
    header = parse_json(text.encode("utf-8"), f"{what} delta header")
    if not isinstance(header, dict) or set(header) != {"base", "format", "tensors"} or header["format"] != DELTA_FORMAT:
        raise MalformedInputError(f"{what}: delta header is not {DELTA_FORMAT}")
    base, entries = header["base"], header["tensors"]
    if not (base is None or (isinstance(base, int) and not isinstance(base, bool))) or not isinstance(entries, dict):
        raise MalformedInputError(f"{what}: delta header has a malformed base or tensor table")
    return base, entries


def _peek_base(data: BinaryIO, what: str) -> int | None:
    """The base index a delta file names, decompressing no more than its safetensors header."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True, closefd=False)
        prefix = reader.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if size > 100 * 1024 * 1024:
            raise MalformedInputError(f"{what}: truncated or corrupt (header claims {size} bytes)")
        header = parse_json(reader.read(size), f"{what} header")
    except zstandard.ZstdError as e:
        raise MalformedInputError(f"{what}: corrupt or truncated zstd data ({e})") from e
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise MalformedInputError(f"{what}: no safetensors metadata")
    return _delta_header(metadata, what)[0]


def _layout_check(layout: CheckpointLayout | None, what: str) -> HeaderCheck | None:
    """The header check of a delta file: its delta header's tensors against ``layout``, and each
    stored plane the bytes of its tensor (so nothing is allocated for a file of another run)."""
    if layout is None:
        return None

    def check(planes: list[HeaderEntry], metadata: dict[str, JSONValue]) -> None:
        _, entries = _delta_header(metadata, what)
        declared = []
        for name, entry in entries.items():
            if not isinstance(entry, dict) or _DTYPES.get(str(entry.get("dtype"))) is None or not isinstance(entry.get("shape"), list):
                raise MalformedInputError(f"{what}: tensor {name!r} has a malformed delta entry")
            shape = entry["shape"]
            if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62 for d in shape):
                raise MalformedInputError(f"{what}: tensor {name!r} has a malformed shape")
            declared.append(HeaderEntry(name, _DTYPES[entry["dtype"]], tuple(shape)))
        layout.check(declared, what)
        sizes = {e.name: math.prod(e.shape) * torch.empty(0, dtype=e.dtype).element_size() for e in declared}
        for plane in planes:
            if plane.dtype != torch.uint8 or plane.shape != (sizes.get(plane.name, -1),):
                raise MalformedInputError(f"{what}: the stored plane of {plane.name[:120]!r} is not its tensor's bytes")

    return check


def _decode_delta(store: Path, relpath: str, base: FlatState | None, layout: CheckpointLayout | None = None) -> tuple[FlatState, int]:
    what = f"{store}/{relpath}"
    with open_store_file(store, relpath, MAX_CHECKPOINT_BYTES) as (f, size):
        # streamed: the file is never held whole
        planes, metadata = read_tensors_file(f, size, what, check=_layout_check(layout, what))
    _, entries = _delta_header(metadata, what)
    if set(entries) != set(planes):
        raise MalformedInputError(f"{what}: the delta header and the stored tensors name different tensors")
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "xor"}:
            raise MalformedInputError(f"{what}: tensor {name!r} has a malformed delta entry")
        dtype, shape, xor = _DTYPES.get(entry["dtype"]), entry["shape"], entry["xor"]
        if dtype is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise MalformedInputError(f"{what}: tensor {name!r} has an unsupported dtype or shape")
        width = torch.empty(0, dtype=dtype).element_size()
        stored = planes.pop(name)  # peak memory: each plane is let go once its tensor is rebuilt
        if stored.dtype != torch.uint8 or stored.dim() != 1 or stored.numel() != math.prod(shape) * width:
            raise MalformedInputError(f"{what}: tensor {name!r} holds {stored.numel()} bytes, not {shape} x {width}")
        bits = _unshuffle(stored, width).view(_BITS[width])
        if xor is True:
            previous = None if base is None else base.tensors.get(name)
            if previous is None or previous.dtype != dtype or list(previous.shape) != shape:
                raise MalformedInputError(f"{what}: tensor {name!r} is a delta against a tensor its base lacks")
            bits = torch.bitwise_xor(bits, _bits(previous))
        elif xor is not False:
            raise MalformedInputError(f"{what}: tensor {name!r} has a non-boolean xor flag")
        tensors[name] = (bits.view(torch.bool) if dtype == torch.bool else bits.view(dtype)).reshape(shape)
    text = metadata.get(_SKELETON_KEY)
    if not isinstance(text, str):
        raise MalformedInputError(f"{what}: no trainwitness skeleton in the safetensors metadata")
    return FlatState(tensors=tensors, skeleton=parse_json(text.encode("utf-8"), f"{what} skeleton")), size


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
        with open_store_file(store, delta_relpath(steps[j]), MAX_CHECKPOINT_BYTES) as (f, _):
            base = _peek_base(f, what)
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
        relpath = delta_relpath(steps[j])
        state, size = _decode_delta(store, relpath, state, layout)
        total += size
        if check is not None:
            check(j, state)
    if state is None:  # pragma: no cover - the chain always holds i itself
        raise MalformedInputError(f"store {store}: checkpoint {i} reconstructs to nothing")
    return state, total
