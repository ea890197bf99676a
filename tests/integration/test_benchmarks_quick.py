"""The benchmark harness runs end to end at tiny sizes and writes both result files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_quick_mode_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out),
         "--only", "commit_and_hashing", "--only", "storage"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == {}
    assert {"commit_and_hashing", "storage"} <= set(results["sections"])
    assert all(row["state_digest_GBps"] > 0 for row in results["sections"]["commit_and_hashing"]["hashing"])
    markdown = (out / "results.md").read_text()
    assert "## Hashing throughput" in markdown and "## Storage" in markdown
    # low-order-bit figures depend on the CPU and the BLAS build: both are named
    machine = results["machine"]
    assert machine["cpu"] and machine["blas"] and machine["cpu_capability"]
    assert f"BLAS {machine['blas']}" in markdown and machine["cpu"] in markdown


def test_gpu_check_runs_its_cpu_fallback_path(tmp_path: Path) -> None:
    # The script an accelerator machine runs; here (no GPU in CI) the same path runs on the CPU, small.
    numbers = tmp_path / "gpu.json"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--spec", "trainwitness.workloads.digits:digits",
         "--steps", "20", "--interval", "10", "--json", str(numbers)],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify on the CPU in exact mode (2 segments): ACCEPT" in done.stdout
    result = json.loads(numbers.read_text())
    assert result["cpu_verify_accepted"] and result["step_ms_plain"] > 0 and 0 <= result["hint_fraction"] < 1
    if not result["gpu"]:
        assert "CPU fallback" in done.stdout
