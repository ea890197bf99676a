"""Exact mode: round the training state to a grid coarser than cross-machine noise, with hints.

After every optimizer step the parameters and optimizer state (floating tensors with at least one
dimension, under ``model/`` and ``optimizer/``) are rounded to nearest on a grid that keeps
``mantissa_bits`` bits after the leading one (a relative cell of 2^-m; below 2^floor_exponent
the cell stops shrinking, so zero and its neighbourhood are on a uniform grid). Two machines whose
unrounded values differ by less than the margin land on the same grid point, except where a value
lies near the midpoint between two grid points (the rounding boundary): those few values are
recorded as *hints* (which way the prover rounded them), committed per step, and the verifier
rounds them the same way, after checking that its own unrounded value is indeed near that boundary.

Recording and replay call the same function, ``round_step``; the soundness argument, the grid, the
margin and the hint bytes are in docs/EXACT.md.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .canonical import JSONValue, canonical_json, parse_json
from .errors import MalformedInputError, ReplayMismatchError
from .hashing import domain_hash, format_digest
from .store import read_store_file

__all__ = [
    "EXACT_MODE",
    "DEFAULT_GRID",
    "Grid",
    "RoundingTarget",
    "rounding_targets",
    "round_step",
    "encode_hints",
    "decode_hints",
    "hints_digest",
    "hints_leaf",
    "hints_record",
    "parse_hints_record",
    "HINTS_FILE",
    "read_hints",
    "hints_leaves",
]

EXACT_MODE = "grid-round-nearest/v1"
HINTS_FILE = "hints.jsonl"

_ENTRY = struct.Struct(">Q")
_ORDINAL_SHIFT = 40  # entry = ordinal << 40 | element << 1 | up
_MAX_ELEMENT = (1 << 39) - 1
_MAX_ORDINAL = (1 << 24) - 1
_ROUNDED_DTYPES = (torch.float32, torch.float64)
_HEX_RE = re.compile(r"(?:[0-9a-f]{16})*")


@dataclass(frozen=True)
class Grid:
    """The rounding grid and hint margin; every field is signed in the attestation.

    ``mantissa_bits`` m: grid points are k * 2^(E - m) for a value in binade [2^E, 2^(E+1)),
    E clamped below at ``floor_exponent``. ``margin_log2`` k: the prover hints a value within
    2^-k of a cell of its rounding boundary; the verifier accepts a hint only where its own value
    lies within twice that (so honest replay tolerates noise up to 2^-k of a cell).
    """

    mantissa_bits: int
    margin_log2: int
    floor_exponent: int

    def __post_init__(self) -> None:
        if not 1 <= self.mantissa_bits <= 22:
            raise ValueError("mantissa_bits must be in 1..22 (coarser than float32's 23)")
        if not 3 <= self.margin_log2 <= 30:
            raise ValueError("margin_log2 must be in 3..30 (a margin of at most 1/8 of a cell)")
        if not -100 <= self.floor_exponent <= 0:
            raise ValueError("floor_exponent must be in -100..0 (keeps every scale factor a normal float32)")

    @property
    def margin(self) -> float:
        """Hint margin as a fraction of a cell (the prover's threshold)."""
        return 2.0**-self.margin_log2

    @property
    def window(self) -> float:
        """How near the boundary the verifier's own value must be for a hint to be accepted."""
        return 2.0 * self.margin

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "mode": EXACT_MODE,
            "mantissa_bits": self.mantissa_bits,
            "margin_log2": self.margin_log2,
            "floor_exponent": self.floor_exponent,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "exact") -> Grid:
        expected = {"mode", "mantissa_bits", "margin_log2", "floor_exponent"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise MalformedInputError(f"{where}: must hold exactly {sorted(expected)}")
        if obj["mode"] != EXACT_MODE:
            raise MalformedInputError(f"{where}: mode {obj['mode']!r} is not {EXACT_MODE}")
        values = [obj[k] for k in ("mantissa_bits", "margin_log2", "floor_exponent")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise MalformedInputError(f"{where}: grid fields must be integers")
        try:
            return cls(*values)
        except ValueError as e:
            raise MalformedInputError(f"{where}: {e}") from e


# Calibrated in docs/EXACT.md: cross-thread noise of one digits step is below 2^-9 of a 2^-14 cell.
DEFAULT_GRID = Grid(mantissa_bits=12, margin_log2=6, floor_exponent=-8)


@dataclass(frozen=True)
class RoundingTarget:
    name: str
    tensor: torch.Tensor


def rounding_targets(tensors: dict[str, torch.Tensor]) -> list[RoundingTarget]:
    """The tensors exact mode rounds, in the order hints number them (sorted by name).

    Scalars are left alone: they are counters (Adam's ``step``) that noise does not touch and
    that a grid would corrupt. Any other floating dtype is refused rather than silently skipped.
    """
    targets = []
    for name in sorted(tensors):
        t = tensors[name]
        if not (name.startswith("model/") or name.startswith("optimizer/")) or not t.is_floating_point() or t.ndim == 0:
            continue
        if t.dtype not in _ROUNDED_DTYPES:
            raise ValueError(f"exact mode rounds float32/float64 state; {name} is {t.dtype}")
        targets.append(RoundingTarget(name, t))
    if len(targets) > _MAX_ORDINAL + 1:
        raise ValueError("too many tensors for the hint encoding")
    return targets


_BITS = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _pow2(n: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2^n, exactly, built from its bits (n within the dtype's normal range; Grid's bounds ensure it)."""
    int_type, mantissa, bias = _BITS[dtype]
    return ((n.to(int_type) + bias) << mantissa).view(dtype)


def _cells(grid: Grid, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(finite mask, grid point below |x| in cell units, position in the cell in [0, 1), binade E).

    Computed in x's own dtype, where scaling by a power of two, taking the floor and subtracting it
    are exact (the scaled value is below 2^(m+1) <= 2^23), so the position is exact, not approximate.
    """
    a = x.detach().abs().reshape(-1)
    finite = torch.isfinite(a)
    a = torch.where(finite, a, torch.zeros_like(a))
    _, exponent = torch.frexp(a)  # a = mantissa * 2^exponent, mantissa in [0.5, 1)
    binade = torch.clamp(exponent - 1, min=grid.floor_exponent)
    scaled = a * _pow2(grid.mantissa_bits - binade, a.dtype)
    below = torch.floor(scaled)
    return finite, below, scaled - below, binade


def round_step(grid: Grid, targets: Iterable[RoundingTarget], hints: bytes | None = None) -> bytes:
    """Round every target in place; return the hints.

    Recording (``hints is None``): values within the margin of a boundary become hints, recording
    the way this machine's value rounds. Replay: the given hints are applied after checking that
    each hinted value lies within the verifier's window of its boundary; every other value rounds
    to nearest. Raises ``ReplayMismatchError`` for a hint the verifier's values do not support.
    """
    targets = list(targets)
    given = None if hints is None else _decode(hints, [t.tensor.numel() for t in targets])
    produced: list[np.ndarray] = []
    with torch.no_grad():
        for ordinal, target in enumerate(targets):
            finite, below, position, binade = _cells(grid, target.tensor)
            up = position >= 0.5
            distance = (position - 0.5).abs()
            if given is None:
                hinted = torch.nonzero(finite & (distance < grid.margin)).reshape(-1)
                produced.append(_entries(ordinal, hinted, up[hinted]))
            else:
                lo, hi = np.searchsorted(given[0], [ordinal, ordinal + 1])
                if hi > lo:
                    index = torch.from_numpy(given[1][lo:hi].astype(np.int64))
                    far = (~finite[index]) | (distance[index] >= grid.window)
                    if bool(far.any()):
                        bad = int(index[far][0])
                        raise ReplayMismatchError(
                            f"exact mode: hint for {target.name}[{bad}] is not near a rounding boundary here "
                            f"(distance {float(distance[bad]):.4f} of a cell, window {grid.window})"
                        )
                    up[index] = torch.from_numpy(given[2][lo:hi])
            magnitude = (below + up.to(below.dtype)) * _pow2(binade - grid.mantissa_bits, below.dtype)
            original = target.tensor.detach().reshape(-1)
            rounded = torch.where(finite, torch.copysign(magnitude, original), original)
            target.tensor.copy_(rounded.reshape(target.tensor.shape))
    if hints is not None:
        return hints
    return np.concatenate(produced).astype(">u8").tobytes() if produced else b""


def _entries(ordinal: int, elements: torch.Tensor, up: torch.Tensor) -> np.ndarray:
    if elements.numel() and int(elements.max()) > _MAX_ELEMENT:
        raise ValueError("hint outside the encodable range")
    e = elements.numpy().astype(np.uint64)
    return (np.uint64(ordinal) << np.uint64(_ORDINAL_SHIFT)) | (e << np.uint64(1)) | up.numpy().astype(np.uint64)


def _decode(data: bytes, sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Untrusted hint bytes as (ordinals, elements, ups): whole entries, strictly increasing, in range."""
    if len(data) % _ENTRY.size:
        raise MalformedInputError(f"exact mode: hint bytes ({len(data)}) are not whole 8-byte entries")
    values = np.frombuffer(data, dtype=">u8").astype(np.uint64)
    positions = values >> np.uint64(1)
    if positions.size > 1 and not bool(np.all(positions[1:] > positions[:-1])):
        raise MalformedInputError("exact mode: hints are not strictly increasing (duplicate or unsorted)")
    ordinals = values >> np.uint64(_ORDINAL_SHIFT)
    elements = positions & np.uint64(_MAX_ELEMENT)
    if ordinals.size and int(ordinals.max()) >= len(sizes):
        raise MalformedInputError(f"exact mode: a hint names tensor {int(ordinals.max())}, which does not exist")
    limits = np.asarray(sizes, dtype=np.uint64)[ordinals.astype(np.int64)] if ordinals.size else ordinals
    if bool(np.any(elements >= limits)):
        raise MalformedInputError("exact mode: a hint names an element past the end of its tensor")
    return ordinals, elements, (values & np.uint64(1)).astype(bool)


def encode_hints(hints: list[tuple[int, int, bool]]) -> bytes:
    """Each hint as one big-endian u64: ordinal << 40 | element << 1 | up; strictly increasing."""
    out = bytearray()
    for ordinal, element, up in sorted(hints):
        if not (0 <= ordinal <= _MAX_ORDINAL and 0 <= element <= _MAX_ELEMENT):
            raise ValueError("hint outside the encodable range")
        out += _ENTRY.pack(ordinal << _ORDINAL_SHIFT | element << 1 | int(up))
    return bytes(out)


def decode_hints(data: bytes, sizes: list[int]) -> list[tuple[int, int, bool]]:
    """Parse untrusted hint bytes into (tensor ordinal, element, up) triples."""
    ordinals, elements, ups = _decode(data, sizes)
    return [(int(o), int(e), bool(u)) for o, e, u in zip(ordinals, elements, ups, strict=True)]


def hints_digest(data: bytes) -> str:
    return format_digest(domain_hash("hints", data))


def hints_leaf(step: int, digest: str) -> bytes:
    """The Merkle leaf binding step ``step``'s hints (tree ``hints``, one leaf per step)."""
    return canonical_json({"hints_digest": digest, "step": step, "type": "hints"})


def hints_record(step: int, data: bytes) -> bytes:
    """One line of the store's hints.jsonl (without the newline)."""
    return canonical_json({"hints": data.hex(), "step": step})


def parse_hints_record(line: bytes, expected_step: int, where: str) -> bytes:
    record = parse_json(line, where)
    if not isinstance(record, dict) or set(record) != {"hints", "step"}:
        raise MalformedInputError(f"{where}: a hints record holds exactly 'hints' and 'step'")
    if record["step"] != expected_step or isinstance(record["step"], bool):
        raise MalformedInputError(f"{where}: step {record['step']!r} out of order (expected {expected_step})")
    text = record["hints"]
    if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
        raise MalformedInputError(f"{where}: hints must be lowercase hex, 16 digits per hint")
    return bytes.fromhex(text)


MAX_HINTS_BYTES = 8 * 1024**3


def read_hints(store: Path, total_steps: int) -> list[bytes]:
    """Every step's hint bytes from the store's hints.jsonl, one record per step in order."""
    data = read_store_file(store, HINTS_FILE, MAX_HINTS_BYTES)
    lines = data.split(b"\n")
    if data and lines[-1] != b"":
        raise MalformedInputError(f"store {store}: {HINTS_FILE} ends in an unfinished record (truncated)")
    records = [parse_hints_record(line, n, f"{HINTS_FILE} line {n + 1}") for n, line in enumerate(lines[:-1])]
    if len(records) != total_steps:
        raise MalformedInputError(f"store {store}: {HINTS_FILE} has {len(records)} records for {total_steps} steps")
    return records


def hints_leaves(records: list[bytes]) -> list[bytes]:
    return [hints_leaf(step, hints_digest(data)) for step, data in enumerate(records)]
