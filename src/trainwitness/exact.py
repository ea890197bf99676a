"""Exact mode: round what noise touches to a grid coarser than the noise, with hints.

Two roundings per training step, both round-to-nearest on a grid that keeps ``mantissa_bits``
bits after the leading one (a relative cell of 2^-m; below a floor binade the cell stops
shrinking, so zero and its neighbourhood are on a uniform grid):

* **gradients**, just before the optimizer consumes them (an optimizer step pre-hook, after any
  clipping): the forward and backward passes are where thread counts and kernels reorder sums,
  and an optimizer such as Adam divides by a running second moment, which turns last-bit gradient
  noise into whole-cell differences of the state. Each gradient tensor's floor is relative to its
  own largest magnitude (its *scale*, recorded per step), because cancellation noise is absolute
  at the tensor's scale, not relative to each element.
* **the state** (floating tensors with at least one dimension under ``model/`` and
  ``optimizer/``), after the optimizer step: what the optimizer's elementwise arithmetic and a
  different device's kernels add.

Two machines whose unrounded values differ by less than the margin land on the same grid point,
except where a value lies near the midpoint between two grid points (the rounding boundary):
those few values are recorded as *hints* (which way the prover rounded them), committed per step,
and the verifier rounds them the same way, after checking that its own unrounded value is indeed
near that boundary. Recording and replay call the same functions; the soundness argument, the
grids, the margins and the hint bytes are in docs/EXACT.md.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from .canonical import JSONValue, canonical_json, parse_json
from .errors import MalformedInputError, ReplayMismatchError
from .hashing import domain_hash, format_digest
from .store import read_store_file

__all__ = [
    "EXACT_MODE",
    "DEFAULT_EXACT",
    "ExactMode",
    "Grid",
    "RoundingTarget",
    "StepHints",
    "rounding_targets",
    "gradient_targets",
    "gradient_scale",
    "check_gradient_scale",
    "round_step",
    "round_gradients",
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
_ORDINAL_SHIFT = 40  # entry = ordinal << 40 | element << 1 | up
_MAX_ELEMENT = (1 << 39) - 1
_MAX_ORDINAL = (1 << 24) - 1
_ROUNDED_DTYPES = (torch.float32, torch.float64)
# The lowest floor binade any target may have: keeps 2^(m - E) and 2^(E - m) normal float32 numbers.
LOWEST_FLOOR = -100
_HIGHEST_SCALE = 127


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
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
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
class RoundingTarget:
    """A tensor to round in place. ``scale``: the binade the grid's floor counts from.

    ``previous``: the tensor's value before the step, when it had one. A step's rounding error
    scales with its operands, not its result (``p - lr * u`` that nearly cancels is off by an ulp
    of ``p``), so each value's cell is the larger of its own and its previous value's cell.
    """

    name: str
    tensor: torch.Tensor
    scale: int = 0
    previous: torch.Tensor | None = None


def _check_dtype(name: str, t: torch.Tensor) -> None:
    """The training program's tensors are input: an unsupported dtype is refused by name, not a crash."""
    if t.dtype not in _ROUNDED_DTYPES:
        raise MalformedInputError(f"exact mode rounds float32/float64 tensors; {name} is {t.dtype}")


def rounding_targets(tensors: dict[str, torch.Tensor]) -> list[RoundingTarget]:
    """The state tensors exact mode rounds, in the order hints number them (sorted by name).

    Scalars are left alone: they are counters (Adam's ``step``) that noise does not touch and
    that a grid would corrupt. Any other floating dtype is refused rather than silently skipped.
    """
    targets = []
    for name in sorted(tensors):
        t = tensors[name]
        if not (name.startswith("model/") or name.startswith("optimizer/")) or not t.is_floating_point() or t.ndim == 0:
            continue
        _check_dtype(name, t)
        targets.append(RoundingTarget(name, t))
    if len(targets) > _MAX_ORDINAL + 1:
        raise MalformedInputError("exact mode: too many tensors for the hint encoding")
    return targets


def _largest_magnitude(t: torch.Tensor) -> float:
    """max |x| over the finite values (0.0 when there are none)."""
    a = t.detach().abs()
    return float(torch.where(torch.isfinite(a), a, torch.zeros_like(a)).max()) if a.numel() else 0.0


def gradient_scale(grid: Grid, gradient: torch.Tensor) -> int:
    """The scale a gradient tensor's floor counts from: its top binade, clamped so the floor stays normal."""
    lowest = LOWEST_FLOOR - grid.floor_exponent
    top = _largest_magnitude(gradient)
    return lowest if top == 0.0 else max(math.frexp(top)[1] - 1, lowest)


def check_gradient_scale(grid: Grid, gradient: torch.Tensor, claimed: int, name: str) -> None:
    """Accept a recorded scale only where the verifier's own largest gradient supports it.

    Equal to the verifier's own scale, or the neighbouring binade when the verifier's largest
    magnitude lies within the window (in cells of the top binade) of the boundary between them.
    """
    lowest = LOWEST_FLOOR - grid.floor_exponent
    if not lowest <= claimed <= _HIGHEST_SCALE:
        raise MalformedInputError(f"exact mode: gradient scale {claimed} of {name} is outside {lowest}..{_HIGHEST_SCALE}")
    top = _largest_magnitude(gradient)
    slack = grid.window * 2.0**-grid.mantissa_bits
    low_ok = claimed == lowest or top >= math.ldexp(1.0, claimed) * (1.0 - slack)
    high_ok = top < math.ldexp(1.0, claimed + 1) * (1.0 + slack)
    if not (low_ok and high_ok):
        raise ReplayMismatchError(
            f"exact mode: recorded gradient scale 2^{claimed} of {name} does not fit this machine's "
            f"largest gradient magnitude {top:.6g}"
        )


def gradient_targets(parameters: Sequence[torch.nn.Parameter | torch.Tensor]) -> list[RoundingTarget]:
    """The gradients exact mode rounds: every parameter's ``.grad`` that exists, in the optimizer's order."""
    targets = []
    for position, p in enumerate(parameters):
        if p.grad is None:
            continue
        name = f"gradient of optimizer parameter {position}"
        _check_dtype(name, p.grad)
        targets.append(RoundingTarget(name, p.grad))
    if len(targets) > _MAX_ORDINAL + 1:
        raise MalformedInputError("exact mode: too many tensors for the hint encoding")
    return targets


# (integer type of the same width, mantissa bits, exponent bias) of each rounded dtype
_LAYOUT = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _exponent_fields(magnitudes: torch.Tensor) -> torch.Tensor:
    """The biased exponent field of each non-negative value (0 for zero and subnormals; all ones for inf, NaN)."""
    int_type, mantissa, _ = _LAYOUT[magnitudes.dtype]
    return magnitudes.view(int_type) >> mantissa


_CHUNK = 1 << 18  # values per pass: the temporaries stay in cache and are reused, not faulted in afresh


def _cells(grid: Grid, values: torch.Tensor, previous: torch.Tensor | None, scale: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grid point below |x| in cells, position in the cell in [0, 1), 2^(m - E) per value) of a 1-d run.

    E is the value's binade (the larger of its own and its previous value's, at least the floor),
    read from the exponent bits. Computed in x's own dtype, where scaling by a power of two, taking
    the floor and subtracting it are exact (the scaled value is below 2^(m+1) <= 2^23), so the
    position is exact, not approximate. In place on temporaries: this runs on every value every step.
    """
    _, mantissa, bias = _LAYOUT[values.dtype]
    magnitudes = values.abs()
    exponents = _exponent_fields(magnitudes)
    if previous is not None:
        exponents = torch.maximum(exponents, _exponent_fields(previous.abs().to(values.dtype)))
    exponents.clamp_(min=bias + scale + grid.floor_exponent)
    # 2^(m - E) from its bits: biased exponent bias + m - (field - bias); normal for every field (Grid's bounds)
    factor = exponents.neg_().add_(2 * bias + grid.mantissa_bits).bitwise_left_shift_(mantissa).view(values.dtype)
    scaled = magnitudes.mul_(factor)
    below = scaled.floor()
    return below, scaled.sub_(below), factor


def _round_run(
    grid: Grid, name: str, values: torch.Tensor, previous: torch.Tensor | None, scale: int,
    given: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a 1-d run of values in place; return (hinted positions, their ups) when recording."""
    below, position, factor = _cells(grid, values, previous, scale)
    # Round to nearest, except within ``tie`` of the midpoint, where the even grid point wins:
    # so the boundary sits at 1/2 + tie above an even point and 1/2 - tie above an odd one.
    boundary = torch.fmod(below, 2).mul_(-2 * grid.tie).add_(0.5 + grid.tie)
    up = position >= boundary
    distance = position.sub_(boundary).abs_()  # NaN for non-finite values: never within a margin
    hinted = torch.nonzero(distance < grid.margin).reshape(-1) if given is None else torch.empty(0, dtype=torch.int64)
    if given is not None and given[0].size:
        index = torch.from_numpy(given[0])
        far = ~(distance[index] < grid.window)
        if bool(far.any()):
            bad = int(index[far][0])
            raise ReplayMismatchError(
                f"exact mode: hint for {name}[{bad}] is not near a rounding boundary here "
                f"(distance {float(distance[bad]):.4f} of a cell, window {grid.window})"
            )
        up[index] = torch.from_numpy(given[1])
    ups = up[hinted]
    rounded = torch.copysign(below.add_(up).div_(factor), values)  # (cells + up) x 2^(E - m): exact
    if not bool(torch.isfinite(rounded).all()):
        rounded = torch.where(torch.isfinite(values), rounded, values)
    values.copy_(rounded)
    return hinted, ups


def round_step(grid: Grid, targets: Iterable[RoundingTarget], hints: bytes | None = None) -> bytes:
    """Round every target in place; return the hints.

    Recording (``hints is None``): values within the margin of a boundary become hints, recording
    the way this machine's value rounds. Replay: the given hints are applied after checking that
    each hinted value lies within the verifier's window of its boundary; every other value rounds
    by the same rule. Raises ``ReplayMismatchError`` for a hint the verifier's values do not support.
    Non-finite values are left as they are and never hinted.
    """
    targets = list(targets)
    given = None if hints is None else _decode(hints, [t.tensor.numel() for t in targets])
    produced: list[np.ndarray] = []
    with torch.no_grad():
        for ordinal, target in enumerate(targets):
            values = target.tensor.detach()
            flat = values.reshape(-1) if values.is_contiguous() else values.contiguous().reshape(-1)
            previous = None
            if target.previous is not None:
                if target.previous.shape != values.shape:
                    raise MalformedInputError(f"exact mode: {target.name} changed shape in a step")
                previous = target.previous.detach().reshape(-1)
            if given is not None:
                lo, hi = np.searchsorted(given[0], [ordinal, ordinal + 1])
                elements, ups = given[1][lo:hi].astype(np.int64), given[2][lo:hi]
            for start in range(0, flat.numel(), _CHUNK):
                stop = min(start + _CHUNK, flat.numel())
                committed = None
                if given is not None:
                    a, b = np.searchsorted(elements, [start, stop])
                    committed = (elements[a:b] - start, ups[a:b])
                hinted, up = _round_run(
                    grid, target.name, flat[start:stop], None if previous is None else previous[start:stop],
                    target.scale, committed,
                )
                if given is None:
                    produced.append(_entries(ordinal, hinted + start, up))
            if flat.data_ptr() != values.data_ptr() or not values.is_contiguous():
                values.copy_(flat.reshape(values.shape))
    if hints is not None:
        return hints
    return np.concatenate(produced).astype(">u8").tobytes() if produced else b""


@dataclass(frozen=True)
class StepHints:
    """What exact mode commits for one step: gradient scales and hints, then state hints."""

    gradient_scales: tuple[int, ...] = ()
    gradient_hints: bytes = b""
    state_hints: bytes = b""


def round_gradients(grid: Grid, parameters: Sequence[torch.Tensor], committed: StepHints | None) -> tuple[tuple[int, ...], bytes]:
    """Round the parameters' gradients in place (recording: ``committed is None``); return (scales, hints)."""
    targets = gradient_targets(parameters)
    if committed is None:
        scales = tuple(gradient_scale(grid, t.tensor) for t in targets)
    else:
        scales = committed.gradient_scales
        if len(scales) != len(targets):
            raise ReplayMismatchError(
                f"exact mode: {len(scales)} gradient scales committed for {len(targets)} gradients computed here"
            )
        for target, scale in zip(targets, scales, strict=True):
            check_gradient_scale(grid, target.tensor, scale, target.name)
    scaled = [RoundingTarget(t.name, t.tensor, s) for t, s in zip(targets, scales, strict=True)]
    return scales, round_step(grid, scaled, None if committed is None else committed.gradient_hints)


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


def _pack(entries: bytes) -> str:
    """Hint entries as stored: base64 of one zstd frame (sorted 8-byte entries compress ~3.5x), or ""."""
    return base64.b64encode(zstandard.ZstdCompressor(level=3).compress(entries)).decode("ascii") if entries else ""


def _unpack(text: Any, where: str, what: str) -> bytes:
    """The entries of a packed field, refusing non-canonical base64 and decompression past the bound."""
    if not isinstance(text, str):
        raise MalformedInputError(f"{where}: {what} must be a string")
    if not text:
        return b""
    try:
        frame = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise MalformedInputError(f"{where}: {what} is not base64 ({e})") from e
    if base64.b64encode(frame).decode("ascii") != text:
        raise MalformedInputError(f"{where}: {what} is not canonical base64")
    pieces, total = [], 0
    try:  # in bounded pieces: the frame's own size claim is not trusted for an allocation
        reader = zstandard.ZstdDecompressor().stream_reader(frame)
        while piece := reader.read(1 << 20):
            total += len(piece)
            if total > MAX_STEP_HINT_BYTES:
                raise MalformedInputError(f"{where}: {what} decompresses to more than {MAX_STEP_HINT_BYTES} bytes")
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
        isinstance(v, int) and not isinstance(v, bool) and LOWEST_FLOOR <= v <= _HIGHEST_SCALE for v in scales
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
