"""Peak memory of building a dataset manifest: it must stay flat as the data grows (target < 200 MB at 1 GB).

Generates N files of random bytes in a temporary directory (about --gib GiB in all), then builds the
manifest in a fresh child process (so that generation does not count) and reports that process's
peak resident set size, with its baseline after imports, for each requested size.

    PYTHONPATH=src python benchmarks/manifest_memory.py --gib 0.25 1
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

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from trainwitness.manifest import SourceInput, build_manifest
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
summary = build_manifest([SourceInput("bench", Path(sys.argv[1]), license="CC0-1.0")], Path(sys.argv[2]))
print(json.dumps({
    "samples": summary.num_samples, "bytes": summary.total_bytes, "seconds": time.perf_counter() - started,
    "baseline_rss_mib": baseline / 1024, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def _generate(directory: Path, total_bytes: int, file_bytes: int) -> int:
    count = max(1, total_bytes // file_bytes)
    for i in range(count):
        sub = directory / f"{i // 1000:04d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:08d}.bin").write_bytes(os.urandom(file_bytes))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[0.25, 1.0], help="dataset sizes to measure, in GiB")
    parser.add_argument("--file-kib", type=int, default=64, help="size of each generated file (one sample)")
    args = parser.parse_args()
    results = []
    for gib in args.gib:
        with tempfile.TemporaryDirectory(prefix="tw-manifest-bench-") as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            started = time.perf_counter()
            files = _generate(data, int(gib * 1024**3), args.file_kib * 1024)
            generated = time.perf_counter() - started
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, str(data), str(Path(tmp) / "manifest.jsonl")],
                check=True, capture_output=True, text=True,
            )
            result = json.loads(child.stdout)
            result.update({"gib": gib, "files": files, "generate_seconds": round(generated, 1)})
            results.append(result)
            print(
                f"{gib:g} GiB, {files} files of {args.file_kib} KiB: manifest in {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss_mib']:.1f} MiB (baseline after imports {result['baseline_rss_mib']:.1f} MiB)",
                flush=True,
            )
    worst = max(r["peak_rss_mib"] for r in results)
    print(f"worst peak RSS {worst:.1f} MiB: {'within' if worst < 200 else 'OVER'} the 200 MB target")


if __name__ == "__main__":
    main()
