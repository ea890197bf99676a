"""Calibrate bounded mode's bound: record honest runs with 2 torch threads, replay every segment with 1,
and print each segment's distance (docs/EXACT.md, "Bounded mode: calibration").

    PYTHONPATH=src python benchmarks/calibrate_bound.py [--seeds 0 1 2 3] [--steps 560] [--interval 40]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from machine_info import describe, machine

import trainwitness.verifier.verify as verify_module
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.verifier import VerifyOptions, verify_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="trainwitness.workloads.digits:digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=560)
    parser.add_argument("--interval", type=int, default=40)
    args = parser.parse_args()
    verify_module.BOUND = math.inf  # measure, do not judge
    distances: list[float] = []
    worst: list[float] = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            generate_keypair(root / "k.key", root / "k.pub")
            overrides = {"seed": seed, "total_steps": args.steps, "checkpoint_interval": args.interval}
            record_run(args.spec, overrides, root / "store", root / "w.safetensors", torch_threads=2)
            (root / "a.json").write_bytes(attest_store(root / "store", root / "w.safetensors", load_private_key(root / "k.key")))
            report = verify_run(root / "a.json", root / "store", root / "w.safetensors", root / "k.pub",
                                VerifyOptions(segments=None, threads=1, bounded=True))
            if not report.accepted:
                raise SystemExit(report.to_text())
            distances += [s.distance.overall for s in report.segments if s.distance is not None]
            worst += [s.distance.worst for s in report.segments if s.distance is not None]
    print(json.dumps({
        "machine": machine(),
        "machine_line": describe(machine()),
        "spec": args.spec,
        "segments": len(distances),
        "overall_max": max(distances),
        "overall_median": sorted(distances)[len(distances) // 2],
        "per_tensor_max": max(worst),
        "distances": distances,
    }, indent=1))


if __name__ == "__main__":
    main()
