"""The one atomic write: whole or nothing, the failure named once, and no other module writing files itself."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import trainwitness.commit.atomic as atomic
from trainwitness.commit.atomic import (
    atomic_create,
    atomic_write,
    atomic_write_with,
    remove_stale_temporaries,
    temporary_path,
)
from trainwitness.data.manifest import ManifestBuilder
from trainwitness.errors import OutputError
from trainwitness.tensors.tensorfile import safetensors_parts, write_parts

ROOT = Path(__file__).resolve().parents[3]


class _FullDisk:
    """``open`` for the atomic module whose files take ``room`` bytes, then fail with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path: Any, mode: str = "r") -> Any:
        inner = open(path, mode)  # noqa: SIM115 - returned wrapped
        disk = self

        class File:
            def write(self, data: Any) -> int:
                size = memoryview(data).nbytes
                if size > disk.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= size
                return inner.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                inner.close()

        return File()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_and_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "attestation.json"
    atomic_write(target, b"the good one")
    monkeypatch.setattr(atomic, "open", _FullDisk(room=3), raising=False)
    with pytest.raises(OutputError) as raised:
        atomic_write(target, b"a longer new one")
    assert str(raised.value) == f"{target}: cannot be written: No space left on device (errno 28)"
    assert target.read_bytes() == b"the good one"
    assert sorted(os.listdir(tmp_path)) == ["attestation.json"]


def test_a_full_disk_inside_zstd_is_reported_as_the_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # zstd's own error ("Src size is incorrect") once masked the cause, 39 lines of traceback long.
    monkeypatch.setattr(atomic, "open", _FullDisk(room=200), raising=False)
    parts = safetensors_parts({"w": torch.randn(10_000)}, {"k": "v"})
    with pytest.raises(OutputError, match=r"c\.zst: cannot be written: No space left on device \(errno 28\)$"):
        write_parts(tmp_path / "c.zst", parts, 3)
    assert os.listdir(tmp_path) == []


def test_errors_of_fill_that_are_not_os_errors_pass_through_and_leave_nothing(tmp_path: Path) -> None:
    def fill(f: Any) -> None:
        f.write(b"half")
        raise KeyError("not an I/O problem")

    with pytest.raises(KeyError):
        atomic_write_with(tmp_path / "f", fill)
    assert os.listdir(tmp_path) == []


def test_atomic_create_never_replaces_and_keeps_its_mode(tmp_path: Path) -> None:
    atomic_create(tmp_path / "k.key", b"secret", 0o600)
    with pytest.raises(FileExistsError):
        atomic_create(tmp_path / "k.key", b"another")
    assert (tmp_path / "k.key").read_bytes() == b"secret"
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["k.key"]


def test_the_manifest_builder_writes_through_the_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = atomic.fsync_dir
    monkeypatch.setattr(atomic, "fsync_dir", lambda path: (synced.append(path), real(path)))
    builder = ManifestBuilder(tmp_path / "manifest.jsonl")
    builder.add_source(name="s", uri=None, archive_sha256=None, license="MIT", description="", format="tensors",
                       compression=None, samples=iter([]))
    builder.finish()
    assert synced == [tmp_path]  # the rename is made durable, as for every other file
    assert os.listdir(tmp_path) == ["manifest.jsonl"]


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    names = [f".model.safetensors.tmp-{dead_pid}", f".model.safetensors.tmp-{os.getppid()}", f".other.tmp-{dead_pid}",
             "model.safetensors", ".model.safetensors.tmp-x", "model.safetensors.tmp-1"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temporaries(tmp_path, final_name="model.safetensors") == [f".model.safetensors.tmp-{dead_pid}"]
    assert remove_stale_temporaries(tmp_path, any_pid=True) == sorted(
        [f".model.safetensors.tmp-{os.getppid()}", f".other.tmp-{dead_pid}"]
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["model.safetensors", ".model.safetensors.tmp-x", "model.safetensors.tmp-1"])
    assert atomic.TEMPORARY_NAME.match(temporary_path(tmp_path / "run.json").name)
    assert atomic.TEMPORARY_NAME.match(temporary_path(temporary_path(tmp_path / "m", "staged"), "samples").name)


def test_no_module_writes_a_file_without_the_atomic_write() -> None:
    """One implementation: renames, whole-file writes and fresh-file opens live in commit/atomic.py only.

    Appends (the index and hints logs, a temporary sample list) and the lock file are not whole-file writes.
    """
    allowed_appends = {"prover/recorder.py", "src/trainwitness/commit/store.py", "src/trainwitness/data/manifest.py"}
    forbidden = re.compile(r"os\.replace\(|os\.rename\(|\.write_bytes\(|\.write_text\(|open\([^)]*[\"']wb[\"']")
    offenders = []
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "prover").rglob("*.py"), *(ROOT / "verifier").rglob("*.py")]):
        relative = str(path.relative_to(ROOT))
        if relative == "src/trainwitness/commit/atomic.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if forbidden.search(line) and not (relative in allowed_appends and "tmp" in line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
