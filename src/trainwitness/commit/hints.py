"""Exact mode's signed configuration and hint wire format (docs/EXACT.md).

The grids (``ExactMode``, signed as ``predicate.exact``), each step's hints (``StepHints``), their
8-byte entry encoding, the Merkle leaf that commits them, and the store's ``hints.jsonl`` (packed as
base64 of a zstd frame, decompressed within a bound). The rounding numerics that produce and apply
hints are in ``trainwitness.run.exact``; this module imports no torch.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hashing import domain_hash, format_digest
from trainwitness.commit.json_fields import is_int
from trainwitness.commit.store import read_store_file
from trainwitness.errors import MalformedInputError

__all__ = [
    "EXACT_MODE",
    "DEFAULT_EXACT",
    "ExactMode",
    "Grid",
    "StepHints",
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


EXACT_MODE = "grid-round-nearest/v2"
HINTS_FILE = "hints.jsonl"

_ENTRY = struct.Struct(">Q")
ENTRY_ORDINAL_SHIFT = 40  # entry = ordinal << 40 | element << 1 | up
MAX_HINT_ELEMENT = (1 << 39) - 1
MAX_HINT_ORDINAL = (1 << 24) - 1
# The lowest floor binade any target may have: keeps 2^(m - E) and 2^(E - m) normal float32 numbers.
LOWEST_FLOOR = -100
HIGHEST_SCALE = 127


@dataclass(frozen=True)
class Grid:
    """One rounding grid and its hint margin; every field is signed in the attestation.

    ``mantissa_bits`` m: grid points are k * 2^(E - m) for a value in binade [2^E, 2^(E+1)), E
    clamped below at the *floor*: ``floor_exponent`` plus the target's scale (0 for the state, so
    the floor is absolute there; a gradient tensor's own top binade for gradients).
    ``margin_log2`` k: the prover hints a value within 2^-k of a cell of its rounding boundary;
    the verifier accepts a hint only where its own value lies within twice that (so honest replay
    tolerates noise up to 2^-k of a cell).
    """

    mantissa_bits: int
    margin_log2: int
    floor_exponent: int

    def __post_init__(self) -> None:
        if not 1 <= self.mantissa_bits <= 22:
            raise ValueError("mantissa_bits must be in 1..22 (coarser than float32's 23)")
        if not 4 <= self.margin_log2 <= 30:
            raise ValueError("margin_log2 must be in 4..30 (a margin of at most 1/16 of a cell)")
        if not LOWEST_FLOOR <= self.floor_exponent <= 0:
            raise ValueError(f"floor_exponent must be in {LOWEST_FLOOR}..0 (keeps every scale factor a normal float32)")

    @property
    def margin(self) -> float:
        """Hint margin as a fraction of a cell (the prover's threshold)."""
        return 2.0**-self.margin_log2

    @property
    def tie(self) -> float:
        """Half-width of the zone around a cell's midpoint that rounds to the even grid point.

        Values a step computes exactly at or next to a midpoint (0.9 x a grid value, say, where a
        gradient is zero) would otherwise all need hints; inside this zone every machine rounds
        them the same way without one. Four margins wide, so it holds the whole window.
        """
        return 4.0 * self.margin

    @property
    def window(self) -> float:
        """How near the boundary the verifier's own value must be for a hint to be accepted."""
        return 2.0 * self.margin

    def to_json(self) -> dict[str, JSONValue]:
        return {"mantissa_bits": self.mantissa_bits, "margin_log2": self.margin_log2, "floor_exponent": self.floor_exponent}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Grid:
        expected = {"mantissa_bits", "margin_log2", "floor_exponent"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise MalformedInputError(f"{where}: must hold exactly {sorted(expected)}")
        values = [obj[k] for k in ("mantissa_bits", "margin_log2", "floor_exponent")]
        if not all(is_int(v) for v in values):
            raise MalformedInputError(f"{where}: grid fields must be integers")
        try:
            return cls(*values)
        except ValueError as e:
            raise MalformedInputError(f"{where}: {e}") from e


@dataclass(frozen=True)
class ExactMode:
    """Exact mode's two grids (signed as ``predicate.exact``): gradients before the step, state after."""

    gradients: Grid
    state: Grid

    def to_json(self) -> dict[str, JSONValue]:
        return {"gradients": self.gradients.to_json(), "mode": EXACT_MODE, "state": self.state.to_json()}

    @classmethod
    def from_json(cls, obj: Any, where: str = "exact") -> ExactMode:
        if not isinstance(obj, dict) or set(obj) != {"gradients", "mode", "state"}:
            raise MalformedInputError(f"{where}: must hold exactly ['gradients', 'mode', 'state']")
        if obj["mode"] != EXACT_MODE:
            raise MalformedInputError(f"{where}: mode {obj['mode']!r} is not {EXACT_MODE}")
        return cls(Grid.from_json(obj["gradients"], f"{where}.gradients"), Grid.from_json(obj["state"], f"{where}.state"))


# Calibrated in docs/EXACT.md (benchmarks/exact_mode.py): see the noise table there.
DEFAULT_EXACT = ExactMode(
    gradients=Grid(mantissa_bits=7, margin_log2=8, floor_exponent=-2),
    state=Grid(mantissa_bits=12, margin_log2=10, floor_exponent=-100),
)


@dataclass(frozen=True)
class StepHints:
    """What exact mode commits for one step: gradient scales and hints, then state hints."""

    gradient_scales: tuple[int, ...] = ()
    gradient_hints: bytes = b""
    state_hints: bytes = b""



def decode_entries(data: bytes, sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Untrusted hint bytes as (ordinals, elements, ups): whole entries, strictly increasing, in range."""
    if len(data) % _ENTRY.size:
        raise MalformedInputError(f"exact mode: hint bytes ({len(data)}) are not whole 8-byte entries")
    values = np.frombuffer(data, dtype=">u8").astype(np.uint64)
    positions = values >> np.uint64(1)
    if positions.size > 1 and not bool(np.all(positions[1:] > positions[:-1])):
        raise MalformedInputError("exact mode: hints are not strictly increasing (duplicate or unsorted)")
    ordinals = values >> np.uint64(ENTRY_ORDINAL_SHIFT)
    elements = positions & np.uint64(MAX_HINT_ELEMENT)
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
        if not (0 <= ordinal <= MAX_HINT_ORDINAL and 0 <= element <= MAX_HINT_ELEMENT):
            raise ValueError("hint outside the encodable range")
        out += _ENTRY.pack(ordinal << ENTRY_ORDINAL_SHIFT | element << 1 | int(up))
    return bytes(out)


def decode_hints(data: bytes, sizes: list[int]) -> list[tuple[int, int, bool]]:
    """Parse untrusted hint bytes into (tensor ordinal, element, up) triples."""
    ordinals, elements, ups = decode_entries(data, sizes)
    return [(int(o), int(e), bool(u)) for o, e, u in zip(ordinals, elements, ups, strict=True)]


def hints_digest(data: bytes) -> str:
    return format_digest(domain_hash("hints", data))


def hints_leaf(step: int, hints: StepHints) -> bytes:
    """The Merkle leaf binding step ``step``'s hints (tree ``hints``, one leaf per step)."""
    return canonical_json({
        "gradient_hints_digest": hints_digest(hints.gradient_hints),
        "gradient_scales": list(hints.gradient_scales),
        "state_hints_digest": hints_digest(hints.state_hints),
        "step": step,
        "type": "hints",
    })


def hints_record(step: int, hints: StepHints) -> bytes:
    """One line of the store's hints.jsonl (without the newline); hint bytes travel packed."""
    return canonical_json({
        "gradient_hints": _pack(hints.gradient_hints),
        "gradient_scales": list(hints.gradient_scales),
        "state_hints": _pack(hints.state_hints),
        "step": step,
    })


_RECORD_FIELDS = {"gradient_hints", "gradient_scales", "state_hints", "step"}
# One step's hints name each value at most once: 2^27 entries (1 GiB) is far above any real step.
MAX_STEP_HINT_BYTES = 1 << 30
MAX_HINT_INFLATION = 256  # decompressed bytes per compressed byte of a hints field


def _pack(entries: bytes) -> str:
    """Hint entries as stored: base64 of one zstd frame (sorted 8-byte entries compress ~3.5x), or ""."""
    return base64.b64encode(zstandard.ZstdCompressor(level=3).compress(entries)).decode("ascii") if entries else ""


def _unpack(text: Any, where: str, what: str) -> bytes:
    """The entries of a packed field, refusing non-canonical base64 and decompression past the bound."""
    if not isinstance(text, str):
        raise MalformedInputError(f"{where}: {what} must be a string")
    if not text:
        return b""
    if not text.isascii():  # b64decode raises a bare ValueError for a non-ASCII str, not binascii.Error
        raise MalformedInputError(f"{where}: {what} is not base64 (it holds non-ASCII characters)")
    try:
        frame = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedInputError(f"{where}: {what} is not base64 ({e})") from e
    if base64.b64encode(frame).decode("ascii") != text:
        raise MalformedInputError(f"{where}: {what} is not canonical base64")
    pieces, total = [], 0
    # Strictly increasing 8-byte entries differ in at least one byte each, so they compress by a
    # bounded ratio (3.5x for honest hints, 14x for consecutive elements); a frame that inflates
    # far beyond that is a zstd bomb, refused before it is held.
    limit = min(MAX_STEP_HINT_BYTES, MAX_HINT_INFLATION * len(frame) + (64 << 10))
    try:  # in bounded pieces: the frame's own size claim is not trusted for an allocation
        reader = zstandard.ZstdDecompressor().stream_reader(frame)
        while piece := reader.read(1 << 20):
            total += len(piece)
            if total > limit:
                raise MalformedInputError(f"{where}: {what} decompresses to more than {limit} bytes (a zstd bomb)")
            pieces.append(piece)
    except zstandard.ZstdError as e:
        raise MalformedInputError(f"{where}: {what} is corrupt or truncated zstd data ({e})") from e
    entries = b"".join(pieces)
    if not entries or len(entries) % _ENTRY.size:
        raise MalformedInputError(f"{where}: {what} holds {len(entries)} bytes, not a positive number of 8-byte entries")
    return entries


def parse_hints_record(line: bytes, expected_step: int, where: str) -> StepHints:
    record = parse_json(line, where)
    if not isinstance(record, dict) or set(record) != _RECORD_FIELDS:
        raise MalformedInputError(f"{where}: a hints record holds exactly {sorted(_RECORD_FIELDS)}")
    if record["step"] != expected_step or isinstance(record["step"], bool):
        raise MalformedInputError(f"{where}: step {record['step']!r} out of order (expected {expected_step})")
    scales = record["gradient_scales"]
    if not isinstance(scales, list) or not all(
        is_int(v) and LOWEST_FLOOR <= v <= HIGHEST_SCALE for v in scales
    ):
        raise MalformedInputError(f"{where}: gradient_scales must be a list of binade exponents")
    return StepHints(
        gradient_scales=tuple(scales),
        gradient_hints=_unpack(record["gradient_hints"], where, "gradient_hints"),
        state_hints=_unpack(record["state_hints"], where, "state_hints"),
    )


MAX_HINTS_BYTES = 8 * 1024**3


def read_hints(store: Path, total_steps: int) -> list[StepHints]:
    """Every step's hints from the store's hints.jsonl, one record per step in order."""
    data = read_store_file(store, HINTS_FILE, MAX_HINTS_BYTES)
    lines = data.split(b"\n")
    if data and lines[-1] != b"":
        raise MalformedInputError(f"store {store}: {HINTS_FILE} ends in an unfinished record (truncated)")
    records = [parse_hints_record(line, n, f"{HINTS_FILE} line {n + 1}") for n, line in enumerate(lines[:-1])]
    if len(records) != total_steps:
        raise MalformedInputError(f"store {store}: {HINTS_FILE} has {len(records)} records for {total_steps} steps")
    return records


def hints_leaves(records: list[StepHints]) -> list[bytes]:
    return [hints_leaf(step, hints) for step, hints in enumerate(records)]
