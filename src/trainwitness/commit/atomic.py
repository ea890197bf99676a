"""Writing files so that a crash or a full disk never leaves half of one: the one atomic write.

A file is written to a temporary name beside it, ``.<name>.tmp-<pid>``, fsync'd, renamed over the
final name and the directory fsync'd (POSIX ``rename(2)`` is atomic; the directory fsync makes the
rename itself durable). Any failure removes the temporary file and raises ``OutputError`` naming the
*final* file and the OS error, in one line. A process killed mid-write cannot remove its temporary
file; every temporary name matches ``TEMPORARY_NAME`` so that the next writer can
(``remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from trainwitness.errors import OutputError, TrainwitnessError

__all__ = [
    "TEMPORARY_NAME",
    "atomic_create",
    "atomic_write",
    "atomic_write_with",
    "move_into_place",
    "fsync_dir",
    "os_error_in",
    "output_error",
    "remove_stale_temporaries",
    "temporary_path",
    "writing",
]

# ``.<final name>[.<role>].tmp-<pid>``: hidden, and never a name the store derives for a file of its own.
TEMPORARY_NAME = re.compile(r"^\..+\.tmp-(?P<pid>[0-9]+)$")


def temporary_path(path: Path, role: str = "") -> Path:
    """The temporary name beside ``path`` this process writes it under (``role`` tells apart several)."""
    return path.with_name(f".{path.name}{'.' + role if role else ''}.tmp-{os.getpid()}")


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError that caused ``error``, following ``__cause__``/``__context__`` (zstd re-raises its own)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def output_error(path: Path | str, error: OSError) -> OutputError:
    """One line naming the file and the OS error: ``run/index.jsonl: No space left on device (errno 28)``."""
    why = error.strerror or str(error) or type(error).__name__
    number = f" (errno {error.errno})" if error.errno is not None else ""
    return OutputError(f"{path}: cannot be written: {why}{number}")


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into ``OutputError`` naming it."""
    try:
        yield
    except OSError as e:
        raise output_error(path, e) from e


def atomic_write(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` whole or not at all, durably; raises OutputError (nothing left behind)."""
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_with(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """``atomic_write`` of what ``fill`` writes into the file (in pieces, never held whole in memory).

    Raises ``OutputError`` for any OSError on the way (also one that ``fill``'s own library wrapped,
    e.g. zstd), after removing the temporary file; other exceptions of ``fill`` pass through, also
    after removing it.
    """
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # A library error wrapping an OSError (zstd's "Src size is incorrect" after a failed write)
        # is the OSError; this package's own errors and interrupts pass through as they are.
        cause = None if isinstance(e, (TrainwitnessError, KeyboardInterrupt, SystemExit)) else os_error_in(e)
        if cause is not None:
            raise output_error(path, cause) from e
        raise


def atomic_create(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` (never replacing it) whole or not at all; ``FileExistsError`` if it exists.

    For files that must never be overwritten (a private key): written under a temporary name with
    ``mode``, then hard-linked into place (``link(2)`` fails on an existing name, atomically).
    """
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        fsync_dir(path.parent)
    except FileExistsError:
        raise
    except OSError as e:
        raise output_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def move_into_place(source: Path, path: Path) -> None:
    """Rename a file written whole (under a temporary name, fsync'd) to ``path``, durably."""
    with writing(path):
        os.replace(source, path)
        fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing it now: whoever calls this is between writes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(directory: Path, *, final_name: str | None = None, any_pid: bool = False) -> list[str]:
    """Remove the temporary files a killed writer left in ``directory``; returns their names.

    ``any_pid``: every temporary file is stale (the caller holds the lock that every writer of
    ``directory`` takes); otherwise only those of processes that no longer exist. ``final_name``:
    only the temporaries of that one file. Directories and files of other names are never touched.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    prefix = None if final_name is None else f".{final_name}."
    for name in sorted(names):
        match = TEMPORARY_NAME.match(name)
        if match is None or (prefix is not None and not name.startswith(prefix)):
            continue
        if not any_pid and _pid_alive(int(match["pid"])):
            continue
        try:
            if stat.S_ISDIR(os.lstat(directory / name).st_mode):
                continue
            os.unlink(directory / name)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise output_error(directory / name, e) from e
        removed.append(name)
    return removed
