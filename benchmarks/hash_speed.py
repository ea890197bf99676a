"""State-digest throughput against raw hashlib SHA-256 over the very same bytes, 1 and 2 cores.

The baseline for w workers is the best hashlib can do on those bytes with w threads: each thread
runs one plain SHA-256 over its share of the tensors (hashlib releases the GIL), no chunking, no
headers. The state digest must chunk, frame and combine; the ratio says what that costs.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from trainwitness.tensors.state import FlatState, _tensor_bytes, state_digest


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _raw_sha256(views: list[memoryview], workers: int) -> None:
    if workers == 1:
        for view in views:
            hashlib.sha256(view).digest()
        return
    shares: list[list[memoryview]] = [[] for _ in range(workers)]
    sizes = [0] * workers
    for view in sorted(views, key=len, reverse=True):  # greedy balance of whole tensors
        i = sizes.index(min(sizes))
        shares[i].append(view)
        sizes[i] += len(view)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda share: [hashlib.sha256(v).digest() for v in share], shares))


def hash_throughput(label: str, flat: FlatState, workers: tuple[int, ...] = (1, 2), repeats: int = 3) -> list[dict[str, Any]]:
    views = [_tensor_bytes(t) for t in flat.tensors.values()]
    total = sum(len(v) for v in views)
    rows = []
    for w in workers:
        raw_s = _median_seconds(lambda w=w: _raw_sha256(views, w), repeats)  # type: ignore[misc]
        if w == 1:
            digest_s = _median_seconds(lambda: state_digest(flat), repeats)
        else:
            with ThreadPoolExecutor(w) as pool:
                digest_s = _median_seconds(lambda pool=pool: state_digest(flat, pool), repeats)  # type: ignore[misc]
        rows.append({
            "state": label, "tensors": len(views), "bytes": total, "workers": w,
            "hashlib_GBps": total / raw_s / 1e9, "state_digest_GBps": total / digest_s / 1e9,
            "ratio_to_hashlib": raw_s / digest_s,
        })
    return rows


def one_huge_tensor(megabytes: int) -> FlatState:
    t = torch.empty(megabytes * (1 << 20) // 4, dtype=torch.float32).uniform_()
    return FlatState({"huge": t}, {"huge": {"$tensor": "huge"}})
