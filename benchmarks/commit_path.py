"""The commit path of a large model: what one checkpoint costs the training thread and the writer."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from recording import bare_steps, start_run

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.store import atomic_write
from trainwitness.run.loop import TrainingRun, snapshot, weights_of
from trainwitness.tensors.checkpoint import encode_checkpoint
from trainwitness.tensors.delta import encode_delta
from trainwitness.tensors.state import FlatState, digest_tensor_sets


def _seconds(work: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = work()
    return result, time.perf_counter() - began


def commit_costs(entry_point: str, overrides: Mapping[str, JSONValue], steps: int = 3) -> tuple[dict[str, Any], TrainingRun, FlatState]:
    """Step time, and per checkpoint: the trainer's snapshot copy, then the writer's digest, encode, write."""
    run = start_run(entry_point, overrides)
    bare_steps(run, 0, 1)  # the optimizer's moments exist from the first step on
    step_s = bare_steps(run, 1, steps)[0] / steps
    first, snapshot_s = _seconds(lambda: snapshot(run.capture()))
    bare_steps(run, 1 + steps, 1)
    second, _ = _seconds(lambda: snapshot(run.capture()))
    state_bytes = sum(t.numel() * t.element_size() for t in second.tensors.values())
    params = sum(p.numel() for p in run.spec.model.parameters())
    with ThreadPoolExecutor(2) as pool:
        # as the recorder does it: the weights are the state's model tensors, hashed once for both digests
        sets = [("state", second.tensors, second.skeleton), ("weights", weights_of(second), None)]
        _, digest_s = _seconds(lambda: digest_tensor_sets(sets, pool))
    zstd, zstd_s = _seconds(lambda: encode_checkpoint(second, 3))
    delta, delta_s = _seconds(lambda: encode_delta(second, first, 0, 3))
    with tempfile.TemporaryDirectory(prefix="tw-bench-commit-") as tmp:
        _, write_s = _seconds(lambda: atomic_write(Path(tmp) / "c.zst", zstd))
    writer_s = digest_s + zstd_s + write_s
    result = {
        "entry_point": entry_point,
        "parameters": params,
        "state_bytes": state_bytes,
        "step_s": step_s,
        "snapshot_s (training thread)": snapshot_s,
        "snapshot_GBps": state_bytes / snapshot_s / 1e9,
        "digest_s (writer, 2 threads)": digest_s,
        "zstd_encode_s": zstd_s,
        "delta_encode_s": delta_s,
        "write_fsync_s": write_s,
        "writer_s_per_checkpoint (zstd)": writer_s,
        "zstd_ratio": len(zstd) / state_bytes,
        "delta_ratio": len(delta) / state_bytes,
        "min_k_writer_keeps_up": max(1, int(writer_s / step_s) + 1),
        "snapshot_overhead_at_k10": snapshot_s / (10 * step_s),
        "snapshot_overhead_at_k100": snapshot_s / (100 * step_s),
    }
    return result, run, second


