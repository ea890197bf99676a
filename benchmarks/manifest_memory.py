"""Peak memory of building a dataset manifest: it must stay flat as the data grows (target < 200 MB at 1 GB).

Generates random samples in a temporary directory (about --gib GiB in all: files, one JSON-lines file or
one .npy array), then builds the
manifest in a fresh child process (so that generation does not count) and reports that process's
peak resident set size, with its baseline after imports, for each requested size.

    PYTHONPATH=src python benchmarks/manifest_memory.py --gib 0.25 1 [--kind files|jsonl|npy] [--sample-kib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import describe, machine

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from trainwitness.data.manifest import SourceInput, build_manifest
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
summary = build_manifest([SourceInput("bench", Path(sys.argv[1]), license="CC0-1.0")], Path(sys.argv[2]))
print(json.dumps({
    "samples": summary.num_samples, "bytes": summary.total_bytes, "seconds": time.perf_counter() - started,
    "baseline_rss_mib": baseline / 1024, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def _generate(directory: Path, kind: str, total_bytes: int, sample_bytes: int) -> tuple[Path, int]:
    """The source to build a manifest of, and its number of samples."""
    count = max(1, total_bytes // sample_bytes)
    if kind == "files":
        for i in range(count):
            sub = directory / f"{i // 1000:04d}"
            sub.mkdir(exist_ok=True)
            (sub / f"{i:08d}.bin").write_bytes(os.urandom(sample_bytes))
        return directory, count
    if kind == "jsonl":
        path = directory / "data.jsonl"
        with open(path, "wb") as f:
            for i in range(count):
                f.write(b'{"id":%d,"text":"%s"}\n' % (i, os.urandom(sample_bytes // 2 - 16).hex().encode()))
        return path, count
    path = directory / "data.npy"
    header = {"descr": "|u1", "fortran_order": False, "shape": (count, sample_bytes)}
    with open(path, "wb") as f:
        import numpy as np

        np.lib.format.write_array_header_1_0(f, header)
        for _ in range(count):
            f.write(os.urandom(sample_bytes))
    return path, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[0.25, 1.0], help="dataset sizes to measure, in GiB")
    parser.add_argument("--kind", choices=["files", "jsonl", "npy"], default="files", help="a directory of files, a JSON-lines file or a .npy array")
    parser.add_argument("--sample-kib", type=int, default=64, help="size of each generated sample")
    args = parser.parse_args()
    results = []
    print(f"on {describe(machine())}", flush=True)
    for gib in args.gib:
        with tempfile.TemporaryDirectory(prefix="tw-manifest-bench-") as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            started = time.perf_counter()
            source, samples = _generate(data, args.kind, int(gib * 1024**3), args.sample_kib * 1024)
            generated = time.perf_counter() - started
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, str(source), str(Path(tmp) / "manifest.jsonl")],
                check=True, capture_output=True, text=True,
            )
            result = json.loads(child.stdout)
            result.update({"gib": gib, "kind": args.kind, "generate_seconds": round(generated, 1)})
            results.append(result)
            print(
                f"{gib:g} GiB, {samples} samples of {args.sample_kib} KiB ({args.kind}): manifest in {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss_mib']:.1f} MiB (baseline after imports {result['baseline_rss_mib']:.1f} MiB)",
                flush=True,
            )
    worst = max(r["peak_rss_mib"] for r in results)
    print(f"worst peak RSS {worst:.1f} MiB: {'within' if worst < 200 else 'OVER'} the 200 MB target")


if __name__ == "__main__":
    main()
