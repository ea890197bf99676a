"""Replaying untrusted training code in separate, confined processes.

Steps (6)-(8) of ``verify_run`` import and run the upstream's training code on the auditor's machine.
With the sandbox, the parent process checks signature, statement, code identity, commitments and
final weights itself, draws the segments to replay, and never imports that code; worker processes
(``--workers W``, default 1) run at once, each given a share of the drawn segments, and replay only
that share through the same path as in-process replay (``verify.replay_drawn``: proven-data reads,
exact-mode hints, bounded mode). The pipes carry JSON only: a request on each worker's stdin, its
report on a private copy of its stdout (the code's own prints go to stderr). No pickle crosses them.

The request carries the facts the parent verified (the signed statement's payload, byte for byte),
so a worker starts at step (6) and checks no signature and hashes no weights file again. Nothing a
worker answers can turn a failure into a pass: the parent decides the verdict, from its own checks
and every worker's answer, and an answer that is missing, malformed, or does not account for every
segment of its share (with every check of steps (6)-(8) passed) fails it. With ``--sandbox off`` and
one worker, replay runs in-process (the original behaviour); with several, the workers are separate
processes under the same protocol, without confinement or resource limits.

Isolation, strongest available first, each checked at run time (nothing needs root):

* ``unshare -rnm`` (user, network and mount namespaces): no network (only a down loopback), and every
  mount re-mounted read-only except a fresh scratch directory, which is the worker's cwd and TMPDIR;
  the code itself then runs in a nested user namespace without capabilities, unable to undo that;
* resource limits (``setrlimit``): address space, CPU seconds, size of any file written, open files;
* a wall-clock timeout, after which the worker's whole process group is killed.

``--sandbox auto`` uses what is available and says what was in force; ``required`` refuses to run the
code without network and filesystem isolation; ``off`` gives up both (see above).
The sandbox protects the machine, not the verdict: code that is malicious can still make its own
replay lie (see SECURITY.md). The code that runs is the attested code, checked by digest first.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainwitness.commit.canonical import parse_json
from trainwitness.errors import CheckName, InputError, MalformedInputError, VerificationError
from trainwitness.verifier.bounded import SegmentDistance
from trainwitness.verifier.replay import SegmentResult
from trainwitness.verifier.report import Check, Report

if TYPE_CHECKING:
    from trainwitness.verifier.verify import VerifyOptions

__all__ = [
    "SANDBOX_MODES",
    "WORKER_CHECKS",
    "SandboxLimits",
    "Isolation",
    "SandboxError",
    "choose_isolation",
    "address_space_budget",
    "split_shares",
    "worker_threads",
    "worker_request",
    "replay_in_workers",
    "merge_worker_report",
    "merge_worker_reports",
]

SANDBOX_MODES = ("auto", "off", "required")
# The checks of steps (6)-(8), in order: a worker that found nothing wrong must have passed every one.
WORKER_CHECKS = (CheckName.MANIFEST, CheckName.BATCHES, CheckName.INITIAL_STATE, CheckName.DATA, CheckName.REPLAY)
_SHARE_CHECKS = (CheckName.DATA, CheckName.REPLAY)  # their details describe one worker's share, so each worker's is kept


class SandboxError(VerificationError):
    """The training code could not be replayed inside the sandbox (it broke a confinement or a limit)."""

    check: CheckName = CheckName.SANDBOX


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 32 * 1024**3
    cpu_seconds: int = 3600
    wall_seconds: int = 3600
    file_bytes: int = 4 * 1024**3
    open_files: int = 1024


@dataclass(frozen=True)
class Isolation:
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


def _confined(command: list[str], scratch: str, loopback: bool = False) -> list[str]:
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
            command = _confined(["sh", "-c", check, scratch, outside], scratch)
            probe = subprocess.run(command, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def choose_isolation(mode: str, limits: SandboxLimits = SandboxLimits(), workers: int = 1) -> Isolation:
    if mode not in SANDBOX_MODES:
        raise MalformedInputError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {mode!r}")
    if mode == "off":  # in-process, unless the replay is split over several workers
        return Isolation(mode, process=workers > 1, namespaces=False, limits=limits)
    namespaces = _namespaces_available()
    if mode == "required" and not namespaces:
        raise MalformedInputError("--sandbox required, but user namespaces (unshare -rnm) are not available here")
    return Isolation(mode, process=True, namespaces=namespaces, limits=limits)


def _apply_limits(limits: SandboxLimits) -> None:
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


def split_shares(drawn: Sequence[int], workers: int) -> list[list[int]]:
    """The drawn segments in ``workers`` contiguous shares, in order, as equal as can be; no share is empty."""
    if workers < 1:
        raise ValueError("at least one worker")
    count = min(workers, len(drawn))
    size, extra = divmod(len(drawn), count)
    shares, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        shares.append([int(i) for i in drawn[start:end]])
        start = end
    return shares


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_threads(recorded: int, exact: bool, chosen: int | None, workers: int) -> int | None:
    """Torch threads for each of ``workers`` workers running at once; None: the recorded count.

    The auditor's ``--threads`` wins, and one worker keeps what in-process replay uses. Several
    workers replaying an exact-mode run share the cores (exact mode replays bitwise on any thread
    count); without exact mode each keeps the recorded count, which bitwise replay needs, even where
    that oversubscribes the cores.
    """
    if chosen is not None or workers == 1 or not exact:
        return chosen
    return max(1, _cpus() // workers)


def worker_request(
    payload: bytes, store: Path, options: VerifyOptions, share: Sequence[int], threads: int | None,
    start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One worker's request: the verified statement, absolute paths (it runs in its scratch directory), its share.

    The licence policy, the weights and the public key were dealt with by the parent: not sent.
    ``start`` (``verify.StartFiles.to_json``): the parent's and the frozen inputs' files, which the
    worker checks against the statement's digests before the start is formed from them.
    """
    return {
        "statement": payload.decode("utf-8"),  # the payload whose signature the parent verified, byte for byte
        "store": os.path.abspath(store),
        "data": {name: os.path.abspath(path) for name, path in options.data.items()},
        "code": None if options.code is None else os.path.abspath(options.code),
        "threads": threads,
        "bounded": options.bounded,
        "device": options.device,
        "segments": [int(i) for i in share],
        "ranks": options.ranks,  # a data-parallel run: how its ranks replay (decided by the parent)
        "start": start if start is not None else {"parent_weights": None, "parent_store": None, "inputs": {}},
    }


# Run by the worker's interpreter; a module attribute so that a test can stand in a misbehaving worker.
_WORKER_CODE = "from trainwitness.verifier.sandbox import _worker; raise SystemExit(_worker())"


def _start(isolation: Isolation, scratch: str, code: str | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", _WORKER_CODE if code is None else code]
    if isolation.namespaces:
        command = _confined(command, scratch, isolation.loopback)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p),  # entry points resolve as here
        "TMPDIR": scratch,
        "HOME": scratch,
    }
    limits = isolation.limits
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch, env=env,
        start_new_session=True,  # its own process group, so a timeout kills every descendant
        preexec_fn=None if isolation.mode == "off" else lambda: _apply_limits(limits),  # noqa: PLW1509 - see replay_in_workers
    )


def _kill(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


MAX_ANSWER_BYTES = 64 * 1024**2  # a worker's JSON report; far more than any real one
_STDERR_TAIL_BYTES = 64 * 1024  # what is kept of the training code's own output, for the failure message
_PIPE_GRACE_SECONDS = 5.0  # how long the pipes may outlive the worker


def _drain(stream: IO[bytes], keep: bytearray, limit: int, on_overflow: Callable[[], None] | None) -> None:
    """Read a pipe to its end keeping at most ``limit`` bytes: the last ones, or (with ``on_overflow``,
    called when there are more) the first ones."""
    while piece := os.read(stream.fileno(), 1 << 16):
        keep += piece
        if len(keep) > limit:
            if on_overflow is not None:
                on_overflow()
                return
            del keep[: len(keep) - limit]


def _send(stdin: IO[bytes], request: bytes) -> None:
    with contextlib.suppress(OSError):  # a worker that exits without reading its request
        stdin.write(request)
        stdin.close()


def _exchange(child: subprocess.Popen[bytes], request: bytes, wall: float) -> tuple[bytes, bytes, str | None]:
    """(stdout, stderr tail, why it failed) of a worker, holding a bounded amount of what it writes.

    ``communicate`` would keep everything a hostile worker prints, and could wait forever on a pipe a
    descendant that left the process group keeps open: the readers here are daemons, given up on
    shortly after the worker ends.
    """
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    if stdin is None or stdout is None or stderr is None:  # _start always opens all three
        return b"", b"", "the replay worker was started without its pipes"
    out, err, overflow = bytearray(), bytearray(), threading.Event()

    def answer_too_long() -> None:
        overflow.set()
        _kill(child)  # it would block writing the rest, and its other pipe would never end

    readers = [
        threading.Thread(target=_drain, args=(stdout, out, MAX_ANSWER_BYTES, answer_too_long), daemon=True),
        threading.Thread(target=_drain, args=(stderr, err, _STDERR_TAIL_BYTES, None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    # The request is written from a thread too: a worker that never reads it must not block the parent.
    threading.Thread(target=_send, args=(stdin, request), daemon=True).start()
    why = None
    try:
        child.wait(timeout=wall)
    except subprocess.TimeoutExpired:
        _kill(child)
        child.wait()
        why = f"the replay ran past the {wall} s wall-clock limit and was killed"
    grace = time.monotonic() + _PIPE_GRACE_SECONDS  # the pipes end with the worker, unless something it started holds them
    for reader in readers:
        reader.join(max(0.0, grace - time.monotonic()))
    if overflow.is_set():
        why = f"the replay worker wrote more than {MAX_ANSWER_BYTES} bytes of answer and was killed"
    elif why is None and any(reader.is_alive() for reader in readers):
        why = "the replay worker exited, but a process it started outside its group kept its output open"
    return bytes(out), bytes(err), why


def _answer(isolation: Isolation, child: subprocess.Popen[bytes], request: dict[str, Any]) -> dict[str, Any] | SandboxError:
    """The worker's JSON answer, or the reason there is none (returned: one worker's failure stops no other)."""
    out, err, why = _exchange(child, json.dumps(request).encode("utf-8"), isolation.limits.wall_seconds)
    if why is not None:
        return SandboxError(why)
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if child.returncode != 0:
        how = f"signal {-child.returncode}" if child.returncode < 0 else f"status {child.returncode}"
        return SandboxError(f"the replay worker died ({how}; a limit, or the code crashed): {tail[0][:300]}")
    try:
        result = parse_json(out, "answer", MAX_ANSWER_BYTES)  # the one strict JSON reader: untrusted bytes
    except MalformedInputError as e:
        return SandboxError(f"the replay worker's output is not JSON ({e}): {tail[0][:300]}")
    if not isinstance(result, dict):
        return SandboxError("the replay worker's output is not a JSON object")
    return result


def replay_in_workers(
    isolation: Isolation, requests: Sequence[dict[str, Any]],
    finished: Callable[[int, dict[str, Any] | SandboxError], None] | None = None,
) -> list[dict[str, Any] | SandboxError]:
    """Run one worker per request, all at once; each outcome is its JSON answer or why it gave none.

    ``finished(k, outcome)`` is called as worker k is done. Every worker is started before any thread: a
    ``preexec_fn`` (the limits) is not safe to run in a child forked while other threads run.
    """
    outcomes: list[dict[str, Any] | SandboxError] = [SandboxError("the replay worker was not run")] * len(requests)
    with contextlib.ExitStack() as scratches:
        children: list[subprocess.Popen[bytes]] = []
        try:
            for _ in requests:
                children.append(_start(isolation, scratches.enter_context(tempfile.TemporaryDirectory(prefix="trainwitness-sandbox-"))))
            with ThreadPoolExecutor(len(children)) as pool:
                running = {pool.submit(_answer, isolation, child, request): k for k, (child, request) in enumerate(zip(children, requests, strict=True))}
                for future in as_completed(running):
                    outcomes[running[future]] = future.result()
                    if finished is not None:
                        finished(running[future], outcomes[running[future]])
        except BaseException:  # e.g. Ctrl-C: no worker outlives the verifier
            for child in children:
                _kill(child)
            raise
    return outcomes


def merge_worker_reports(report: Report, shares: Sequence[Sequence[int]], outcomes: Sequence[dict[str, Any] | SandboxError]) -> None:
    """Fold every worker's answer into the parent's report: a failure in any of them is a failure here.

    With several workers a failure names the worker and its share; a passed check is listed once,
    with each worker's detail where they differ or describe its share.
    """
    many = len(shares) > 1
    parts: list[tuple[str, Report]] = []
    for k, (share, outcome) in enumerate(zip(shares, outcomes, strict=True)):
        who = f"replay worker {k + 1} of {len(shares)} (segments {_span(share)})" if many else ""
        part = Report(attestation=report.attestation)
        try:
            if isinstance(outcome, SandboxError):
                raise outcome
            merge_worker_report(part, outcome, share)
        except SandboxError as e:
            part.failed(e.check, str(e))
        parts.append((who, part))
    names = list(dict.fromkeys(c.name for _, part in parts for c in part.checks))
    for name in names:
        for who, part in parts:
            report.checks.extend(
                Check(name, False, f"{who}: {c.detail}" if who else c.detail) for c in part.checks if c.name == name and not c.passed
            )
        passes = [(who, c.detail) for who, part in parts for c in part.checks if c.name == name and c.passed]
        if passes:
            details = {detail for _, detail in passes}
            shared = len(details) == 1 and (not many or name not in _SHARE_CHECKS)
            report.passed(name, passes[0][1] if shared else "; ".join(f"{who}: {detail}" for who, detail in passes))
    report.segments = sorted((s for _, part in parts for s in part.segments), key=lambda s: s.index)
    report.checkpoint_bytes_read = sum(part.checkpoint_bytes_read for _, part in parts)
    report.data_bytes_read = sum(part.data_bytes_read for _, part in parts)
    report.data_samples_read = sum(part.data_samples_read for _, part in parts)
    report.data_total_bytes = max(part.data_total_bytes for _, part in parts)
    for _, part in parts:
        report.notes.extend(n for n in part.notes if n not in report.notes)


def _span(share: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in share[:6])
    return shown + (f" and {len(share) - 6} more" if len(share) > 6 else "")


def merge_worker_report(report: Report, answer: dict[str, Any], share: Sequence[int]) -> None:
    """Read one worker's answer for its ``share`` into ``report`` (a fresh one); its failures become ours.

    The worker ran untrusted code, which could have written anything to the result: a malformed
    answer, or one that does not account for its share, is a failed check, never a traceback.
    """
    try:
        _merge(report, answer)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise SandboxError(f"the replay worker's answer is malformed ({type(e).__name__}: {e})") from e
    replayed = [s.index for s in report.segments]
    if len(set(replayed)) != len(replayed) or not set(replayed) <= set(share):
        raise SandboxError(f"the replay worker answered for segments {_span(replayed)}, its share is {_span(list(share))}")
    if all(c.passed for c in report.checks):  # it found nothing wrong: then it must have done everything
        passed = {c.name for c in report.checks}
        missing = [name for name in WORKER_CHECKS if name not in passed]
        if missing:
            raise SandboxError(f"the replay worker's answer lacks the checks {', '.join(missing)}")
        unreplayed = [i for i in share if i not in set(replayed)]
        if unreplayed:
            raise SandboxError(f"the replay worker's answer lacks segments {_span(unreplayed)} of its share")


def _merge(report: Report, answer: dict[str, Any]) -> None:
    if "input_error" in answer:
        raise MalformedInputError(f"in the sandboxed replay: {answer['input_error']}")
    if "code_error" in answer:
        raise SandboxError(f"the training code failed inside the sandbox: {answer['code_error']}")
    worker = answer.get("report")
    if not isinstance(worker, dict):
        raise SandboxError("the replay worker returned no report")
    for c in worker.get("checks", []):
        check = Check(CheckName(str(c["name"])), bool(c["passed"]), str(c["detail"]))
        if not check.passed or check.name in WORKER_CHECKS:  # a pass counts only for a check the worker was asked to do
            report.checks.append(check)
    segments = worker.get("segments", {})
    report.segments = [
        SegmentResult(
            index=int(s["index"]), first_step=int(s["steps"][0]), last_step=int(s["steps"][1]), seconds=float(s["seconds"]),
            distance=None if "distance" not in s else SegmentDistance(
                float(s["distance"]["overall"]), str(s["distance"]["worst_tensor"]), float(s["distance"]["worst"])
            ),
        )
        for s in segments.get("replayed", [])
    ]
    report.checkpoint_bytes_read = int(worker.get("checkpoint_bytes_read", 0))
    data = worker.get("data", {})
    report.data_bytes_read = int(data.get("bytes_read", 0))
    report.data_samples_read = int(data.get("samples_read", 0))
    report.data_total_bytes = int(data.get("total_bytes", 0))
    report.notes.extend(str(n) for n in worker.get("notes", []))


# -- the worker ---------------------------------------------------------------------------------

def _worker() -> int:
    from trainwitness.commit.statement import Statement
    from trainwitness.verifier.evidence import Evidence
    from trainwitness.verifier.verify import StartFiles, VerifyOptions, _import_from, replay_drawn

    result_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the training code prints goes to stderr, never into the result
    report = Report(attestation="")
    try:
        request = json.loads(sys.stdin.read())
        options = VerifyOptions(
            segments=None, sandbox="off", data={name: Path(path) for name, path in request["data"].items()},
            code=None if request["code"] is None else Path(request["code"]), threads=request["threads"], bounded=request["bounded"],
            device=str(request["device"]), ranks=request["ranks"],
        )
        # The statement the parent verified (signature, invariants, code identity, weights): parsed, not re-checked.
        claim = Statement.from_payload(request["statement"].encode("utf-8")).claim
        try:
            if options.code is not None:
                _import_from(options.code, claim.entry_point)
            evidence = Evidence.open(Path(request["store"]), claim)  # the trees the inclusion proofs need
            replay_drawn(
                claim, evidence, options, [int(i) for i in request["segments"]], report, payload=request["statement"].encode("utf-8"),
                start=StartFiles.from_json(request["start"]),
            )
        except VerificationError as e:
            report.failed(e.check, str(e))
        answer: dict[str, Any] = {"report": report.to_json()}
    except InputError as e:
        answer = {"input_error": str(e)}
    except Exception as e:  # noqa: BLE001 - the training code's own failure, e.g. a refused socket
        answer = {"code_error": f"{type(e).__name__}: {e}"}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(answer))
    return 0
