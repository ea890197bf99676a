"""Run one verification in a fresh process and print its time and peak memory as JSON (audit benchmark)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (imported before the baseline is taken: the interpreter's own footprint)

from trainwitness.verifier import VerifyOptions, verify_run


def main() -> None:
    attestation, store, weights, key, segments, seed = sys.argv[1:7]
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    report = verify_run(
        Path(attestation), Path(store), Path(weights), Path(key),
        VerifyOptions(segments=None if segments == "all" else int(segments), seed=int(seed)),
    )
    seconds = time.perf_counter() - began
    print(json.dumps({
        "accepted": report.accepted,
        "seconds": seconds,
        "segments_replayed": len(report.segments),
        "segment_seconds": [s.seconds for s in report.segments],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": baseline_kb * 1024,
        "checkpoint_bytes_read": report.checkpoint_bytes_read,
        "failed": [c.detail for c in report.checks if not c.passed],
    }))


if __name__ == "__main__":
    main()
