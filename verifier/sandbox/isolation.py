"""Which confinement the replay worker runs under: the ``--sandbox`` modes, their limits, and the probe.

Isolation, strongest available first, each checked at run time (nothing needs root):

* ``unshare -rnm`` (user, network and mount namespaces): no network (only a down loopback), and every
  mount re-mounted read-only except a fresh scratch directory, which is the worker's cwd and TMPDIR;
  the code itself then runs in a nested user namespace without capabilities, unable to undo that;
* resource limits (``setrlimit``): address space, CPU seconds, size of any file written, open files;
* a wall-clock timeout, after which the worker's whole process group is killed (``processes.py``).

``--sandbox auto`` uses what is available and says what was in force; ``required`` refuses to run the
code without network and filesystem isolation; ``off`` gives up both. For in-process replay
(``--sandbox off``, one worker) ``address_space_budget`` caps the verifier's own address space.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from trainwitness.errors import MalformedInputError

__all__ = ["SANDBOX_MODES", "SandboxLimits", "Isolation", "choose_isolation", "confined", "apply_limits", "address_space_budget"]

SANDBOX_MODES = ("auto", "off", "required")


@dataclass(frozen=True)
class SandboxLimits:
    """A worker's resource limits: address space and written-file size in bytes, CPU and wall time in seconds."""

    memory_bytes: int = 32 * 1024**3
    cpu_seconds: int = 3600
    wall_seconds: int = 3600
    file_bytes: int = 4 * 1024**3
    open_files: int = 1024


@dataclass(frozen=True)
class Isolation:
    """What confines the replay: ``mode`` as asked (``SANDBOX_MODES``), and what is in force."""

    mode: str
    process: bool  # a separate worker process at all
    namespaces: bool  # no network, read-only filesystem except the scratch directory
    limits: SandboxLimits
    loopback: bool = False  # the worker's own network namespace gets a loopback (a W-rank replay's gloo group)

    def describe(self) -> str:
        if not self.process:
            return "sandbox off: the training code ran in the verifier's own process, with its network and files"
        if self.mode == "off":
            return (
                "sandbox off: the training code ran in worker processes with the verifier's network and files, "
                f"under no limits but a {self.limits.wall_seconds} s wall-clock timeout"
            )
        confinement = (
            "no network (own network namespace), filesystem read-only except a scratch directory (own mount namespace)"
            if self.namespaces
            else "NO network or filesystem isolation (unshare -rnm is not available here)"
        )
        lim = self.limits
        return (
            f"sandbox: training code replayed in a separate process; {confinement}; limits: "
            f"{lim.memory_bytes >> 30} GiB address space, {lim.cpu_seconds} s CPU, {lim.wall_seconds} s wall, "
            f"{lim.file_bytes >> 20} MiB per written file"
        )


# Run by ``sh`` as root of a new user+net+mount namespace: keep the scratch directory ($1) writable,
# make every other mount read-only, then drop that root by entering a nested user and mount namespace
# without a uid mapping. There the code has no capabilities, so it cannot remount anything writable,
# and the read-only flags are locked (they were set by a more privileged namespace).
# With "$2" = 1 the namespace's own loopback is brought up first (W local ranks talk over it; it
# reaches nothing outside the namespace).
_CONFINE = """
scratch="$1"; loopback="$2"; shift 2
if [ "$loopback" = 1 ]; then ip link set lo up || exit 96; fi
mount --bind "$scratch" "$scratch" || exit 97
for point in $(awk '{print $2}' /proc/self/mounts | tac); do
  [ "$point" = "$scratch" ] || mount -o remount,bind,ro "$point" 2>/dev/null
done
exec unshare -U -m "$@"
"""


def confined(command: list[str], scratch: str, loopback: bool = False) -> list[str]:
    return [shutil.which("unshare") or "unshare", "-rnm", "sh", "-c", _CONFINE, "sh", scratch, "1" if loopback else "0", *command]


def _namespaces_available() -> bool:
    if not sys.platform.startswith("linux") or not all(shutil.which(t) for t in ("unshare", "mount", "sh", "awk", "tac")):
        return False
    # The probe does what the worker will, then checks from inside that "/" is read-only and scratch is not.
    check = 'touch "$0/w" && ! touch "$1/w" 2>/dev/null && ! mount -o remount,rw,bind / 2>/dev/null'
    try:
        with tempfile.TemporaryDirectory(prefix="trainwitness-probe-") as base:
            scratch, outside = os.path.join(base, "scratch"), os.path.join(base, "outside")
            os.mkdir(scratch)
            os.mkdir(outside)
            command = confined(["sh", "-c", check, scratch, outside], scratch)
            probe = subprocess.run(command, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def choose_isolation(mode: str, limits: SandboxLimits = SandboxLimits(), workers: int = 1) -> Isolation:
    """The strongest isolation ``mode`` allows here, probed at run time. Raises ``MalformedInputError``
    (exit 2) for an unknown mode, or ``required`` where user namespaces are not available."""
    if mode not in SANDBOX_MODES:
        raise MalformedInputError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {mode!r}")
    if mode == "off":  # in-process, unless the replay is split over several workers
        return Isolation(mode, process=workers > 1, namespaces=False, limits=limits)
    namespaces = _namespaces_available()
    if mode == "required" and not namespaces:
        raise MalformedInputError("--sandbox required, but user namespaces (unshare -rnm) are not available here")
    return Isolation(mode, process=True, namespaces=namespaces, limits=limits)


def apply_limits(limits: SandboxLimits) -> None:
    """In the child, before exec: limits survive exec and bind the worker and everything it starts."""
    for kind, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ):
        _, hard = resource.getrlimit(kind)
        resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard),) * 2)


def _meminfo_bytes(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of a /proc file, in bytes; None where there is none (not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name == field:
                    return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_BUDGET_SLACK = 1 << 30  # address space that threads and allocator arenas reserve without touching it


@contextlib.contextmanager
def address_space_budget() -> Iterator[int | None]:
    """For in-process replay: cap this process's address space at what it maps now plus the memory
    this machine has available, while the upstream's code runs; yields the cap in bytes (None where
    it cannot be set). An allocation beyond it (a signed model size no machine here can hold) fails
    at once as a ``RuntimeError``/``MemoryError``, before anything is written to it, instead of the
    kernel's overcommit letting it through to the out-of-memory killer. Restored afterwards.
    """
    available = _meminfo_bytes("/proc/meminfo", "MemAvailable")
    mapped = _meminfo_bytes("/proc/self/status", "VmSize")
    if available is None or mapped is None:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    budget = mapped + available + _BUDGET_SLACK
    for limit in (soft, hard):
        if limit != resource.RLIM_INFINITY:
            budget = min(budget, limit)
    resource.setrlimit(resource.RLIMIT_AS, (budget, hard))
    try:
        yield budget
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
