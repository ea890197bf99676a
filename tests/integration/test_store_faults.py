"""A real `train` process killed at every stage of the store's life, or out of disk, resumes to the same proof.

Each fault is injected into the process by ``tests/support/fault_injection.py`` (a SIGKILL at a named file
system event, or ENOSPC once a file has taken N bytes), so every kill point is hit exactly, on every
machine. The resumed store must hold byte for byte what an uninterrupted run of the same command
wrote (the shared ``digits_run``), no temporary file may be left anywhere, and the proof must verify.
"""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import trainwitness
from trainwitness.cli import main
from trainwitness.commit.atomic import TEMPORARY_NAME
from trainwitness.commit.store import INDEX_FILE, LOCK_FILE, MANIFEST_FILE, RUN_FILE, store_lock, store_lock_holder

from ..support.forgery import resign
from ..support.runs import DIGITS, SHORT_DIGITS, RecordedRun

FAULTS = Path(__file__).parents[1] / "support" / "fault_injection.py"
TIMEOUT_S = 300
SIGKILLED = -signal.SIGKILL


def _settings(overrides: dict[str, object]) -> list[str]:
    return [f"--set={name}={value}" for name, value in overrides.items()]


def _train_args(root: Path, overrides: dict[str, object] = SHORT_DIGITS) -> list[str]:
    return ["train", DIGITS, "--store", str(root / "store"), "--weights", str(root / "model.safetensors"), *_settings(overrides)]


def _run_with_fault(root: Path, *fault: str, args: list[str] | None = None, limit_file_size: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `trainwitness train` in a fresh process with one fault; its TMPDIR is private, to be checked."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(Path(trainwitness.__file__).parents[1]), TMPDIR=str(root / "tmp"))

    def limit() -> None:
        if limit_file_size is not None:  # RLIMIT_FSIZE: writes past it fail with EFBIG (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    command = [sys.executable, str(FAULTS), *fault, "--", *(args if args is not None else _train_args(root))]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=root, preexec_fn=limit)


def _error_line(stderr: str) -> str:
    """The one error line, which ends the output; apart from it only the progress line may appear."""
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith("trainwitness: error: "), stderr
    assert all(re.fullmatch(r"steps?:? \d+/\d+( .*)?", line) for line in lines[:-1]), stderr  # progress only, no traceback
    return lines[-1]


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMPORARY_NAME.match(p.name))


def _assert_same_as_uninterrupted(root: Path, honest: RecordedRun) -> None:
    store = root / "store"
    assert _temporaries(root) == [], "temporary files left behind"
    assert sorted(os.listdir(root / "tmp")) == [], "files left in TMPDIR"
    for name in (RUN_FILE, MANIFEST_FILE, INDEX_FILE):
        assert (store / name).read_bytes() == (honest.store / name).read_bytes(), name
    assert sorted(os.listdir(store / "checkpoints")) == sorted(os.listdir(honest.store / "checkpoints"))
    assert (root / "model.safetensors").read_bytes() == honest.weights.read_bytes()
    assert sorted(os.listdir(store)) == sorted(os.listdir(honest.store))


def _resume(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command again, in this process (the code path is the CLI's; a process start saved)."""
    assert main(_train_args(root)) == 0, capsys.readouterr().err
    capsys.readouterr()


# What the store holds at each kill point: (kill point, present, absent). Together they are every
# stage of creating a store, then the first checkpoint, a torn index record, a checkpoint whose
# record is not written yet, and the final weights.
STAGES = [
    ("open:train.lock:after", [LOCK_FILE], [RUN_FILE, MANIFEST_FILE, INDEX_FILE]),
    ("open:*.samples.tmp-*:after", [LOCK_FILE], [RUN_FILE, MANIFEST_FILE, INDEX_FILE]),
    ("replace:.manifest.jsonl.staged.tmp-*:before", [LOCK_FILE], [RUN_FILE, MANIFEST_FILE, INDEX_FILE]),
    ("replace:run.json:before", [LOCK_FILE], [RUN_FILE, MANIFEST_FILE, INDEX_FILE]),
    ("replace:run.json:after", [RUN_FILE], [MANIFEST_FILE, INDEX_FILE]),
    ("replace:manifest.jsonl:before", [RUN_FILE], [MANIFEST_FILE, INDEX_FILE]),
    ("replace:manifest.jsonl:after", [RUN_FILE, MANIFEST_FILE], [INDEX_FILE]),
    ("replace:index.jsonl:after", [RUN_FILE, MANIFEST_FILE, INDEX_FILE], ["checkpoints"]),
    ("replace:0000000000.safetensors.zst:before", [INDEX_FILE, "checkpoints"], ["checkpoints/0000000000.safetensors.zst"]),
    ("write:index.jsonl:half:2", ["checkpoints/0000000020.safetensors.zst"], []),
    ("replace:0000000060.safetensors.zst:after", ["checkpoints/0000000060.safetensors.zst"], []),
    ("replace:model.safetensors:before", ["checkpoints/0000000120.safetensors.zst"], ["../model.safetensors"]),
]


@pytest.mark.parametrize(("kill_at", "present", "absent"), STAGES, ids=[s[0] for s in STAGES])
def test_train_killed_at_each_stage_resumes_to_the_uninterrupted_runs_bytes(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_at: str, present: list[str], absent: list[str]
) -> None:
    killed = _run_with_fault(tmp_path, "--kill-at", kill_at)
    assert killed.returncode == SIGKILLED, killed.stderr
    store = tmp_path / "store"
    assert all((store / p).exists() for p in present) and not any((store / a).exists() for a in absent), sorted(os.listdir(store))

    _resume(tmp_path, capsys)
    _assert_same_as_uninterrupted(tmp_path, digits_run)


def test_kills_during_resume_and_signing_resume_too_and_the_proof_verifies(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signing = ["--key", str(digits_run.private_key), "--attestation", str(tmp_path / "attestation.json")]
    args = [*_train_args(tmp_path), *signing]
    # killed after a checkpoint file, then while resuming (cutting the index back), then while signing
    for kill_at in ("replace:0000000080.safetensors.zst:after", "replace:index.jsonl:before", "replace:attestation.json:before"):
        killed = _run_with_fault(tmp_path, "--kill-at", kill_at, args=args)
        assert killed.returncode == SIGKILLED, (kill_at, killed.stderr)
    assert not (tmp_path / "attestation.json").exists()
    assert main(args) == 0
    _assert_same_as_uninterrupted(tmp_path, digits_run)
    resumed = RecordedRun(tmp_path, tmp_path / "store", tmp_path / "model.safetensors", tmp_path / "attestation.json",
                          digits_run.private_key, digits_run.public_key)
    assert main(resumed.verify_args("--all")) == 0
    assert "ACCEPT" in capsys.readouterr().out


def _random_kills(digits_run: RecordedRun, root: Path, capsys: pytest.CaptureFixture[str], seed: int, kills: int) -> None:
    counted = _run_with_fault(root / "count", "--count-events", str(root / "events"))
    assert counted.returncode == 0, counted.stderr
    events = int((root / "events").read_text())
    draw = random.Random(seed)
    for _ in range(kills):  # each resume is itself killed at a random point, when it gets that far
        point = draw.randint(1, events)
        run = _run_with_fault(root / "run", "--kill-at-event", str(point))
        assert run.returncode in (SIGKILLED, 0), (point, run.stderr)
    _resume(root / "run", capsys)
    _assert_same_as_uninterrupted(root / "run", digits_run)
    resign(RecordedRun.at(root / "run", keys=digits_run.root))
    assert main(RecordedRun.at(root / "run", keys=digits_run.root).verify_args("--all")) == 0
    assert "ACCEPT" in capsys.readouterr().out


def test_train_killed_at_random_points_resumes_and_verifies(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _random_kills(digits_run, tmp_path, capsys, seed=12, kills=3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_train_killed_at_many_random_points_resumes_and_verifies(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    _random_kills(digits_run, tmp_path, capsys, seed=seed, kills=6)


# Disk full while writing each kind of file: (the file that fills the disk, after how many bytes, the file named).
FULL_DISK = [
    ("*.samples.tmp-*", 5000, "store/manifest.jsonl"),
    (".run.json.tmp-*", 10, "store/run.json"),
    (".0000000040.safetensors.zst.tmp-*", 1000, "store/checkpoints/0000000040.safetensors.zst"),  # inside the zstd stream
    ("index.jsonl", 20_000, "store/index.jsonl"),
    (".model.safetensors.tmp-*", 1000, "model.safetensors"),
]


@pytest.mark.parametrize(("full", "after", "named"), FULL_DISK, ids=[f[2] for f in FULL_DISK])
def test_disk_full_ends_train_with_one_line_naming_the_file_and_resumes_once_space_is_back(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], full: str, after: int, named: str
) -> None:
    failed = _run_with_fault(tmp_path, "--full-disk", f"{full}:{after}")
    assert failed.returncode == 2, failed.stderr
    assert _error_line(failed.stderr) == f"trainwitness: error: {tmp_path / named}: cannot be written: No space left on device (errno 28)"
    assert _temporaries(tmp_path) == []
    assert not (tmp_path / "model.safetensors").exists() or named != "model.safetensors"

    _resume(tmp_path, capsys)
    _assert_same_as_uninterrupted(tmp_path, digits_run)


def test_file_size_limit_efbig_in_a_real_process_ends_train_with_one_line_and_the_store_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ulimit -f: the kernel refuses to grow any file past the limit (EFBIG). The manifest (254 KB)
    # fits under it; the first checkpoint of this wider model (706 KB raw, about 640 KB as zstd) does not.
    overrides = {"hidden": 384, "total_steps": 20, "checkpoint_interval": 10}
    failed = _run_with_fault(tmp_path, args=_train_args(tmp_path, overrides), limit_file_size=300_000)
    assert failed.returncode == 2, failed.stderr
    assert _error_line(failed.stderr) == (
        f"trainwitness: error: {tmp_path}/store/checkpoints/0000000000.safetensors.zst: cannot be written: File too large (errno 27)"
    )
    assert _temporaries(tmp_path) == []

    assert main(_train_args(tmp_path, overrides)) == 0
    assert "resumed" not in capsys.readouterr().out  # nothing was committed: it started afresh, in the same store
    key = tmp_path / "k.key"
    assert main(["keygen", "--out", str(tmp_path), "--name", "k"]) == 0
    assert main(["attest", "--store", str(tmp_path / "store"), "--weights", str(tmp_path / "model.safetensors"),
                 "--key", str(key), "--out", str(tmp_path / "attestation.json")]) == 0
    run = RecordedRun.at(tmp_path)
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0
    assert _temporaries(tmp_path) == []


def test_a_second_train_on_a_locked_store_exits_2_naming_the_holder_and_a_crash_releases_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from trainwitness.commit.store import store_lock\n"
         "with store_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)", str(store)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(Path(trainwitness.__file__).parents[1])),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert store_lock_holder(store) == f"pid {holder.pid} on host {socket.gethostname()}"
        assert main(_train_args(tmp_path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is being written by another `trainwitness train` (pid {holder.pid} on host" in err, err
        assert sorted(os.listdir(store)) == [LOCK_FILE]  # the refused train wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
        holder.wait()
    assert store_lock_holder(store) is None
    with store_lock(store):
        assert (store / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on host ")
    assert (store / LOCK_FILE).read_text() == ""  # released on exit, naming nobody
