"""Storage: bytes per checkpoint and per step for each setting, as a ratio to the raw fp32 state.

One training run is captured at every multiple of 10 steps; for k = 10 and k = 100 the checkpoints
of that interval are encoded every way: ``none`` (safetensors), ``zstd`` (safetensors + zstd, the
default), ``zstd+shuffle`` (a keyframe of the delta format: byte planes + zstd) and
``zstd+delta`` (XOR against the previous checkpoint + byte planes + zstd). The delta figure per
checkpoint is amortised over a keyframe every F checkpoints: (keyframe + (F - 1) deltas) / F.

Exact mode (docs/EXACT.md) is measured the same way on checkpoints of a run recorded with
``record_run(..., exact=DEFAULT_EXACT)``: its state is rounded to a 12-bit grid after every step, so the
low mantissa bits of every rounded value are zero. It also stores every step's hints
(``hints.jsonl``), reported per step beside the checkpoints.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import zstandard
from recording import start_run

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.hints import DEFAULT_EXACT, HINTS_FILE
from trainwitness.commit.store import read_index
from trainwitness.prover.train import record_run
from trainwitness.run.loop import snapshot
from trainwitness.tensors.checkpoint import encode_checkpoint
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.delta import encode_delta
from trainwitness.tensors.state import FlatState


def capture_every(entry_point: str, overrides: Mapping[str, JSONValue], every: int, total: int) -> dict[int, FlatState]:
    run = start_run(entry_point, overrides)
    states = {0: snapshot(run.capture())}
    for first in range(0, total, every):
        run.run(first, first + every, lambda *_: None)
        states[first + every] = snapshot(run.capture())
    return states


def capture_exact(entry_point: str, overrides: Mapping[str, JSONValue], every: int, total: int) -> tuple[dict[int, FlatState], dict[str, Any]]:
    """Checkpoints every ``every`` steps of a run recorded in exact mode, and its hints' bytes per step."""
    with tempfile.TemporaryDirectory(prefix="tw-bench-exact-") as tmp:
        store = Path(tmp) / "store"
        overrides = {**overrides, "total_steps": total, "checkpoint_interval": every}
        record_run(entry_point, overrides, store, Path(tmp) / "weights.safetensors", exact=DEFAULT_EXACT)
        steps = [c.step for c in read_index(store).checkpoints]
        states = {step: read_checkpoint(store, steps, i)[0] for i, step in enumerate(steps)}
        hints = (store / HINTS_FILE).read_bytes()
    hints_info = {
        "steps": total,
        "hints_bytes_per_step": len(hints) / total,
        "grid": DEFAULT_EXACT.to_json(),
    }
    return states, hints_info


def _raw_fp32_bytes(flat: FlatState) -> int:
    """The state's bytes with every tensor held as it is (fp32 for these workloads' floats)."""
    return sum(t.numel() * t.element_size() for t in flat.tensors.values())


def _timed(produce: Callable[[], bytes]) -> tuple[int, float]:
    began = time.perf_counter()
    size = len(produce())
    return size, time.perf_counter() - began


def _row(k: int, setting: str, sizes_times: Sequence[tuple[int, float]], raw: float, size: float | None = None) -> dict[str, Any]:
    mean = statistics.mean(s for s, _ in sizes_times) if size is None else size
    return {
        "k": k,
        "setting": setting,
        "bytes_per_checkpoint": round(mean),
        "bytes_per_step": round(mean / k),
        "ratio_to_raw_fp32": mean / raw,
        "raw_bytes": round(raw),
        "encode_s": statistics.median(t for _, t in sizes_times),
        "checkpoints_measured": len(sizes_times),
    }


def storage_table(
    states: Mapping[int, FlatState], intervals: Sequence[int], keyframe_every: int, level: int = 3, label: str = ""
) -> list[dict[str, Any]]:
    """Rows per interval and setting; ``label`` prefixes each setting (``"exact: "`` for exact mode)."""
    rows: list[dict[str, Any]] = []
    for k in intervals:
        # From checkpoint k on: at step 0 the optimizer has no moments yet (a different state layout).
        chain = [states[s] for s in sorted(s for s in states if s % k == 0 and s > 0)]
        if len(chain) < 2:
            continue
        raw = statistics.mean(_raw_fp32_bytes(f) for f in chain)
        plain = [_timed(partial(encode_checkpoint, f, None)) for f in chain]
        zstd = [_timed(partial(encode_checkpoint, f, level)) for f in chain]
        keyframes = [_timed(partial(encode_delta, f, None, None, level)) for f in chain]
        deltas = [_timed(partial(encode_delta, chain[i], chain[i - 1], i - 1, level)) for i in range(1, len(chain))]
        keyframe = statistics.mean(s for s, _ in keyframes)
        delta = statistics.mean(s for s, _ in deltas)
        amortised = (keyframe + (keyframe_every - 1) * delta) / keyframe_every
        rows.append(_row(k, label + "none", plain, raw))
        rows.append(_row(k, label + "zstd", zstd, raw))
        rows.append(_row(k, label + "zstd+shuffle (a keyframe)", keyframes, raw))
        rows.append(_row(k, label + "zstd+delta (a delta file)", deltas, raw))
        rows.append(_row(k, label + f"zstd+delta, keyframe every {keyframe_every}", deltas, raw, size=amortised))
    return rows


def byte_plane_profile(states: Mapping[int, FlatState], k: int, level: int = 3, label: str = "") -> list[dict[str, Any]]:
    """Why deltas compress as they do: zstd ratio of each byte plane of the fp32 XOR, per tensor group,
    and the fraction of the group's values that are exactly zero.

    Plane 0 is the lowest mantissa byte, plane 3 holds the sign and seven exponent bits.
    """
    steps = sorted(s for s in states if s % k == 0 and s > 0)
    if len(steps) < 2:
        return []
    before, after = states[steps[-2]], states[steps[-1]]
    totals: dict[str, list[int]] = {}
    for name, tensor in after.tensors.items():
        previous = before.tensors.get(name)
        if tensor.dtype != torch.float32 or previous is None or previous.shape != tensor.shape:
            continue
        group = "model" if name.startswith("model/") else name.rsplit("/", 1)[-1]
        xor = torch.bitwise_xor(tensor.contiguous().view(torch.int32), previous.contiguous().view(torch.int32))
        planes = xor.reshape(-1).view(torch.uint8).reshape(-1, 4).t().contiguous()
        sums = totals.setdefault(group, [0, 0, 0, 0, 0, 0])
        for p in range(4):
            sums[p] += len(zstandard.ZstdCompressor(level=level).compress(planes[p].numpy().tobytes()))
        sums[4] += tensor.numel()
        sums[5] += int((tensor == 0).sum())
    return [
        {"k": k, "group": label + g, "elements": s[4], "plane_ratios_low_to_high": [round(s[p] / s[4], 3) for p in range(4)],
         "xor_ratio": round(sum(s[:4]) / (4 * s[4]), 3), "zero_fraction": round(s[5] / s[4], 3)}
        for g, s in sorted(totals.items()) if s[4] > 0
    ]
