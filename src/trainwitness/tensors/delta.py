"""Delta checkpoints: each checkpoint stored as the XOR of its bit patterns against the previous one.

Consecutive checkpoints share most of their high-order bits (sign, exponent, top of the mantissa),
so ``new XOR previous`` is mostly zero bytes. Each tensor's bytes are then *byte-plane shuffled*
(all first bytes of every element, then all second bytes, ...; blosc's shuffle filter) so that
zstd sees long runs of those zeros instead of one in every four bytes. A *keyframe* is the same
encoding against nothing (shuffle only); a keyframe is written every F checkpoints, and after a
resume, so reaching any checkpoint reads at most F files (``checkpoint_reader`` refuses chains
longer than ``MAX_DELTA_CHAIN``). The file format is in docs/STORAGE.md. This module encodes and
decodes one delta file; finding and following a chain in a store is ``checkpoint_reader``'s job.

The verifier never trusts a reconstruction: the state digest is checked on the reconstructed full
state, so a corrupt or forged delta anywhere in a chain is caught like a corrupt full checkpoint.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import torch

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.json_fields import is_int
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import (
    DTYPES,
    SKELETON_KEY,
    CheckpointLayout,
    HeaderCheck,
    HeaderEntry,
    read_file_metadata,
    read_tensors_file,
    state_from_tensors,
)
from trainwitness.tensors.state import DTYPE_NAMES, FlatState
from trainwitness.tensors.tensorfile import Part, join_parts, safetensors_parts

__all__ = ["DELTA_FORMAT", "MAX_DELTA_CHAIN", "delta_parts", "encode_delta", "peek_delta_base", "decode_delta"]

DELTA_FORMAT = "trainwitness-delta/v1"
MAX_DELTA_CHAIN = 64  # files read to reach one checkpoint: the keyframe interval may not exceed it
_DELTA_KEY = "trainwitness-delta"
# The integer type whose bit pattern XOR is taken, by element width in bytes.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

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
        SKELETON_KEY: canonical_json(flat.skeleton).decode("utf-8"),
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
    if not (base is None or is_int(base)) or not isinstance(entries, dict):
        raise MalformedInputError(f"{what}: delta header has a malformed base or tensor table")
    return base, entries


def peek_delta_base(f: BinaryIO, length: int, what: str) -> int | None:
    """The base checkpoint index the open delta file ``f`` names (None: a keyframe), decompressing
    no more than its safetensors header. Not a check: the chain it leads to is verified when it is
    reconstructed (``checkpoint_reader.read_checkpoint``)."""
    return _delta_header(read_file_metadata(f, length, what), what)[0]


def _layout_check(layout: CheckpointLayout | None, what: str) -> HeaderCheck | None:
    """The header check of a delta file: its delta header's tensors against ``layout``, and each
    stored plane the bytes of its tensor (so nothing is allocated for a file of another run)."""
    if layout is None:
        return None

    def check(planes: list[HeaderEntry], metadata: dict[str, JSONValue]) -> None:
        _, entries = _delta_header(metadata, what)
        declared = []
        for name, entry in entries.items():
            if not isinstance(entry, dict) or DTYPES.get(str(entry.get("dtype"))) is None or not isinstance(entry.get("shape"), list):
                raise MalformedInputError(f"{what}: tensor {name!r} has a malformed delta entry")
            shape = entry["shape"]
            if not all(is_int(d) and 0 <= d < 2**62 for d in shape):
                raise MalformedInputError(f"{what}: tensor {name!r} has a malformed shape")
            declared.append(HeaderEntry(name, DTYPES[entry["dtype"]], tuple(shape)))
        layout.check(declared, what)
        sizes = {e.name: math.prod(e.shape) * torch.empty(0, dtype=e.dtype).element_size() for e in declared}
        for plane in planes:
            if plane.dtype != torch.uint8 or plane.shape != (sizes.get(plane.name, -1),):
                raise MalformedInputError(f"{what}: the stored plane of {plane.name[:120]!r} is not its tensor's bytes")

    return check


def decode_delta(
    f: BinaryIO, size: int, what: str, base: FlatState | None, layout: CheckpointLayout | None = None
) -> FlatState:
    """The full state a delta file (open as ``f``, ``size`` bytes) encodes against ``base`` (None
    for a keyframe), streamed: the file is never held whole. With ``layout``, a header declaring
    other tensors is refused before allocation. ``MalformedInputError`` when it does not decode.
    """
    planes, metadata = read_tensors_file(f, size, what, check=_layout_check(layout, what))
    _, entries = _delta_header(metadata, what)
    if set(entries) != set(planes):
        raise MalformedInputError(f"{what}: the delta header and the stored tensors name different tensors")
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "xor"}:
            raise MalformedInputError(f"{what}: tensor {name!r} has a malformed delta entry")
        dtype, shape, xor = DTYPES.get(entry["dtype"]), entry["shape"], entry["xor"]
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
    return state_from_tensors(tensors, metadata, what)
