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
* **the state** (floating tensors with at least one dimension under ``model/``,
  ``optimizer/`` and ``extra/``: EMA weights), after the optimizer step: what the optimizer's elementwise arithmetic and a
  different device's kernels add.

Two machines whose unrounded values differ by less than the margin land on the same grid point,
except where a value lies near the midpoint between two grid points (the rounding boundary):
those few values are recorded as *hints* (which way the prover rounded them), committed per step,
and the verifier rounds them the same way, after checking that its own unrounded value is indeed
near that boundary. Recording and replay call the same functions; the soundness argument, the
grids, the margins and the hint bytes are in docs/EXACT.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainwitness.commit.hints import (
    ENTRY_ORDINAL_SHIFT,
    HIGHEST_SCALE,
    LOWEST_FLOOR,
    MAX_HINT_ELEMENT,
    MAX_HINT_ORDINAL,
    Grid,
    StepHints,
    decode_entries,
)
from trainwitness.errors import MalformedInputError, ReplayMismatchError

__all__ = [
    "RoundingTarget",
    "rounding_targets",
    "gradient_targets",
    "gradient_scale",
    "check_gradient_scale",
    "round_step",
    "round_gradients",
]

_ROUNDED_DTYPES = (torch.float32, torch.float64)

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
        if not name.startswith(("model/", "optimizer/", "extra/")) or not t.is_floating_point() or t.ndim == 0:
            continue
        _check_dtype(name, t)
        targets.append(RoundingTarget(name, t))
    if len(targets) > MAX_HINT_ORDINAL + 1:
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
    if not lowest <= claimed <= HIGHEST_SCALE:
        raise MalformedInputError(f"exact mode: gradient scale {claimed} of {name} is outside {lowest}..{HIGHEST_SCALE}")
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
    if len(targets) > MAX_HINT_ORDINAL + 1:
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
    hinted = torch.nonzero(distance < grid.margin).reshape(-1) if given is None else torch.empty(0, dtype=torch.int64, device=values.device)
    if given is not None and given[0].size:
        index = torch.from_numpy(given[0]).to(values.device)
        far = ~(distance[index] < grid.window)
        if bool(far.any()):
            bad = int(index[far][0])
            raise ReplayMismatchError(
                f"exact mode: hint for {name}[{bad}] is not near a rounding boundary here "
                f"(distance {float(distance[bad]):.4f} of a cell, window {grid.window})"
            )
        up[index] = torch.from_numpy(given[1]).to(up.device)
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
    given = None if hints is None else decode_entries(hints, [t.tensor.numel() for t in targets])
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
    if elements.numel() and int(elements.max()) > MAX_HINT_ELEMENT:
        raise ValueError("hint outside the encodable range")
    e = elements.cpu().numpy().astype(np.uint64)  # copy point on an accelerator: the few hinted positions
    return (np.uint64(ordinal) << np.uint64(ENTRY_ORDINAL_SHIFT)) | (e << np.uint64(1)) | up.cpu().numpy().astype(np.uint64)

