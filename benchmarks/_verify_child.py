"""Run one verification in a fresh process and print its time and peak memory as JSON (audit benchmark)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (imported before the baseline is taken: the interpreter's own footprint)

from trainwitness.verifier import VerifyOptions, verify_run


def _status_bytes(field: str) -> int:
    """VmHWM / VmRSS of this process from /proc (ru_maxrss would include the parent's peak at fork)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    attestation, store, weights, key, segments, seed = sys.argv[1:7]
    workers = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    baseline = _status_bytes("VmHWM")
    began = time.perf_counter()
    report = verify_run(
        Path(attestation), Path(store), Path(weights), Path(key),
        VerifyOptions(segments=None if segments == "all" else int(segments), seed=int(seed), sandbox="off", workers=workers),
    )
    seconds = time.perf_counter() - began
    print(json.dumps({
        "accepted": report.accepted,
        "workers": workers,
        "seconds": seconds,
        "segments_replayed": len(report.segments),
        "segment_seconds": [s.seconds for s in report.segments],
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "baseline_rss_bytes": baseline,
        "checkpoint_bytes_read": report.checkpoint_bytes_read,
        "failed": [c.detail for c in report.checks if not c.passed],
    }))


if __name__ == "__main__":
    main()
