"""The one safe open (commit/safe_open.py): every reader of untrusted bytes goes through it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from trainwitness.commit.safe_open import open_beneath, open_regular, open_untrusted, read_beneath, read_untrusted
from trainwitness.errors import MalformedInputError, MissingInputError


def _fifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("this platform has no FIFOs")
    os.mkfifo(path)
    return path


def _in_thread_with_deadline(call, seconds: float = 10.0) -> BaseException | None:
    """Run ``call`` in a daemon thread; the test fails (rather than hangs) if it blocks."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, "opening a FIFO blocked (no writer will ever come)"
    return outcome[0]


def test_reads_a_regular_file_whole(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    assert read_untrusted(tmp_path / "f", "input f", 5) == b"hello"
    with open_untrusted(tmp_path / "f", "input f", None) as (f, size):
        assert size == 5 and f.read() == b"hello"


def test_fifo_does_not_block_and_is_refused(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "fifo")
    error = _in_thread_with_deadline(lambda: read_untrusted(fifo, f"input {fifo}", 100))
    assert isinstance(error, MalformedInputError)
    assert str(error) == f"input {fifo} is not a regular file (a FIFO)"


def test_fifo_beneath_a_directory_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _fifo(tmp_path / "sub" / "fifo")
    error = _in_thread_with_deadline(lambda: read_beneath(tmp_path, "sub/fifo", "store: sub/fifo", 100))
    assert isinstance(error, MalformedInputError) and "not a regular file" in str(error)


def test_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(MalformedInputError, match=r"^input link cannot be opened safely \(it is a symlink\)$"):
        read_untrusted(tmp_path / "link", "input link", 100)


def test_symlink_is_followed_only_when_the_user_named_the_path(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"weights")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert read_untrusted(tmp_path / "link", "weights file", 100, follow_symlinks=True) == b"weights"
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(MalformedInputError, match="not a regular file"):  # what it leads to is still checked
        read_untrusted(tmp_path / "dirlink", "weights file", 100, follow_symlinks=True)


def test_symlinked_directory_beneath_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"outside the store")
    store = tmp_path / "store"
    store.mkdir()
    (store / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(MalformedInputError, match="it or a directory on its path is a symlink"):
        read_beneath(store, "checkpoints/f", "store: checkpoints/f", 100)


def test_the_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    (tmp_path / "root").symlink_to(tmp_path / "real", target_is_directory=True)
    assert read_beneath(tmp_path / "root", "f", "store: f", 1) == b"x"


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(MalformedInputError, match=r"^input d is not a regular file \(a directory\)$"):
        read_untrusted(tmp_path / "d", "input d", 100)
    with pytest.raises(MalformedInputError, match="is not a regular file"):
        read_beneath(tmp_path, "d", "store: d", 100)


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(MalformedInputError, match=r"^input big is 101 bytes, over the limit of 100$"):
        read_untrusted(tmp_path / "big", "input big", 100)
    with pytest.raises(MalformedInputError, match="over the limit of 100"):
        with open_beneath(tmp_path, "big", "store: big", 100):
            pass
    assert read_untrusted(tmp_path / "big", "input big", 101) == b"x" * 101  # the limit itself is allowed


def test_missing_file_is_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"^input absent does not exist$"):
        read_untrusted(tmp_path / "absent", "input absent", 100)
    with pytest.raises(MissingInputError, match="does not exist"):
        read_beneath(tmp_path, "no/such/file", "store: no/such/file", 100)
    with pytest.raises(MissingInputError, match="does not exist"):
        read_beneath(tmp_path / "no-root", "f", "store: f", 100)


def test_unreadable_file_is_a_missing_input_naming_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    path.write_bytes(b"x")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read any file (root)")
        with pytest.raises(MissingInputError, match=r"^input locked cannot be read \(Permission denied\)$"):
            read_untrusted(path, "input locked", 100)
    finally:
        path.chmod(0o600)


def test_a_file_that_grows_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"abc")
    f, size = open_regular(path, "input growing", 100)
    with f:
        with open(path, "ab") as writer:
            writer.write(b"def")
        from trainwitness.commit import safe_open

        with pytest.raises(MalformedInputError, match="changed while it was read"):
            safe_open._read_whole(f, size, "input growing")


def test_the_descriptor_is_not_inherited(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with open_untrusted(tmp_path / "f", "input f", 1) as (f, _):
        assert not os.get_inheritable(f.fileno())


def test_parent_components_are_not_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a path beneath"):
        read_beneath(tmp_path, "../etc/passwd", "store", 100)
