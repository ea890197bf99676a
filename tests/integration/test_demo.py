"""``trainwitness demo``: the real workload, trained, attested and verified once; its files left for a user."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from trainwitness.cli import main


@dataclass(frozen=True)
class DemoResult:
    out: Path
    status: int
    stdout: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    """The full demo (560 steps), run once for every test in this module: it is the slowest test there is."""
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["demo", "--out", str(out)])
    return DemoResult(out, status, stdout.getvalue())


@pytest.mark.slow
def test_demo_trains_attests_and_verifies(demo: DemoResult) -> None:
    assert demo.status == 0, demo.stdout
    assert "trainwitness verify: ACCEPT" in demo.stdout
    assert "replayed 14 of 14 segments" in demo.stdout


@pytest.mark.slow
def test_demo_leaves_what_a_user_needs_to_verify_by_hand(demo: DemoResult, capsys: pytest.CaptureFixture[str]) -> None:
    files = ("model.safetensors", "attestation.json", "trainwitness.key", "trainwitness.pub", "store/run.json", "store/index.jsonl")
    for name in files:
        assert (demo.out / name).is_file(), name
    assert len(list((demo.out / "store" / "checkpoints").iterdir())) == 15
    args = [
        "verify", str(demo.out / "attestation.json"), "--store", str(demo.out / "store"),
        "--weights", str(demo.out / "model.safetensors"), "--key", str(demo.out / "trainwitness.pub"),
        "--segments", "1", "--seed", "0",
    ]
    assert main(args) == 0
    assert "replayed 2 of 14 segments (the last, always, and 1 drawn from the auditor's seed 0)" in capsys.readouterr().out


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainwitness: error: ") and "is not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
