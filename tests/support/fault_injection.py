"""Run the `trainwitness` command with one fault injected: a SIGKILL at a chosen instant, or a full disk.

    python tests/support/fault_injection.py [--kill-at EVENT:GLOB:WHEN[:N]] [--kill-at-event N]
                                    [--full-disk GLOB:BYTES] [--count-events FILE] -- trainwitness arguments...

The program's file system calls are wrapped in this process only (nothing in the package knows):
an *event* is opening a file for writing (``open``), renaming one into place (``replace``, ``link``)
or writing to it (``write``). ``GLOB`` matches the file's base name (``run.json``,
``.manifest.jsonl.staged.tmp-*``); ``WHEN`` is ``before`` or ``after`` the call, or ``half`` for a
write: half of the bytes are written, then the kill (a torn record). ``N`` picks the N-th match
(default 1). The kill is ``SIGKILL`` to this very process: exactly what ``kill -9`` at that instant
leaves, reproducibly. ``--kill-at-event N`` kills before the N-th event of any kind (random points,
chosen by the test from a seed; the manifest's one write per sample is not counted, or nearly every
point would fall there); ``--count-events FILE`` writes the number of events at exit.

``--full-disk GLOB:BYTES``: once BYTES bytes have been written to a file matching GLOB, that write
and every later write to any file fail with ENOSPC, as on a full disk.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import fnmatch
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any


class _Faults:
    def __init__(self, args: argparse.Namespace) -> None:
        self.kill_at: tuple[str, str, str, int] | None = None
        if args.kill_at:
            event, glob, when, *n = args.kill_at.split(":")
            self.kill_at = (event, glob, when, int(n[0]) if n else 1)
        self.kill_at_event: int | None = args.kill_at_event
        self.full_disk: tuple[str, int] | None = None
        if args.full_disk:
            glob, budget = args.full_disk.rsplit(":", 1)
            self.full_disk = (glob, int(budget))
        self.disk_full = False
        self.written: dict[str, int] = {}
        self.matches = 0
        self.events = 0
        self.count_file: str | None = args.count_events

    def event(self, kind: str, path: str, when: str) -> None:
        """Called before and after each event; kills this process where the test asked."""
        if when == "before" and not (kind == "write" and fnmatch.fnmatchcase(os.path.basename(path), "*.samples.tmp-*")):
            self.events += 1  # not the manifest's one write per sample: they would crowd out every other event
            if self.events == self.kill_at_event:
                os.kill(os.getpid(), signal.SIGKILL)
        if self.kill_at is None:
            return
        event, glob, at, n = self.kill_at
        if event != kind or not fnmatch.fnmatchcase(os.path.basename(path), glob):
            return
        if when == "before":
            self.matches += 1  # each matching event counts once
        if self.matches == n and at == when:
            os.kill(os.getpid(), signal.SIGKILL)  # "half" is done by the write itself (half_kill_due)

    def half_kill_due(self, path: str) -> bool:
        return (
            self.kill_at is not None and self.kill_at[0] == "write" and self.kill_at[2] == "half"
            and self.matches == self.kill_at[3] and fnmatch.fnmatchcase(os.path.basename(path), self.kill_at[1])
        )

    def allow(self, path: str, size: int) -> int:
        """How many of ``size`` bytes about to be written to ``path`` fit before the disk is full."""
        if self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.full_disk is None or not fnmatch.fnmatchcase(os.path.basename(path), self.full_disk[0]):
            return size
        done = self.written.get(path, 0)
        room = self.full_disk[1] - done
        if room >= size:
            self.written[path] = done + size
            return size
        self.disk_full = True
        self.written[path] = done + max(room, 0)
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return room


class _File:
    """A file object opened for writing, whose writes pass through ``_Faults``."""

    def __init__(self, inner: Any, path: str, faults: _Faults) -> None:
        self._inner, self._path, self._faults = inner, path, faults

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._faults.event("write", self._path, "before")
        if self._faults.half_kill_due(self._path):
            self._inner.write(view[: len(view) // 2])
            self._inner.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        allowed = self._faults.allow(self._path, len(view))
        if allowed < len(view):
            self._inner.write(view[:allowed])
            self._inner.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written: int = self._inner.write(view)
        self._faults.event("write", self._path, "after")
        return written

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _install(faults: _Faults) -> None:
    real_open, real_os_open, real_write = builtins.open, os.open, os.write
    real_replace, real_link = os.replace, os.link
    fd_paths: dict[int, str] = {}

    def fault_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        writing = any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike))
        if not writing:
            return real_open(file, mode, *args, **kwargs)
        path = os.fspath(file)
        faults.event("open", path, "before")
        inner = real_open(file, mode, *args, **kwargs)
        faults.event("open", path, "after")
        return _File(inner, str(path), faults) if "b" in mode else inner

    def fault_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            return real_os_open(path, flags, *args, **kwargs)
        faults.event("open", os.fspath(path), "before")
        fd = real_os_open(path, flags, *args, **kwargs)
        fd_paths[fd] = os.fspath(path)
        faults.event("open", os.fspath(path), "after")
        return fd

    def fault_write(fd: int, data: Any) -> int:
        path = fd_paths.get(fd)
        if path is None:
            return real_write(fd, data)
        view = memoryview(data).cast("B")
        faults.event("write", path, "before")
        if faults.half_kill_due(path):
            real_write(fd, view[: len(view) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        allowed = faults.allow(path, len(view))
        if allowed == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, view[:allowed])
        faults.event("write", path, "after")
        return written

    def fault_replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        faults.event("replace", os.fspath(target), "before")
        real_replace(source, target, *args, **kwargs)
        faults.event("replace", os.fspath(target), "after")

    def fault_link(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        faults.event("link", os.fspath(target), "before")
        real_link(source, target, *args, **kwargs)
        faults.event("link", os.fspath(target), "after")

    builtins.open = fault_open
    io.open = fault_open  # pathlib's write_bytes and friends
    os.open, os.write, os.replace, os.link = fault_os_open, fault_write, fault_replace, fault_link  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kill-at")
    parser.add_argument("--kill-at-event", type=int)
    parser.add_argument("--full-disk")
    parser.add_argument("--count-events")
    argv = sys.argv[1:]
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    faults = _Faults(args)
    _install(faults)
    from trainwitness.cli import main as trainwitness_main

    try:
        return trainwitness_main(argv[split + 1 :])
    finally:
        if faults.count_file is not None:
            Path(faults.count_file).write_text(str(faults.events))  # the patched open: counts itself, harmless


if __name__ == "__main__":
    sys.exit(main())
