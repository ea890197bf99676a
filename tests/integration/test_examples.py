"""Every program in examples/ runs as a user runs it (``python examples/NAME/train.py --out DIR``) and verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwitness.cli import main

ROOT = Path(__file__).resolve().parents[2]
# examples/ddp runs under torchrun (tests/integration/test_distributed.py); every other example is one process
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/train.py") if p.parent.name != "ddp")
OPTIONAL = {"lightning_trainer": "lightning", "hf_trainer": "transformers"}  # example -> the extra's module


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_trains_signs_and_verifies(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH="")  # the script finds its own package, as it does for a user
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "train.py"), "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for produced in ("attestation.json", "store/run.json", "model.safetensors", "trainwitness.pub"):
        assert (out / produced).is_file(), produced
    assert "loss" in done.stderr  # the progress line
    status = main([
        "verify", str(out / "attestation.json"), "--store", str(out / "store"), "--weights", str(out / "model.safetensors"),
        "--key", str(out / "trainwitness.pub"), "--code", str(ROOT / "examples" / name), "--all",
    ])
    report = capsys.readouterr().out
    assert status == 0, report
    assert "trainwitness verify: ACCEPT" in report
