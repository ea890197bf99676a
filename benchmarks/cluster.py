"""Replay throughput on a Dask cluster: the same draw replayed as 2 tasks on 1 and on 2 engine workers.

    PYTHONPATH=src .venv/bin/python benchmarks/cluster.py [--quick] [--json out.json]

Records one run (the text model, or digits with --quick), starts a Dask scheduler and W workers on
loopback (one thread each, as ``dask worker`` processes), and verifies every segment with
``verify --cluster ADDRESS --workers 2`` (two shares, two tasks) for W = 1 and W = 2, then with
local ``--workers 2`` for reference. Every audit replays the same segments (the draw is all of
them). Prints a Markdown table (docs/DISTRIBUTED.md). Needs the ``cluster`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if (HERE.parent / "src" / "trainwitness").is_dir():
    sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from audit import record_signed  # noqa: E402

from trainwitness.verifier import VerifyOptions, verify_run  # noqa: E402


@contextlib.contextmanager
def cluster(tmp: Path, workers: int) -> Iterator[str]:
    """A scheduler and ``workers`` one-thread workers on 127.0.0.1, stopped on exit."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        processes.append(subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))

    scheduler_file = tmp / f"scheduler-{workers}.json"
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file))
        while not scheduler_file.exists():
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(workers):
            start("worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard")
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def audit(run: dict[str, Path], **options: Any) -> dict[str, Any]:
    began = time.perf_counter()
    report = verify_run(run["attestation"], run["store"], run["weights"], run["pub"], VerifyOptions(segments=None, **options))
    seconds = time.perf_counter() - began
    if not report.accepted:
        raise SystemExit(f"the honest run was not accepted: {report.to_text()}")
    return {
        "segments": len(report.segments), "verify_s": seconds, "segments_per_s": len(report.segments) / seconds,
        "replay_s": sum(s.seconds for s in report.segments),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="digits, 6 segments (a smoke test)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        entry, overrides = "trainwitness.workloads.digits:digits", {"total_steps": 120, "checkpoint_interval": 20}
    else:
        entry, overrides = "trainwitness.workloads.lm:lm_fast", {"total_steps": 120, "checkpoint_interval": 10}
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainwitness-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        run = record_signed(tmp / "run", entry, overrides)
        for workers in (1, 2):
            with cluster(tmp, workers) as address:
                rows.append({"how": f"Dask, {workers} worker{'s' if workers > 1 else ''}", **audit(run, workers=2, cluster=address)})
        rows.append({"how": "local --workers 2 (reference)", **audit(run, workers=2)})
    print(f"workload `{entry}` {overrides}, every segment, 2 shares (tasks)\n")
    print("| replayed on | segments | verify s | segments / s | replay s (sum over segments) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['how']} | {r['segments']} | {r['verify_s']:.1f} | {r['segments_per_s']:.2f} | {r['replay_s']:.1f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"workload": entry, "overrides": overrides, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
